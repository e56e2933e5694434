"""Compositing shapes into one slice image (float32 HU) with partial-volume coverage, the
per-slice noise stream, and the final rounding to int16 HU."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

from samples.phantoms.geometry import Ellipsoid, FloatArray, Grid, Segment, ellipsoid_fraction

__all__ = [
    "AIR_HU",
    "ellipsoid_coverage",
    "noise_slices",
    "paint",
    "paint_ellipsoid",
    "paint_segment",
    "to_int16",
]

AIR_HU = -1000.0


def paint(target: FloatArray, frac: FloatArray, value: float | FloatArray) -> None:
    """Composite ``value`` over ``target`` with coverage ``frac`` (in place)."""
    target += frac * (value - target)


def paint_ellipsoid(
    img: FloatArray, grid: Grid, z: float, e: Ellipsoid, value: float
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
    frac = ellipsoid_fraction(float(z - e.cz), dy, dx, e, (hz, grid.px, grid.px))
    paint(img[r0:r1, c0:c1], frac, value)
    return frac


def ellipsoid_coverage(grid: Grid, z: float, e: Ellipsoid) -> FloatArray:
    """Coverage of ``e`` over the whole slice at height ``z``."""
    out = np.zeros((grid.size, grid.size), dtype=np.float32)
    if not math.isinf(e.az) and abs(z - e.cz) > e.az + grid.dz:
        return out
    r0, r1 = grid.row_range(e.cy - e.ay, e.cy + e.ay)
    c0, c1 = grid.row_range(e.cx - e.ax, e.cx + e.ax)
    coords = grid.coords
    dy = (coords[r0:r1] - np.float32(e.cy))[:, None]
    dx = (coords[c0:c1] - np.float32(e.cx))[None, :]
    out[r0:r1, c0:c1] = ellipsoid_fraction(float(z - e.cz), dy, dx, e, (grid.dz, grid.px, grid.px))
    return out


def paint_segment(
    img: FloatArray, grid: Grid, z: float, s: Segment, *, value: float, clip: FloatArray
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
    paint(img[r0:r1, c0:c1], frac, value)


def noise_slices(rng: np.random.Generator, grid: Grid) -> Iterator[tuple[int, float, FloatArray]]:
    """Yields (k, z_mm, noise image of unit variance) per slice, in order (deterministic)."""
    for k in range(grid.slices):
        noise = rng.standard_normal((grid.size, grid.size), dtype=np.float32)
        yield k, grid.z_of(k), noise


def to_int16(img: FloatArray) -> npt.NDArray[np.int16]:
    """Round a slice to int16 HU, clipped to the CT range -1024..3071."""
    return np.clip(np.rint(img), -1024, 3071).astype(np.int16)
