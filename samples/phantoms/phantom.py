"""What a phantom generator returns: the volume, its spacing and the ground truth of its lesions,
plus the accumulator that measures a lesion's true centroid and volume as it is painted."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from samples.phantoms.geometry import FloatArray

__all__ = ["Lesion", "LesionAccumulator", "Phantom"]


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


class LesionAccumulator:
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
