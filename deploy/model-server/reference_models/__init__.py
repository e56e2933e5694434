"""Reference detection algorithms served by the radmesh model server (numpy + scipy.ndimage).

Reference algorithms, not for clinical use: they exist to exercise the radmesh pipeline on
synthetic phantoms (samples/phantoms/), not to diagnose anything.
"""

from reference_models.common import CLINICAL_USE_LABEL, VolumeInput

__all__ = ["CLINICAL_USE_LABEL", "VolumeInput"]
