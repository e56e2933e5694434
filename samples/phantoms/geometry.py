"""Analytic shapes in millimetres (ellipsoids, elliptic cylinders, tubes), the voxel grid they are
sampled on, point-in-shape tests for placing lesions, and the partial-volume coverage of a voxel.

Coordinates: ``z`` from the bottom of the volume, ``y`` rows (anterior first), ``x`` columns,
``y`` and ``x`` centred on the image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "Ellipsoid",
    "FloatArray",
    "Grid",
    "Segment",
    "ellipsoid_fraction",
    "inside",
    "make_grid",
    "segment_distance",
    "sphere_points",
]

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Ellipsoid:
    """Axis-aligned ellipsoid in mm; an infinite ``az`` makes it an elliptic cylinder."""

    cz: float
    cy: float
    cx: float
    az: float
    ay: float
    ax: float

    def z_range(self) -> tuple[float, float]:
        return self.cz - self.az, self.cz + self.az

    def grown(self, margin: float) -> Ellipsoid:
        return Ellipsoid(
            self.cz, self.cy, self.cx, self.az + margin, self.ay + margin, self.ax + margin
        )


@dataclass(frozen=True)
class Segment:
    """A vessel: a tube of radius ``r`` from ``a`` to ``b`` (mm, (z, y, x))."""

    a: tuple[float, float, float]
    b: tuple[float, float, float]
    r: float


@dataclass(frozen=True)
class Grid:
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


def make_grid(slices: int, size: int, fov_mm: float, z_mm: float) -> Grid:
    """The grid of ``slices`` slices of ``size`` x ``size`` covering ``fov_mm`` by ``z_mm``."""
    if slices < 4 or size < 32:
        raise ValueError("phantoms need at least 4 slices of 32 x 32")
    return Grid(slices=slices, size=size, dz=z_mm / slices, px=fov_mm / size)


def ellipsoid_fraction(
    dz: float,
    dy: FloatArray,
    dx: FloatArray,
    e: Ellipsoid,
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


def inside(e: Ellipsoid, p: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    """Which points ``p`` (n, 3) (z, y, x mm) are inside ``e``."""
    qz = 0.0 if math.isinf(e.az) else (p[:, 0] - e.cz) / e.az
    q = qz**2 + ((p[:, 1] - e.cy) / e.ay) ** 2 + ((p[:, 2] - e.cx) / e.ax) ** 2
    return np.asarray(q <= 1.0)


def sphere_points(
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


def segment_distance(p: npt.NDArray[np.float64], s: Segment) -> npt.NDArray[np.float64]:
    """Distance (mm) from each point ``p`` (n, 3) to the axis of segment ``s``."""
    a = np.asarray(s.a)
    ab = np.asarray(s.b) - a
    t = np.clip(((p - a) @ ab) / max(float(ab @ ab), 1e-9), 0.0, 1.0)
    closest = a + t[:, None] * ab
    return np.asarray(np.linalg.norm(p - closest, axis=1))
