"""Synthetic CT phantoms (head and chest) with known lesions, for testing the reference detectors.

Everything is deterministic from the seed (one ``numpy.random.Generator`` per phantom) and
pure numpy, so the package imports without scipy.  Volumes are int16 Hounsfield units of shape
``(slices, rows, columns)`` with slice 0 the most inferior one.

Geometry is analytic (ellipsoids, elliptic cylinders, tubes) and painted slice by slice with a
partial-volume edge (the fraction of each voxel covered by a shape rises linearly over one voxel
extent along the surface normal), so thick slices blur small structures the way a scanner does.

Coordinates in millimetres: ``z`` from the bottom of the volume (slice ``k`` sits at
``(k + 0.5) * slice_spacing``), ``y`` rows (anterior at row 0), ``x`` columns, both centred.

Modules: ``phantom`` (the output and its ground truth), ``geometry`` (shapes, the voxel grid,
coverage), ``painting`` (compositing shapes and noise into slices), ``head`` and ``chest``.
"""

from samples.phantoms.chest import chest_ct
from samples.phantoms.head import head_ct
from samples.phantoms.phantom import Lesion, Phantom

__all__ = ["Lesion", "Phantom", "chest_ct", "head_ct"]
