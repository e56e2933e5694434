"""A finding the model segmented → a DICOM Segmentation (SEG) for the PACS (pure, no I/O), with
highdicom: one BINARY segment (the finding's code as its property type, category SCT 49755003
"Morphologically abnormal structure", the algorithm as an automatic AI algorithm), one frame
per box slice that holds any of it, on the images the inference service named for those slices.
Its UIDs derive from study + model + version + generation, as the SR's do, so storing it again
replaces it. The SR's group of the finding references its segment (TID 1411, structured_report.py)
and the finding's Observation names the SEG's SOP Instance UID (observations.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom import Dataset

from services.mapper.object_uids import run_object_uids
from shared.codes import ARTIFICIAL_INTELLIGENCE, MORPHOLOGICALLY_ABNORMAL_STRUCTURE
from shared.errors import PermanentError
from shared.iocm import RADMESH_MANUFACTURER
from shared.masks import box_shape, unpack_mask
from shared.messages import Finding
from shared.registry import Algorithm
from shared.telemetry import without_quoted_values

__all__ = ["SEGMENT_NUMBER", "SEG_SERIES_NUMBER", "build_segmentation", "segmentation_uids"]

SEG_SERIES_NUMBER = 9004
SEGMENT_NUMBER = 1


def segmentation_uids(
    study_instance_uid: str, model: Algorithm, generation: int = 1
) -> tuple[str, str]:
    """(Series, SOP Instance UID) of a run's SEG: the same on every delivery."""
    return run_object_uids("radmesh-seg", study_instance_uid, model, generation)


def build_segmentation(
    study_instance_uid: str,
    model: Algorithm,
    finding: Finding,
    sources: Sequence[Dataset],
    generation: int = 1,
) -> hd.seg.Segmentation:
    """The SEG of one segmented finding; `sources` are the images of its box's slices, in the
    box's order (their WADO-RS metadata: no pixels needed)."""
    if finding.mask is None:
        raise ValueError(f"finding {finding.finding_key} has no mask")
    z0, y0, x0, z1, y1, x1 = finding.mask.box
    mask = unpack_mask(finding.mask.bits, box_shape(finding.mask.box))
    if len(sources) != z1 - z0 + 1:
        raise PermanentError(
            f"the SEG of {finding.finding_key} needs {z1 - z0 + 1} source images, "
            f"got {len(sources)}"
        )
    rows, columns = int(sources[0].Rows), int(sources[0].Columns)
    if y1 >= rows or x1 >= columns:
        raise PermanentError(
            f"the mask of {finding.finding_key} reaches beyond the {rows}×{columns} images"
        )
    frames = np.zeros((len(sources), rows, columns), dtype=np.uint8)
    frames[:, y0 : y1 + 1, x0 : x1 + 1] = mask
    mapping = model.finding(finding.finding_key)
    description = hd.seg.SegmentDescription(
        segment_number=SEGMENT_NUMBER,
        segment_label=mapping.codes[0].display[:64],
        segmented_property_category=MORPHOLOGICALLY_ABNORMAL_STRUCTURE.dicom(),
        segmented_property_type=mapping.codes[0].coding().dicom(),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=model.id[:64],
            family=ARTIFICIAL_INTELLIGENCE.dicom(),
            version=model.version[:64],
            source=model.manufacturer[:64],
        ),
        anatomic_regions=[mapping.body_site.coding().dicom()] if mapping.body_site else None,
    )
    series_uid, sop_uid = segmentation_uids(study_instance_uid, model, generation)
    try:
        return hd.seg.Segmentation(
            source_images=list(sources),
            pixel_array=frames,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[description],
            series_instance_uid=series_uid,
            series_number=SEG_SERIES_NUMBER,
            sop_instance_uid=sop_uid,
            instance_number=1,
            manufacturer=RADMESH_MANUFACTURER,
            manufacturer_model_name=model.id[:64],
            software_versions=model.version[:64],
            device_serial_number=f"{model.id}-{model.version}"[:64],
            series_description=f"AI segmentation {model.id} v{model.version}"[:64],
        )
    except (ValueError, TypeError, AttributeError) as error:
        raise PermanentError(
            f"SEG of {model.id} {model.version} cannot be built: "
            f"{without_quoted_values(str(error))}"
        ) from error
