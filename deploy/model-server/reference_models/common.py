"""The input interface shared by every reference model, and its validation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

CLINICAL_USE_LABEL = "reference algorithm, not for clinical use"


class InputError(ValueError):
    """The request is well typed but its values cannot be processed (e.g. non-positive spacing)."""


@dataclass(frozen=True)
class VolumeInput:
    """A CT volume in Hounsfield units and its voxel spacing.

    volume: int16, shape (slices, rows, columns), slice 0 the most inferior one.
    spacing: (slice spacing, row spacing, column spacing) in mm.
    """

    volume: npt.NDArray[np.int16]
    spacing: tuple[float, float, float]

    @property
    def voxel_ml(self) -> float:
        dz, dy, dx = self.spacing
        return dz * dy * dx / 1000.0

    @classmethod
    def from_arrays(
        cls, volume: npt.NDArray[np.generic], spacing: npt.NDArray[np.generic]
    ) -> VolumeInput:
        """Validates the raw tensors (Triton already checked dtypes and ranks)."""
        if volume.ndim != 3 or min(volume.shape) < 1:
            raise InputError(f"volume must have shape [slices, rows, columns], got {volume.shape}")
        if volume.dtype != np.int16:
            raise InputError(f"volume must be INT16 Hounsfield units, got {volume.dtype}")
        flat = np.asarray(spacing, dtype=np.float64).reshape(-1)
        if flat.shape != (3,) or not np.all(np.isfinite(flat)) or np.any(flat <= 0):
            raise InputError(f"spacing must be 3 positive finite mm values, got {flat.tolist()}")
        return cls(
            volume=volume.view(np.int16), spacing=(float(flat[0]), float(flat[1]), float(flat[2]))
        )
