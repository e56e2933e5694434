"""The chest CT phantom: body wall, lungs with branching pulmonary vessels, mediastinum, spine and
optional solid nodules placed inside the lung parenchyma clear of the pleura and the vessels."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from samples.phantoms.geometry import (
    Ellipsoid,
    Grid,
    Segment,
    ellipsoid_fraction,
    inside,
    make_grid,
    segment_distance,
    sphere_points,
)
from samples.phantoms.painting import (
    AIR_HU,
    ellipsoid_coverage,
    noise_slices,
    paint,
    paint_ellipsoid,
    paint_segment,
    to_int16,
)
from samples.phantoms.phantom import LesionAccumulator, Phantom

__all__ = ["CHEST_FOV_MM", "CHEST_Z_MM", "chest_ct"]

CHEST_FOV_MM = 350.0
CHEST_Z_MM = 160.0
VESSEL_CLEARANCE_MM = 6.0


@dataclass(frozen=True)
class _Chest:
    body: Ellipsoid
    muscle: Ellipsoid
    inner: Ellipsoid
    lungs: tuple[Ellipsoid, Ellipsoid]  # nominal size, scaled per slice by lung_scale
    heart: Ellipsoid
    mediastinum: Ellipsoid
    aorta: Ellipsoid
    vertebra: Ellipsoid
    vertebra_core: Ellipsoid
    spinous: Ellipsoid

    @staticmethod
    def lung_scale(z: float) -> float:
        """Lungs widen from the apex (top) to the lower chest, then the diaphragm."""
        t = z / CHEST_Z_MM
        return 0.55 + 0.45 * math.sin(math.pi * (0.15 + 0.85 * t))

    def lungs_at(self, z: float) -> tuple[Ellipsoid, Ellipsoid]:
        s = self.lung_scale(z)
        a, b = self.lungs
        return (
            Ellipsoid(a.cz, a.cy, a.cx, a.az, a.ay * s, a.ax * s),
            Ellipsoid(b.cz, b.cy, b.cx, b.az, b.ay * s, b.ax * s),
        )

    def heart_at(self, z: float) -> Ellipsoid | None:
        return self.heart if z < 0.55 * CHEST_Z_MM else None

    def in_lung(self, p: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        """Which points (n, 3) (z, y, x mm) lie in lung parenchyma (not mediastinum/spine)."""
        out = np.zeros(len(p), dtype=bool)
        for i, point in enumerate(p):
            z = float(point[0])
            if not 0.0 <= z <= CHEST_Z_MM:
                continue
            one = point[None, :]
            lung = any(bool(inside(e, one)[0]) for e in self.lungs_at(z))
            heart = self.heart_at(z)
            blocked = (
                bool(inside(self.mediastinum, one)[0])
                or bool(inside(self.vertebra.grown(3.0), one)[0])
                or bool(inside(self.aorta.grown(2.0), one)[0])
            )
            if heart is not None:
                blocked = blocked or bool(inside(heart, one)[0])
            out[i] = lung and not blocked
        return out


def chest_ct(  # noqa: PLR0915 (one painter per tissue, kept in one readable place)
    seed: int, *, slices: int = 32, size: int = 256, nodules: int = 0
) -> Phantom:
    """A chest CT: body wall, lungs with branching vessels, mediastinum, spine, optional nodules.

    Nodules are solid ellipsoids (4-20 mm, -50..+60 HU) placed entirely inside the lung
    parenchyma, at least 4 mm from the pleura, 6 mm from any vessel (so thick slices keep them
    apart) and 3 mm from any other nodule.
    """
    rng = np.random.default_rng(seed)
    grid = make_grid(slices, size, CHEST_FOV_MM, CHEST_Z_MM)
    spacing = (grid.dz, grid.px, grid.px)
    inf = math.inf

    bx = rng.uniform(150.0, 165.0)
    by = rng.uniform(105.0, 120.0)
    fat = rng.uniform(8.0, 16.0)
    wall = rng.uniform(8.0, 12.0)
    lung_ay = by - fat - wall - rng.uniform(12.0, 18.0)
    lung_ax = rng.uniform(52.0, 60.0)
    lung_cx = rng.uniform(66.0, 74.0)
    chest = _Chest(
        body=Ellipsoid(0.0, 0.0, 0.0, inf, by, bx),
        muscle=Ellipsoid(0.0, 0.0, 0.0, inf, by - fat, bx - fat),
        inner=Ellipsoid(0.0, 0.0, 0.0, inf, by - fat - wall, bx - fat - wall),
        lungs=(
            Ellipsoid(0.0, -4.0, -lung_cx, inf, lung_ay, lung_ax),
            Ellipsoid(0.0, -4.0, lung_cx, inf, lung_ay, lung_ax),
        ),
        heart=Ellipsoid(CHEST_Z_MM * 0.22, -22.0, 18.0, CHEST_Z_MM * 0.35, 50.0, 52.0),
        mediastinum=Ellipsoid(0.0, 0.0, 0.0, inf, 60.0, 22.0),
        aorta=Ellipsoid(0.0, 52.0, 20.0, inf, 12.0, 12.0),
        vertebra=Ellipsoid(0.0, 72.0, 0.0, inf, 18.0, 20.0),
        vertebra_core=Ellipsoid(0.0, 72.0, 0.0, inf, 15.5, 17.5),
        spinous=Ellipsoid(0.0, 100.0, 0.0, inf, 12.0, 7.0),
    )
    vessels = _vessel_tree(rng, chest)
    placed = _place_nodules(rng, chest, vessels, nodules, grid)
    fat_hu = rng.uniform(-110.0, -80.0)
    muscle_hu = rng.uniform(40.0, 55.0)
    soft_hu = rng.uniform(35.0, 45.0)
    lung_hu = rng.uniform(-870.0, -830.0)
    noise_sd = rng.uniform(10.0, 14.0)

    volume = np.empty((grid.slices, grid.size, grid.size), dtype=np.int16)
    accs = [LesionAccumulator() for _ in placed]
    coords = grid.coords
    gradient = (coords[:, None] * np.float32(0.25)).astype(np.float32)  # dependent lung denser
    h = (grid.dz, grid.px, grid.px)
    for k, z, noise in noise_slices(rng, grid):
        img = np.full((grid.size, grid.size), AIR_HU, dtype=np.float32)
        paint_ellipsoid(img, grid, z, chest.body, fat_hu)
        paint_ellipsoid(img, grid, z, chest.muscle, muscle_hu)
        paint_ellipsoid(img, grid, z, chest.inner, soft_hu)
        lung_frac = np.zeros_like(img)
        for e in chest.lungs_at(z):
            np.maximum(lung_frac, ellipsoid_coverage(grid, z, e), out=lung_frac)
        blockers = [chest.mediastinum, chest.aorta, chest.vertebra]
        heart = chest.heart_at(z)
        if heart is not None:
            blockers.append(heart)
        for e in blockers:
            lung_frac *= 1.0 - ellipsoid_coverage(grid, z, e)
        lung_value = np.float32(lung_hu) + gradient
        paint(img, lung_frac, lung_value)
        paint_ellipsoid(img, grid, z, chest.aorta, soft_hu)
        paint_ellipsoid(img, grid, z, chest.vertebra, 900.0)
        paint_ellipsoid(img, grid, z, chest.vertebra_core, 280.0)
        paint_ellipsoid(img, grid, z, chest.spinous, 650.0)
        for s in vessels:
            paint_segment(img, grid, z, s, value=soft_hu, clip=lung_frac)
        for (e, hu), acc in zip(placed, accs, strict=True):
            if abs(z - e.cz) > e.az + grid.dz:
                continue
            r0, r1 = grid.row_range(e.cy - e.ay, e.cy + e.ay)
            c0, c1 = grid.row_range(e.cx - e.ax, e.cx + e.ax)
            dy = (coords[r0:r1] - np.float32(e.cy))[:, None]
            dx = (coords[c0:c1] - np.float32(e.cx))[None, :]
            frac = ellipsoid_fraction(float(z - e.cz), dy, dx, e, h)
            paint(img[r0:r1, c0:c1], frac, hu)
            acc.add(k, r0, c0, frac)
        img += noise * np.float32(noise_sd)
        volume[k] = to_int16(img)

    lesions = tuple(acc.lesion("nodule", spacing) for acc in accs)
    return Phantom("CHEST", volume, spacing, lesions)


def _vessel_tree(rng: np.random.Generator, chest: _Chest) -> tuple[Segment, ...]:
    """Branching pulmonary vessels from each hilum outwards (3 generations)."""
    segments: list[Segment] = []
    for side in (-1.0, 1.0):
        lung = chest.lungs[0 if side < 0 else 1]
        hilum = np.array(
            [
                CHEST_Z_MM * rng.uniform(0.42, 0.52),
                lung.cy + rng.uniform(-5.0, 10.0),
                lung.cx - side * lung.ax * 0.55,
            ],
            dtype=np.float64,
        )
        n_roots = int(rng.integers(5, 8))
        for i in range(n_roots):
            angle = (i + rng.uniform(0.2, 0.8)) / n_roots * math.pi - math.pi / 2
            direction = np.array(
                [rng.uniform(-0.9, 0.9), math.sin(angle), side * abs(math.cos(angle)) + 0.3 * side]
            )
            _grow(
                rng,
                segments,
                hilum,
                direction,
                length=rng.uniform(30.0, 45.0),
                radius=rng.uniform(2.8, 3.6),
                depth=3,
            )
    return tuple(segments)


def _grow(
    rng: np.random.Generator,
    out: list[Segment],
    start: npt.NDArray[np.float64],
    direction: npt.NDArray[np.float64],
    *,
    length: float,
    radius: float,
    depth: int,
) -> None:
    d = direction / np.linalg.norm(direction)
    end = start + d * length
    out.append(Segment(a=tuple(start.tolist()), b=tuple(end.tolist()), r=radius))
    if depth <= 1:
        return
    for _ in range(2):
        child = d + rng.normal(0.0, 0.45, size=3)
        _grow(
            rng,
            out,
            end,
            child,
            length=length * rng.uniform(0.7, 0.9),
            radius=max(0.8, radius * rng.uniform(0.62, 0.75)),
            depth=depth - 1,
        )


def _place_nodules(
    rng: np.random.Generator,
    chest: _Chest,
    vessels: Sequence[Segment],
    count: int,
    grid: Grid,
) -> list[tuple[Ellipsoid, float]]:
    placed: list[tuple[Ellipsoid, float]] = []
    starts = np.array([s.a for s in vessels]) if vessels else np.zeros((0, 3))
    for _ in range(count):
        for _attempt in range(5000):
            diameter = rng.uniform(4.0, 20.0)
            r = diameter / 2
            center = np.array(
                [
                    rng.uniform(0.1, 0.9) * CHEST_Z_MM,
                    rng.uniform(-110.0, 110.0),
                    rng.uniform(-140.0, 140.0),
                ]
            )
            if not chest.in_lung(sphere_points(center, r + 4.0)).all():
                continue
            if center[0] - r < grid.dz or center[0] + r > CHEST_Z_MM - grid.dz:
                continue
            if len(starts) and any(
                float(segment_distance(center[None, :], s)[0])
                < 1.15 * r + s.r + VESSEL_CLEARANCE_MM
                for s in vessels
            ):
                continue
            if any(
                float(np.linalg.norm(center - np.array([e.cz, e.cy, e.cx])))
                < r + max(e.az, e.ay, e.ax) + 3.0
                for e, _ in placed
            ):
                continue
            stretch = rng.uniform(0.85, 1.15, size=3)
            stretch /= stretch.prod() ** (1.0 / 3.0)  # keep the volume of the nominal sphere
            e = Ellipsoid(
                float(center[0]),
                float(center[1]),
                float(center[2]),
                r * stretch[0],
                r * stretch[1],
                r * stretch[2],
            )
            placed.append((e, float(rng.uniform(-50.0, 60.0))))
            break
        else:
            raise RuntimeError("could not place a nodule inside the lungs")
    return placed
