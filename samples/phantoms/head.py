"""The head CT phantom: scalp, skull, CSF, grey/white matter, ventricles and an optional
intracranial bleed placed clear of the ventricles and the inner table."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from samples.phantoms.geometry import (
    Ellipsoid,
    FloatArray,
    Grid,
    ellipsoid_fraction,
    inside,
    make_grid,
    sphere_points,
)
from samples.phantoms.painting import AIR_HU, noise_slices, paint, paint_ellipsoid, to_int16
from samples.phantoms.phantom import LesionAccumulator, Phantom

__all__ = ["HEAD_FOV_MM", "HEAD_Z_MM", "head_ct"]

HEAD_FOV_MM = 220.0
HEAD_Z_MM = 160.0  # craniocaudal coverage: 32 slices of 5 mm


def head_ct(  # noqa: PLR0915 (one painter per tissue, kept in one readable place)
    seed: int, *, slices: int = 32, size: int = 256, bleed: bool = False
) -> Phantom:
    """A head CT: scalp, skull, CSF, grey/white matter, ventricles, optional hyperdense bleed.

    The bleed is an irregular blob (a main ellipsoid plus two or three lobes) of 55-80 HU and
    2-12 mL, entirely inside the cranial cavity, clear of the ventricles and of the inner table.
    """
    rng = np.random.default_rng(seed)
    grid = make_grid(slices, size, HEAD_FOV_MM, HEAD_Z_MM)
    spacing = (grid.dz, grid.px, grid.px)

    # head: a 3D ellipsoid centred below the middle of the volume (slices cut up to the vertex)
    cz = HEAD_Z_MM * rng.uniform(0.36, 0.42)
    ay = rng.uniform(88.0, 96.0)  # anterior-posterior half length
    ax = ay * rng.uniform(0.76, 0.82)  # left-right
    az = rng.uniform(105.0, 112.0)
    cy = rng.uniform(-3.0, 3.0)
    cx = rng.uniform(-2.0, 2.0)

    def shell(inset: float) -> Ellipsoid:
        return Ellipsoid(cz, cy, cx, az - inset, ay - inset, ax - inset)

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
        Ellipsoid(
            vent_z,
            cy - rng.uniform(0.0, 6.0),
            cx + side * rng.uniform(7.0, 10.0),
            rng.uniform(20.0, 28.0),
            vent_ay,
            rng.uniform(4.0, 7.0),
        )
        for side in (-1.0, 1.0)
    )
    pineal = Ellipsoid(cz + rng.uniform(0.0, 6.0), cy + rng.uniform(18.0, 24.0), cx, 2.5, 2.5, 2.5)

    lobes: tuple[Ellipsoid, ...] = ()
    bleed_hu = 0.0
    if bleed:
        lobes = _place_bleed(rng, cavity, ventricles, grid)
        bleed_hu = rng.uniform(58.0, 78.0)

    volume = np.empty((grid.slices, grid.size, grid.size), dtype=np.int16)
    acc = LesionAccumulator()
    h = (grid.dz, grid.px, grid.px)
    for k, z, noise in noise_slices(rng, grid):
        img = np.full((grid.size, grid.size), AIR_HU, dtype=np.float32)
        if paint_ellipsoid(img, grid, z, head, scalp_hu) is not None:
            paint_ellipsoid(img, grid, z, skull_out, cortical_hu)
            paint_ellipsoid(img, grid, z, diploe_out, diploe_hu)
            paint_ellipsoid(img, grid, z, diploe_in, cortical_hu)
            paint_ellipsoid(img, grid, z, cavity, csf_hu)
            paint_ellipsoid(img, grid, z, grey, grey_hu)
            paint_ellipsoid(img, grid, z, white, white_hu)
            for v in ventricles:
                paint_ellipsoid(img, grid, z, v, csf_hu)
            paint_ellipsoid(img, grid, z, pineal, 180.0)
        if lobes:
            _paint_bleed(img, grid, k, z, lobes=lobes, value=bleed_hu, acc=acc, h=h)
        img += noise * np.float32(noise_sd)
        volume[k] = to_int16(img)

    lesions = (acc.lesion("bleed", spacing),) if bleed else ()
    return Phantom("HEAD", volume, spacing, lesions)


def _place_bleed(
    rng: np.random.Generator,
    cavity: Ellipsoid,
    ventricles: Sequence[Ellipsoid],
    grid: Grid,
) -> tuple[Ellipsoid, ...]:
    target_ml = rng.uniform(2.0, 12.0)
    r = (3.0 * target_ml * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
    z_lo, z_hi = 0.18 * HEAD_Z_MM, 0.72 * HEAD_Z_MM
    for _ in range(2000):
        main = Ellipsoid(
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
                Ellipsoid(main.cz + off[0], main.cy + off[1], main.cx + off[2], lr, lr, lr)
            )
        if all(_bleed_fits(lobe, cavity, ventricles, grid) for lobe in lobes):
            return tuple(lobes)
    raise RuntimeError("could not place a bleed inside the cranial cavity")


def _bleed_fits(
    lobe: Ellipsoid, cavity: Ellipsoid, ventricles: Sequence[Ellipsoid], grid: Grid
) -> bool:
    margin = 6.0
    extent = max(lobe.az, lobe.ay, lobe.ax)
    pts = sphere_points((lobe.cz, lobe.cy, lobe.cx), extent + margin)
    if not inside(cavity, pts).all():
        return False
    if lobe.cz - extent < 1.5 * grid.dz or lobe.cz + extent > HEAD_Z_MM - 1.5 * grid.dz:
        return False
    near = sphere_points((lobe.cz, lobe.cy, lobe.cx), extent + 3.0)
    return not any(inside(v, near).any() for v in ventricles)


def _paint_bleed(
    img: FloatArray,
    grid: Grid,
    k: int,
    z: float,
    *,
    lobes: Sequence[Ellipsoid],
    value: float,
    acc: LesionAccumulator,
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
        np.maximum(frac, ellipsoid_fraction(float(z - e.cz), dy, dx, e, h), out=frac)
    if frac.any():
        paint(img[r0:r1, c0:c1], frac, value)
        acc.add(k, r0, c0, frac)
