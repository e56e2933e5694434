"""Lung nodule reference detector for chest CT.

Steps: body = largest region above -500 HU, holes filled per slice -> lung fields = large air
(< -400 HU) regions inside the body, holes filled per slice (so vessels and nodules belong to them)
-> soft-tissue voxels (> -450 HU) inside the lung fields -> 3D connected components -> keep the
compact ones: equivalent diameter 3-32 mm, small z extent, principal-axis elongation <= 2.2, an
ellipsoid fill ratio >= 0.72 and a peak of at least -320 HU (a region seen in one slice
only must also reach -150 HU or be round):
vessels are long, branching or faint, nodules are round and solid.  A plain LoG blob detector
drowns in vessel cross-sections, which is why shape is judged in 3D.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from reference_models.common import VolumeInput

BODY_HU = -500
AIR_HU = -400
NODULE_HU = -450  # seeds: solid tissue
EXTENT_HU = -650  # the region judged for shape: seeds grown into partial-volume tissue
MIN_LUNG_ML = 50.0
MIN_DIAMETER_MM = 3.0
MAX_DIAMETER_MM = 32.0
MAX_ELONGATION = 2.2
MIN_FILL = 0.72
# Partial-volume vessel fragments stay faint; a solid nodule reaches these peaks (a nodule seen
# in one slice only lies mostly inside it, so it must be denser than one split across slices).
MIN_PEAK_HU = -320
MIN_PEAK_ONE_SLICE_HU = -150
MAX_ELONGATION_ONE_SLICE = 1.5  # ... or rounder than an oblique vessel cut
MAX_CANDIDATES = 64

_IN_PLANE_CROSS = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE_CROSS[1] = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class Nodule:
    centroid_voxel: tuple[float, float, float]  # (z, y, x)
    diameter_mm: float  # equivalent-sphere diameter of the segmented region
    probability: float  # heuristic roundness score in (0, 1], not calibrated


@dataclass(frozen=True)
class Shape:
    diameter_mm: float
    z_extent_mm: float
    elongation: float
    fill: float
    peak_hu: int


def lung_fields(
    volume: npt.NDArray[np.int16], spacing: tuple[float, float, float]
) -> npt.NDArray[np.bool_]:
    """Lung mask: air-density regions inside the body, holes (vessels, nodules) filled."""
    voxel_ml = spacing[0] * spacing[1] * spacing[2] / 1000.0
    dense = volume > BODY_HU
    labels, count = ndimage.label(dense)
    if count == 0:
        return np.zeros(volume.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())[1:]
    body = labels == int(np.argmax(sizes)) + 1
    body = ndimage.binary_fill_holes(body, structure=_IN_PLANE_CROSS)
    air = body & (volume < AIR_HU)
    labels, count = ndimage.label(air)
    if count == 0:
        return np.zeros(volume.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.flatnonzero(sizes * voxel_ml >= MIN_LUNG_ML) + 1
    lungs = np.isin(labels, keep)
    filled: npt.NDArray[np.bool_] = ndimage.binary_fill_holes(lungs, structure=_IN_PLANE_CROSS)
    return filled


def shape_of(
    coords: npt.NDArray[np.intp], spacing: tuple[float, float, float], peak_hu: int
) -> Shape:
    """Size and roundness of one region from its voxel coordinates (n, 3)."""
    sp = np.asarray(spacing, dtype=np.float64)
    n = coords.shape[0]
    volume_mm3 = n * float(sp.prod())
    diameter = (6.0 * volume_mm3 / math.pi) ** (1.0 / 3.0)
    mm = coords.astype(np.float64) * sp
    cov = np.cov(mm, rowvar=False, bias=True) if n > 1 else np.zeros((3, 3))
    cov = cov + np.diag(sp**2 / 12.0)  # each voxel is a box, not a point
    eig = np.clip(np.linalg.eigvalsh(cov), 1e-9, None)
    elongation = math.sqrt(float(eig[-1] / eig[0]))
    ellipsoid_mm3 = 4.0 / 3.0 * math.pi * float(np.prod(np.sqrt(5.0 * eig)))
    z_extent = float((coords[:, 0].max() - coords[:, 0].min() + 1) * sp[0])
    return Shape(diameter, z_extent, elongation, volume_mm3 / ellipsoid_mm3, peak_hu)


def is_nodule(shape: Shape, slice_mm: float) -> bool:
    return (
        MIN_DIAMETER_MM <= shape.diameter_mm <= MAX_DIAMETER_MM
        and shape.z_extent_mm <= 1.5 * shape.diameter_mm + 2.0 * slice_mm
        and shape.elongation <= MAX_ELONGATION
        and shape.fill >= MIN_FILL
        and shape.peak_hu >= MIN_PEAK_HU
        and (
            shape.z_extent_mm > slice_mm
            or shape.peak_hu >= MIN_PEAK_ONE_SLICE_HU
            or shape.elongation <= MAX_ELONGATION_ONE_SLICE
        )
    )


def probability(shape: Shape) -> float:
    """Score of a region the shape rules kept, in (0.5, 1]: above the 0.5 operating point the
    registry thresholds at (being kept is the detection), plus half its roundness (1 for a
    filled sphere, falling with elongation and emptiness), so rounder nodules rank first.
    (Roundness alone left 16 % of true nodules below 0.5: thick slices stretch small ones
    along z.)"""
    roundness = math.exp(-(shape.elongation - 1.0)) * min(1.0, shape.fill)
    return float(0.5 + 0.5 * roundness)


def candidates(inp: VolumeInput) -> list[tuple[npt.NDArray[np.intp], Shape]]:
    """Every soft-tissue region inside the lung fields with its shape (for tuning and tests).

    Regions are seeded at ``NODULE_HU`` and judged on their extent at ``EXTENT_HU``: a vessel
    crossing a thick slice obliquely leaves a small round seed, but at the lower threshold it
    joins the rest of its (long, branching) vessel, while a nodule only gains its rim.
    """
    lungs = lung_fields(inp.volume, inp.spacing)
    if not lungs.any():
        return []
    box = ndimage.find_objects(lungs.astype(np.uint8))[0]
    assert box is not None
    sub = inp.volume[box]
    extent = (sub > EXTENT_HU) & lungs[box]
    seeds = (sub > NODULE_HU) & extent
    labels, count = ndimage.label(extent)
    out: list[tuple[npt.NDArray[np.intp], Shape]] = []
    if count == 0:
        return out
    seeded = np.unique(labels[seeds])
    seeded = seeded[seeded > 0]
    offset = np.array([box[0].start, box[1].start, box[2].start])
    objects = ndimage.find_objects(labels)
    for i in seeded.tolist():
        sl = objects[i - 1]
        if sl is None:
            continue
        local = np.argwhere(labels[sl] == i)
        coords = local + np.array([s.start for s in sl]) + offset
        peak = int(inp.volume[tuple(coords.T)].max())
        out.append((coords, shape_of(coords, inp.spacing, peak)))
    return out


def detect(inp: VolumeInput) -> list[Nodule]:
    """Nodules, most probable first (at most ``MAX_CANDIDATES``)."""
    found = [
        Nodule(
            centroid_voxel=tuple(float(v) for v in coords.mean(axis=0)),  # type: ignore[arg-type]
            diameter_mm=shape.diameter_mm,
            probability=probability(shape),
        )
        for coords, shape in candidates(inp)
        if is_nodule(shape, inp.spacing[0])
    ]
    found.sort(key=lambda n: n.probability, reverse=True)
    return found[:MAX_CANDIDATES]
