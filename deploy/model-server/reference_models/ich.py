"""Intracranial haemorrhage (hyperdense region) reference detector for head CT.

Steps: bone (> 300 HU) per slice -> fill its holes -> cranial cavity = filled minus bone, rim eroded
(partial volume of the inner table looks like blood; one slice along z too, and the
volume's end slices) -> 3x3 in-plane median filter -> voxels of
50-90 HU inside the cavity -> in-plane opening -> 3D connected components -> keep those of at least
``min_volume_ml``.  The largest one is reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from reference_models.common import VolumeInput

BONE_HU = 300
BLOOD_LOW_HU = 50
BLOOD_HIGH_HU = 90
RIM_MM = 4.0
MIN_VOLUME_ML = 0.4
PROBABILITY_HALF_ML = 0.5  # probability = v / (v + 0.5 mL): 0.5 mL -> 0.5, 5 mL -> 0.91

_IN_PLANE_CROSS = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE_CROSS[1] = ndimage.generate_binary_structure(2, 1)
_Z_LINE = np.zeros((3, 1, 1), dtype=bool)
_Z_LINE[:, 0, 0] = True
_IN_PLANE_SQUARE = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE_SQUARE[1] = True


@dataclass(frozen=True)
class IchResult:
    probability: float  # 0 when nothing was found
    volume_ml: float  # of the largest hyperdense region
    centroid_voxel: tuple[float, float, float]  # (z, y, x); (-1, -1, -1) when nothing found
    bbox_voxel: tuple[int, int, int, int, int, int]  # z0, y0, x0, z1, y1, x1 inclusive; -1s
    # the region's voxels within bbox_voxel (1: blood), uint8; one 0 voxel when nothing found
    mask: npt.NDArray[np.uint8] = field(default_factory=lambda: np.zeros((1, 1, 1), np.uint8))


NOTHING = IchResult(0.0, 0.0, (-1.0, -1.0, -1.0), (-1, -1, -1, -1, -1, -1))


def cranial_cavity(
    volume: npt.NDArray[np.int16], spacing: tuple[float, float, float]
) -> npt.NDArray[np.bool_]:
    """Voxels enclosed by bone in their slice, minus a rim of ``RIM_MM`` along the bone."""
    bone = volume > BONE_HU
    filled = ndimage.binary_fill_holes(bone, structure=_IN_PLANE_CROSS)
    cavity = filled & ~bone
    rim_px = max(1, math.ceil(RIM_MM / min(spacing[1], spacing[2])))
    eroded = ndimage.binary_erosion(cavity, structure=_IN_PLANE_CROSS, iterations=rim_px)
    # and one slice along z: near the vertex and the skull base the bone is cut obliquely and
    # its partial volume smears over the next slice.  The first and last slices are dropped too:
    # without the slice beyond them, bone partial volume cannot be told from blood there.
    inner: npt.NDArray[np.bool_] = ndimage.binary_erosion(eroded, structure=_Z_LINE, border_value=0)
    return inner


def detect(inp: VolumeInput) -> IchResult:
    """Finds the largest hyperdense (50-90 HU) intracranial region."""
    cavity = cranial_cavity(inp.volume, inp.spacing)
    if not cavity.any():
        return NOTHING
    box = ndimage.find_objects(cavity.astype(np.uint8))[0]
    assert box is not None
    sub = inp.volume[box]
    smooth = ndimage.median_filter(sub, footprint=_IN_PLANE_SQUARE)
    candidate = (smooth >= BLOOD_LOW_HU) & (smooth <= BLOOD_HIGH_HU) & cavity[box]
    candidate = ndimage.binary_opening(candidate, structure=_IN_PLANE_CROSS)
    labels, count = ndimage.label(candidate)
    if count == 0:
        return NOTHING
    sizes = np.bincount(labels.ravel())[1:]
    best = int(np.argmax(sizes))
    volume_ml = float(sizes[best]) * inp.voxel_ml
    if volume_ml < MIN_VOLUME_ML:
        return NOTHING
    region = labels == best + 1
    offset = (box[0].start, box[1].start, box[2].start)
    cz, cy, cx = ndimage.center_of_mass(region)
    sl = ndimage.find_objects(region.astype(np.uint8))[0]
    assert sl is not None
    bbox = (
        sl[0].start + offset[0],
        sl[1].start + offset[1],
        sl[2].start + offset[2],
        sl[0].stop - 1 + offset[0],
        sl[1].stop - 1 + offset[1],
        sl[2].stop - 1 + offset[2],
    )
    return IchResult(
        probability=volume_ml / (volume_ml + PROBABILITY_HALF_ML),
        volume_ml=volume_ml,
        centroid_voxel=(cz + offset[0], cy + offset[1], cx + offset[2]),
        bbox_voxel=bbox,
        mask=region[sl].astype(np.uint8),
    )
