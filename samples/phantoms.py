"""Synthetic CT phantoms (head and chest) with known lesions, for testing the reference detectors.

Everything is deterministic from the seed (one ``numpy.random.Generator`` per phantom) and
pure numpy, so the module imports without scipy.  Volumes are int16 Hounsfield units of shape
``(slices, rows, columns)`` with slice 0 the most inferior one.

Geometry is analytic (ellipsoids, elliptic cylinders, tubes) and painted slice by slice with a
partial-volume edge (the fraction of each voxel covered by a shape rises linearly over one voxel
extent along the surface normal), so thick slices blur small structures the way a scanner does.

Coordinates in millimetres: ``z`` from the bottom of the volume (slice ``k`` sits at
``(k + 0.5) * slice_spacing``), ``y`` rows (anterior at row 0), ``x`` columns, both centred.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = ["Lesion", "Phantom", "chest_ct", "head_ct"]

FloatArray = npt.NDArray[np.float32]

HEAD_FOV_MM = 220.0
CHEST_FOV_MM = 350.0
HEAD_Z_MM = 160.0  # craniocaudal coverage: 32 slices of 5 mm
CHEST_Z_MM = 160.0
AIR_HU = -1000.0
VESSEL_CLEARANCE_MM = 6.0


@dataclass(frozen=True)
class Lesion:
    """Ground truth of one synthetic lesion."""

    kind: Literal["bleed", "nodule"]
    center_voxel: tuple[float, float, float]  # (z, y, x), voxel units (centroid)
    diameter_mm: float  # equivalent-sphere diameter
    volume_ml: float


@dataclass(frozen=True)
class Phantom:
    """A synthetic CT volume and its ground truth."""

    body_part: Literal["HEAD", "CHEST"]
    volume_hu: npt.NDArray[np.int16]  # (slices, rows, columns), slice 0 most inferior
    spacing_mm: tuple[float, float, float]  # (slice spacing, row spacing, column spacing)
    lesions: tuple[Lesion, ...]


# --------------------------------------------------------------------------------------------
# geometry helpers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ellipsoid:
    """Axis-aligned ellipsoid in mm; an infinite ``az`` makes it an elliptic cylinder."""

    cz: float
    cy: float
    cx: float
    az: float
    ay: float
    ax: float

    def z_range(self) -> tuple[float, float]:
        return self.cz - self.az, self.cz + self.az

    def grown(self, margin: float) -> _Ellipsoid:
        return _Ellipsoid(
            self.cz, self.cy, self.cx, self.az + margin, self.ay + margin, self.ax + margin
        )


@dataclass(frozen=True)
class _Segment:
    """A vessel: a tube of radius ``r`` from ``a`` to ``b`` (mm, (z, y, x))."""

    a: tuple[float, float, float]
    b: tuple[float, float, float]
    r: float


@dataclass(frozen=True)
class _Grid:
    slices: int
    size: int
    dz: float
    px: float

    @property
    def coords(self) -> FloatArray:
        """Row/column centre positions in mm (centred on the image)."""
        return ((np.arange(self.size, dtype=np.float32) - (self.size - 1) / 2) * self.px).astype(
            np.float32
        )

    def z_of(self, k: int) -> float:
        return (k + 0.5) * self.dz

    def row_range(self, lo_mm: float, hi_mm: float) -> tuple[int, int]:
        """Index range [i0, i1) of rows (or columns) whose centre can lie in [lo, hi] ± 1 px."""
        half = (self.size - 1) / 2
        i0 = max(0, math.floor(lo_mm / self.px + half) - 1)
        i1 = min(self.size, math.ceil(hi_mm / self.px + half) + 2)
        return i0, max(i0, i1)


def _ellipsoid_fraction(
    dz: float,
    dy: FloatArray,
    dx: FloatArray,
    e: _Ellipsoid,
    h: tuple[float, float, float],
) -> FloatArray:
    """Fraction (0..1) of each voxel inside ellipsoid ``e`` (offsets from its centre in mm).

    The signed distance to the surface is approximated to first order, ``(rho - 1) / |grad rho|``,
    and the edge ramps over the voxel's extent along the normal (``h`` = voxel size (z, y, x)).
    """
    qz = 0.0 if math.isinf(e.az) else dz / e.az
    qy = dy / np.float32(e.ay)
    qx = dx / np.float32(e.ax)
    rho2 = qz * qz + qy * qy + qx * qx
    rho = np.sqrt(rho2)
    gz = qz / np.float32(e.az)
    gy = qy / np.float32(e.ay)
    gx = qx / np.float32(e.ax)
    gn = np.sqrt(gz * gz + gy * gy + gx * gx) + np.float32(1e-12)
    dist = (rho - 1.0) * rho / gn
    extent = np.sqrt((h[0] * gz) ** 2 + (h[1] * gy) ** 2 + (h[2] * gx) ** 2) / gn
    extent = np.maximum(extent, np.float32(min(h)) * 0.5)
    frac = np.clip(0.5 - dist / extent, 0.0, 1.0)
    return np.where(rho < 0.5, np.float32(1.0), frac).astype(np.float32, copy=False)


def _paint(target: FloatArray, frac: FloatArray, value: float | FloatArray) -> None:
    """Composite ``value`` over ``target`` with coverage ``frac`` (in place)."""
    target += frac * (value - target)


def _paint_ellipsoid(
    img: FloatArray, grid: _Grid, z: float, e: _Ellipsoid, value: float
) -> FloatArray | None:
    """Paint one ellipsoid into slice image ``img`` at height ``z``; returns the coverage box."""
    hz = grid.dz
    if not math.isinf(e.az) and abs(z - e.cz) > e.az + hz:
        return None
    r0, r1 = grid.row_range(e.cy - e.ay, e.cy + e.ay)
    c0, c1 = grid.row_range(e.cx - e.ax, e.cx + e.ax)
    if r1 <= r0 or c1 <= c0:
        return None
    coords = grid.coords
    dy = (coords[r0:r1] - np.float32(e.cy))[:, None]
    dx = (coords[c0:c1] - np.float32(e.cx))[None, :]
    frac = _ellipsoid_fraction(float(z - e.cz), dy, dx, e, (hz, grid.px, grid.px))
    _paint(img[r0:r1, c0:c1], frac, value)
    return frac


def _ellipsoid_frac_full(grid: _Grid, z: float, e: _Ellipsoid) -> FloatArray:
    """Coverage of ``e`` over the whole slice at height ``z``."""
    out = np.zeros((grid.size, grid.size), dtype=np.float32)
    if not math.isinf(e.az) and abs(z - e.cz) > e.az + grid.dz:
        return out
    r0, r1 = grid.row_range(e.cy - e.ay, e.cy + e.ay)
    c0, c1 = grid.row_range(e.cx - e.ax, e.cx + e.ax)
    coords = grid.coords
    dy = (coords[r0:r1] - np.float32(e.cy))[:, None]
    dx = (coords[c0:c1] - np.float32(e.cx))[None, :]
    out[r0:r1, c0:c1] = _ellipsoid_fraction(float(z - e.cz), dy, dx, e, (grid.dz, grid.px, grid.px))
    return out


def _inside(e: _Ellipsoid, p: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    """Which points ``p`` (n, 3) (z, y, x mm) are inside ``e``."""
    qz = 0.0 if math.isinf(e.az) else (p[:, 0] - e.cz) / e.az
    q = qz**2 + ((p[:, 1] - e.cy) / e.ay) ** 2 + ((p[:, 2] - e.cx) / e.ax) ** 2
    return np.asarray(q <= 1.0)


def _sphere_points(
    center: Sequence[float] | npt.NDArray[np.float64], radius: float
) -> npt.NDArray[np.float64]:
    """The centre plus 26 points on a sphere around it (cube directions), (27, 3) mm."""
    dirs = np.array(
        [(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)], dtype=np.float64
    )
    norms = np.linalg.norm(dirs, axis=1)
    norms[norms == 0] = 1.0
    out: npt.NDArray[np.float64] = (
        np.asarray(center, dtype=np.float64) + radius * dirs / norms[:, None]
    )
    return out


def _segment_distance(p: npt.NDArray[np.float64], s: _Segment) -> npt.NDArray[np.float64]:
    a = np.asarray(s.a)
    ab = np.asarray(s.b) - a
    t = np.clip(((p - a) @ ab) / max(float(ab @ ab), 1e-9), 0.0, 1.0)
    closest = a + t[:, None] * ab
    return np.asarray(np.linalg.norm(p - closest, axis=1))


def _paint_segment(
    img: FloatArray, grid: _Grid, z: float, s: _Segment, *, value: float, clip: FloatArray
) -> None:
    """Paint a tube into the slice, supersampled in z, only where ``clip`` (coverage) allows."""
    zmin = min(s.a[0], s.b[0]) - s.r - grid.dz
    zmax = max(s.a[0], s.b[0]) + s.r + grid.dz
    if not zmin <= z <= zmax:
        return
    ylo, yhi = min(s.a[1], s.b[1]) - s.r, max(s.a[1], s.b[1]) + s.r
    xlo, xhi = min(s.a[2], s.b[2]) - s.r, max(s.a[2], s.b[2]) + s.r
    r0, r1 = grid.row_range(ylo, yhi)
    c0, c1 = grid.row_range(xlo, xhi)
    if r1 <= r0 or c1 <= c0:
        return
    coords = grid.coords
    py = coords[r0:r1][:, None]
    px_ = coords[c0:c1][None, :]
    a = np.asarray(s.a, dtype=np.float32)
    ab = np.asarray(s.b, dtype=np.float32) - a
    denom = np.float32(max(float(ab @ ab), 1e-9))
    n_sub = max(1, min(5, math.ceil(grid.dz / grid.px)))
    frac = np.zeros((r1 - r0, c1 - c0), dtype=np.float32)
    for j in range(n_sub):
        zz = np.float32(z + ((j + 0.5) / n_sub - 0.5) * grid.dz)
        vz, vy, vx = zz - a[0], py - a[1], px_ - a[2]
        t = np.clip((vz * ab[0] + vy * ab[1] + vx * ab[2]) / denom, 0.0, 1.0)
        ez, ey, ex = vz - t * ab[0], vy - t * ab[1], vx - t * ab[2]
        dist = np.sqrt(ez * ez + ey * ey + ex * ex) - np.float32(s.r)
        frac += np.clip(0.5 - dist / np.float32(grid.px), 0.0, 1.0)
    frac *= np.float32(1.0 / n_sub)
    frac *= clip[r0:r1, c0:c1]
    _paint(img[r0:r1, c0:c1], frac, value)


def _noise_slices(rng: np.random.Generator, grid: _Grid) -> Iterator[tuple[int, float, FloatArray]]:
    """Yields (k, z_mm, noise image of unit variance) per slice, in order (deterministic)."""
    for k in range(grid.slices):
        noise = rng.standard_normal((grid.size, grid.size), dtype=np.float32)
        yield k, grid.z_of(k), noise


def _to_int16(img: FloatArray) -> npt.NDArray[np.int16]:
    return np.clip(np.rint(img), -1024, 3071).astype(np.int16)


class _Accumulator:
    """Accumulates a lesion's coverage to report its true centroid and volume."""

    def __init__(self) -> None:
        self.total = 0.0
        self.z = 0.0
        self.y = 0.0
        self.x = 0.0

    def add(self, k: int, r0: int, c0: int, frac: FloatArray) -> None:
        s = float(frac.sum(dtype=np.float64))
        if s <= 0:
            return
        rows = np.arange(r0, r0 + frac.shape[0], dtype=np.float64)
        cols = np.arange(c0, c0 + frac.shape[1], dtype=np.float64)
        self.total += s
        self.z += k * s
        self.y += float(frac.sum(axis=1, dtype=np.float64) @ rows)
        self.x += float(frac.sum(axis=0, dtype=np.float64) @ cols)

    def lesion(
        self, kind: Literal["bleed", "nodule"], spacing: tuple[float, float, float]
    ) -> Lesion:
        voxel_ml = spacing[0] * spacing[1] * spacing[2] / 1000.0
        volume_ml = self.total * voxel_ml
        diameter = 2.0 * (3.0 * volume_ml * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
        t = max(self.total, 1e-12)
        return Lesion(
            kind=kind,
            center_voxel=(self.z / t, self.y / t, self.x / t),
            diameter_mm=diameter,
            volume_ml=volume_ml,
        )


# --------------------------------------------------------------------------------------------
# head
# --------------------------------------------------------------------------------------------


def _grid(slices: int, size: int, fov_mm: float, z_mm: float) -> _Grid:
    if slices < 4 or size < 32:
        raise ValueError("phantoms need at least 4 slices of 32 x 32")
    return _Grid(slices=slices, size=size, dz=z_mm / slices, px=fov_mm / size)


def head_ct(  # noqa: PLR0915 (one painter per tissue, kept in one readable place)
    seed: int, *, slices: int = 32, size: int = 256, bleed: bool = False
) -> Phantom:
    """A head CT: scalp, skull, CSF, grey/white matter, ventricles, optional hyperdense bleed.

    The bleed is an irregular blob (a main ellipsoid plus two or three lobes) of 55-80 HU and
    2-12 mL, entirely inside the cranial cavity, clear of the ventricles and of the inner table.
    """
    rng = np.random.default_rng(seed)
    grid = _grid(slices, size, HEAD_FOV_MM, HEAD_Z_MM)
    spacing = (grid.dz, grid.px, grid.px)

    # head: a 3D ellipsoid centred below the middle of the volume (slices cut up to the vertex)
    cz = HEAD_Z_MM * rng.uniform(0.36, 0.42)
    ay = rng.uniform(88.0, 96.0)  # anterior-posterior half length
    ax = ay * rng.uniform(0.76, 0.82)  # left-right
    az = rng.uniform(105.0, 112.0)
    cy = rng.uniform(-3.0, 3.0)
    cx = rng.uniform(-2.0, 2.0)

    def shell(inset: float) -> _Ellipsoid:
        return _Ellipsoid(cz, cy, cx, az - inset, ay - inset, ax - inset)

    scalp_hu = rng.uniform(35.0, 55.0)
    scalp_mm = rng.uniform(4.0, 6.0)
    skull_mm = rng.uniform(6.0, 8.0)
    cortical_hu = rng.uniform(1200.0, 1500.0)
    diploe_hu = rng.uniform(700.0, 900.0)
    csf_hu = rng.uniform(5.0, 12.0)
    grey_hu = rng.uniform(34.0, 40.0)
    white_hu = rng.uniform(25.0, 30.0)
    noise_sd = rng.uniform(4.0, 5.5)

    head = shell(0.0)
    skull_out = shell(scalp_mm)
    diploe_out = shell(scalp_mm + 2.0)
    diploe_in = shell(scalp_mm + skull_mm - 2.0)
    cavity = shell(scalp_mm + skull_mm)
    grey = shell(scalp_mm + skull_mm + 2.0)  # 2 mm of subarachnoid CSF
    white = shell(scalp_mm + skull_mm + 6.0)  # 4 mm cortical ribbon

    vent_z = cz + rng.uniform(10.0, 20.0)
    vent_ay = rng.uniform(18.0, 24.0)
    ventricles = tuple(
        _Ellipsoid(
            vent_z,
            cy - rng.uniform(0.0, 6.0),
            cx + side * rng.uniform(7.0, 10.0),
            rng.uniform(20.0, 28.0),
            vent_ay,
            rng.uniform(4.0, 7.0),
        )
        for side in (-1.0, 1.0)
    )
    pineal = _Ellipsoid(cz + rng.uniform(0.0, 6.0), cy + rng.uniform(18.0, 24.0), cx, 2.5, 2.5, 2.5)

    lobes: tuple[_Ellipsoid, ...] = ()
    bleed_hu = 0.0
    if bleed:
        lobes = _place_bleed(rng, cavity, ventricles, grid)
        bleed_hu = rng.uniform(58.0, 78.0)

    volume = np.empty((grid.slices, grid.size, grid.size), dtype=np.int16)
    acc = _Accumulator()
    h = (grid.dz, grid.px, grid.px)
    for k, z, noise in _noise_slices(rng, grid):
        img = np.full((grid.size, grid.size), AIR_HU, dtype=np.float32)
        if _paint_ellipsoid(img, grid, z, head, scalp_hu) is not None:
            _paint_ellipsoid(img, grid, z, skull_out, cortical_hu)
            _paint_ellipsoid(img, grid, z, diploe_out, diploe_hu)
            _paint_ellipsoid(img, grid, z, diploe_in, cortical_hu)
            _paint_ellipsoid(img, grid, z, cavity, csf_hu)
            _paint_ellipsoid(img, grid, z, grey, grey_hu)
            _paint_ellipsoid(img, grid, z, white, white_hu)
            for v in ventricles:
                _paint_ellipsoid(img, grid, z, v, csf_hu)
            _paint_ellipsoid(img, grid, z, pineal, 180.0)
        if lobes:
            _paint_bleed(img, grid, k, z, lobes=lobes, value=bleed_hu, acc=acc, h=h)
        img += noise * np.float32(noise_sd)
        volume[k] = _to_int16(img)

    lesions = (acc.lesion("bleed", spacing),) if bleed else ()
    return Phantom("HEAD", volume, spacing, lesions)


def _place_bleed(
    rng: np.random.Generator,
    cavity: _Ellipsoid,
    ventricles: Sequence[_Ellipsoid],
    grid: _Grid,
) -> tuple[_Ellipsoid, ...]:
    target_ml = rng.uniform(2.0, 12.0)
    r = (3.0 * target_ml * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
    z_lo, z_hi = 0.18 * HEAD_Z_MM, 0.72 * HEAD_Z_MM
    for _ in range(2000):
        main = _Ellipsoid(
            rng.uniform(z_lo, z_hi),
            cavity.cy + rng.uniform(-0.7, 0.7) * cavity.ay,
            cavity.cx + rng.uniform(-0.7, 0.7) * cavity.ax,
            r * rng.uniform(0.8, 1.1),
            r * rng.uniform(0.8, 1.2),
            r * rng.uniform(0.8, 1.2),
        )
        lobes = [main]
        for _ in range(int(rng.integers(2, 4))):
            d = rng.standard_normal(3)
            d /= np.linalg.norm(d)
            off = d * r * rng.uniform(0.5, 0.8)
            lr = r * rng.uniform(0.45, 0.65)
            lobes.append(
                _Ellipsoid(main.cz + off[0], main.cy + off[1], main.cx + off[2], lr, lr, lr)
            )
        if all(_bleed_fits(lobe, cavity, ventricles, grid) for lobe in lobes):
            return tuple(lobes)
    raise RuntimeError("could not place a bleed inside the cranial cavity")


def _bleed_fits(
    lobe: _Ellipsoid, cavity: _Ellipsoid, ventricles: Sequence[_Ellipsoid], grid: _Grid
) -> bool:
    margin = 6.0
    extent = max(lobe.az, lobe.ay, lobe.ax)
    pts = _sphere_points((lobe.cz, lobe.cy, lobe.cx), extent + margin)
    if not _inside(cavity, pts).all():
        return False
    if lobe.cz - extent < 1.5 * grid.dz or lobe.cz + extent > HEAD_Z_MM - 1.5 * grid.dz:
        return False
    near = _sphere_points((lobe.cz, lobe.cy, lobe.cx), extent + 3.0)
    return not any(_inside(v, near).any() for v in ventricles)


def _paint_bleed(
    img: FloatArray,
    grid: _Grid,
    k: int,
    z: float,
    *,
    lobes: Sequence[_Ellipsoid],
    value: float,
    acc: _Accumulator,
    h: tuple[float, float, float],
) -> None:
    lo = min(e.cy - e.ay for e in lobes), min(e.cx - e.ax for e in lobes)
    hi = max(e.cy + e.ay for e in lobes), max(e.cx + e.ax for e in lobes)
    r0, r1 = grid.row_range(lo[0], hi[0])
    c0, c1 = grid.row_range(lo[1], hi[1])
    coords = grid.coords
    frac = np.zeros((r1 - r0, c1 - c0), dtype=np.float32)
    for e in lobes:
        if abs(z - e.cz) > e.az + grid.dz:
            continue
        dy = (coords[r0:r1] - np.float32(e.cy))[:, None]
        dx = (coords[c0:c1] - np.float32(e.cx))[None, :]
        np.maximum(frac, _ellipsoid_fraction(float(z - e.cz), dy, dx, e, h), out=frac)
    if frac.any():
        _paint(img[r0:r1, c0:c1], frac, value)
        acc.add(k, r0, c0, frac)


# --------------------------------------------------------------------------------------------
# chest
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Chest:
    body: _Ellipsoid
    muscle: _Ellipsoid
    inner: _Ellipsoid
    lungs: tuple[_Ellipsoid, _Ellipsoid]  # nominal size, scaled per slice by lung_scale
    heart: _Ellipsoid
    mediastinum: _Ellipsoid
    aorta: _Ellipsoid
    vertebra: _Ellipsoid
    vertebra_core: _Ellipsoid
    spinous: _Ellipsoid

    @staticmethod
    def lung_scale(z: float) -> float:
        """Lungs widen from the apex (top) to the lower chest, then the diaphragm."""
        t = z / CHEST_Z_MM
        return 0.55 + 0.45 * math.sin(math.pi * (0.15 + 0.85 * t))

    def lungs_at(self, z: float) -> tuple[_Ellipsoid, _Ellipsoid]:
        s = self.lung_scale(z)
        a, b = self.lungs
        return (
            _Ellipsoid(a.cz, a.cy, a.cx, a.az, a.ay * s, a.ax * s),
            _Ellipsoid(b.cz, b.cy, b.cx, b.az, b.ay * s, b.ax * s),
        )

    def heart_at(self, z: float) -> _Ellipsoid | None:
        return self.heart if z < 0.55 * CHEST_Z_MM else None

    def in_lung(self, p: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        """Which points (n, 3) (z, y, x mm) lie in lung parenchyma (not mediastinum/spine)."""
        out = np.zeros(len(p), dtype=bool)
        for i, point in enumerate(p):
            z = float(point[0])
            if not 0.0 <= z <= CHEST_Z_MM:
                continue
            one = point[None, :]
            lung = any(bool(_inside(e, one)[0]) for e in self.lungs_at(z))
            heart = self.heart_at(z)
            blocked = (
                bool(_inside(self.mediastinum, one)[0])
                or bool(_inside(self.vertebra.grown(3.0), one)[0])
                or bool(_inside(self.aorta.grown(2.0), one)[0])
            )
            if heart is not None:
                blocked = blocked or bool(_inside(heart, one)[0])
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
    grid = _grid(slices, size, CHEST_FOV_MM, CHEST_Z_MM)
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
        body=_Ellipsoid(0.0, 0.0, 0.0, inf, by, bx),
        muscle=_Ellipsoid(0.0, 0.0, 0.0, inf, by - fat, bx - fat),
        inner=_Ellipsoid(0.0, 0.0, 0.0, inf, by - fat - wall, bx - fat - wall),
        lungs=(
            _Ellipsoid(0.0, -4.0, -lung_cx, inf, lung_ay, lung_ax),
            _Ellipsoid(0.0, -4.0, lung_cx, inf, lung_ay, lung_ax),
        ),
        heart=_Ellipsoid(CHEST_Z_MM * 0.22, -22.0, 18.0, CHEST_Z_MM * 0.35, 50.0, 52.0),
        mediastinum=_Ellipsoid(0.0, 0.0, 0.0, inf, 60.0, 22.0),
        aorta=_Ellipsoid(0.0, 52.0, 20.0, inf, 12.0, 12.0),
        vertebra=_Ellipsoid(0.0, 72.0, 0.0, inf, 18.0, 20.0),
        vertebra_core=_Ellipsoid(0.0, 72.0, 0.0, inf, 15.5, 17.5),
        spinous=_Ellipsoid(0.0, 100.0, 0.0, inf, 12.0, 7.0),
    )
    vessels = _vessel_tree(rng, chest)
    placed = _place_nodules(rng, chest, vessels, nodules, grid)
    fat_hu = rng.uniform(-110.0, -80.0)
    muscle_hu = rng.uniform(40.0, 55.0)
    soft_hu = rng.uniform(35.0, 45.0)
    lung_hu = rng.uniform(-870.0, -830.0)
    noise_sd = rng.uniform(10.0, 14.0)

    volume = np.empty((grid.slices, grid.size, grid.size), dtype=np.int16)
    accs = [_Accumulator() for _ in placed]
    coords = grid.coords
    gradient = (coords[:, None] * np.float32(0.25)).astype(np.float32)  # dependent lung denser
    h = (grid.dz, grid.px, grid.px)
    for k, z, noise in _noise_slices(rng, grid):
        img = np.full((grid.size, grid.size), AIR_HU, dtype=np.float32)
        _paint_ellipsoid(img, grid, z, chest.body, fat_hu)
        _paint_ellipsoid(img, grid, z, chest.muscle, muscle_hu)
        _paint_ellipsoid(img, grid, z, chest.inner, soft_hu)
        lung_frac = np.zeros_like(img)
        for e in chest.lungs_at(z):
            np.maximum(lung_frac, _ellipsoid_frac_full(grid, z, e), out=lung_frac)
        blockers = [chest.mediastinum, chest.aorta, chest.vertebra]
        heart = chest.heart_at(z)
        if heart is not None:
            blockers.append(heart)
        for e in blockers:
            lung_frac *= 1.0 - _ellipsoid_frac_full(grid, z, e)
        lung_value = np.float32(lung_hu) + gradient
        _paint(img, lung_frac, lung_value)
        _paint_ellipsoid(img, grid, z, chest.aorta, soft_hu)
        _paint_ellipsoid(img, grid, z, chest.vertebra, 900.0)
        _paint_ellipsoid(img, grid, z, chest.vertebra_core, 280.0)
        _paint_ellipsoid(img, grid, z, chest.spinous, 650.0)
        for s in vessels:
            _paint_segment(img, grid, z, s, value=soft_hu, clip=lung_frac)
        for (e, hu), acc in zip(placed, accs, strict=True):
            if abs(z - e.cz) > e.az + grid.dz:
                continue
            r0, r1 = grid.row_range(e.cy - e.ay, e.cy + e.ay)
            c0, c1 = grid.row_range(e.cx - e.ax, e.cx + e.ax)
            dy = (coords[r0:r1] - np.float32(e.cy))[:, None]
            dx = (coords[c0:c1] - np.float32(e.cx))[None, :]
            frac = _ellipsoid_fraction(float(z - e.cz), dy, dx, e, h)
            _paint(img[r0:r1, c0:c1], frac, hu)
            acc.add(k, r0, c0, frac)
        img += noise * np.float32(noise_sd)
        volume[k] = _to_int16(img)

    lesions = tuple(acc.lesion("nodule", spacing) for acc in accs)
    return Phantom("CHEST", volume, spacing, lesions)


def _vessel_tree(rng: np.random.Generator, chest: _Chest) -> tuple[_Segment, ...]:
    """Branching pulmonary vessels from each hilum outwards (3 generations)."""
    segments: list[_Segment] = []
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
    out: list[_Segment],
    start: npt.NDArray[np.float64],
    direction: npt.NDArray[np.float64],
    *,
    length: float,
    radius: float,
    depth: int,
) -> None:
    d = direction / np.linalg.norm(direction)
    end = start + d * length
    out.append(_Segment(a=tuple(start.tolist()), b=tuple(end.tolist()), r=radius))
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
    vessels: Sequence[_Segment],
    count: int,
    grid: _Grid,
) -> list[tuple[_Ellipsoid, float]]:
    placed: list[tuple[_Ellipsoid, float]] = []
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
            if not chest.in_lung(_sphere_points(center, r + 4.0)).all():
                continue
            if center[0] - r < grid.dz or center[0] + r > CHEST_Z_MM - grid.dz:
                continue
            if len(starts) and any(
                float(_segment_distance(center[None, :], s)[0])
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
            e = _Ellipsoid(
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
