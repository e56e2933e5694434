"""TID 1500 SRs as another AI product would store them in the PACS, made by a code path that is
not radmesh's SR writer (services/mapper/structured_report.py): highdicom driven directly from
source images, in two shapes vendors produce.

- `volumetric_sr`: IHE AI Results style. Comprehensive 3D SR; the product is in the
  Contributing Equipment Sequence; one Planar ROI group per finding, its region an SCOORD3D
  POINT; the probability a measurement (DCM 122157, unit `1`); the volume in mL.
- `image_level_sr`: the PixelMed-style shape of older products. Comprehensive SR; no Contributing
  Equipment, the product named by the SR's General Equipment (Manufacturer, Manufacturer's
  Model Name, Software Versions); one image-level group (TID 1501) naming its source images;
  the probability in percent; an extra group with a Finding the registry does not map.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

__all__ = [
    "VENDOR_MANUFACTURER",
    "VENDOR_MODEL_NAME",
    "VENDOR_VERSION",
    "image_level_sr",
    "volumetric_sr",
]

VENDOR_MANUFACTURER = "Example AI Vendor"
VENDOR_MODEL_NAME = "ICH Triage"
VENDOR_VERSION = "2.4"
_HEMORRHAGE = hd.sr.CodedConcept("1386000", "SCT", "Intracranial hemorrhage")
_BRAIN = hd.sr.CodedConcept("12738006", "SCT", "Brain structure")
_VOLUME = hd.sr.CodedConcept("118565006", "SCT", "Volume")
_PROBABILITY = hd.sr.CodedConcept("122157", "DCM", "Probability")
_CALCIFICATION = hd.sr.CodedConcept("36222008", "SCT", "Calcification")  # not in the registry


def _algorithm() -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(name=VENDOR_MODEL_NAME, version=VENDOR_VERSION)


def _observation_context() -> hd.sr.ObservationContext:
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=generate_uid(entropy_srcs=["vendor-device", VENDOR_MODEL_NAME]),
                manufacturer_name=VENDOR_MANUFACTURER,
                model_name=VENDOR_MODEL_NAME,
            ),
        )
    )


def _evaluation(present: bool) -> hd.sr.QualitativeEvaluation:
    value = codes.SCT.Present if present else hd.sr.CodedConcept("272519000", "SCT", "Absent")
    return hd.sr.QualitativeEvaluation(name=_HEMORRHAGE, value=value)


def volumetric_sr(
    images: Sequence[Dataset],
    *,
    present: bool = True,
    probability: float = 0.91,
    volume_ml: float = 6.2,
    centre_slice: int = 0,
    volume_unit: str = "mL",
) -> hd.sr.Comprehensive3DSR:
    """A Comprehensive 3D SR of one located hemorrhage (see the module)."""
    image = images[centre_slice]
    x, y, z = (float(v) for v in image.ImagePositionPatient)
    measurements = [
        hd.sr.Measurement(
            name=_PROBABILITY,
            value=probability,
            unit=hd.sr.CodedConcept("1", "UCUM", "no units"),
            algorithm_id=_algorithm(),
        )
    ]
    if present:
        measurements.append(
            hd.sr.Measurement(
                name=_VOLUME,
                value=volume_ml,
                unit=hd.sr.CodedConcept(volume_unit, "UCUM", volume_unit),
                algorithm_id=_algorithm(),
            )
        )
    group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="Bleed 1"),
        referenced_region=hd.sr.ImageRegion3D(
            graphic_type=hd.sr.GraphicTypeValues3D.POINT,
            graphic_data=np.asarray([[x + 10.0, y + 12.0, z]]),
            frame_of_reference_uid=str(image.FrameOfReferenceUID),
        ),
        finding_type=_HEMORRHAGE,
        algorithm_id=_algorithm(),
        finding_sites=[hd.sr.FindingSite(_BRAIN)],
        measurements=measurements,
        qualitative_evaluations=[_evaluation(present)],
    )
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(),
        procedure_reported=hd.sr.CodedConcept("25045-6", "LN", "CT unspecified body region"),
        imaging_measurements=[group],
    )
    return hd.sr.Comprehensive3DSR(
        evidence=list(images),
        content=report,
        series_instance_uid=generate_uid(),
        series_number=701,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=VENDOR_MANUFACTURER,
        is_complete=True,
        series_description="ICH Triage results",
        contributing_equipment=[
            hd.ContributingEquipment(
                manufacturer=VENDOR_MANUFACTURER,
                purpose_of_reference=codes.DCM.ProcessingEquipment,
                manufacturer_model_name=VENDOR_MODEL_NAME,
                software_versions=VENDOR_VERSION,
                contribution_datetime=datetime.now(UTC),
            )
        ],
    )


def image_level_sr(
    images: Sequence[Dataset], *, probability_percent: float = 84.0
) -> hd.sr.ComprehensiveSR:
    """A Comprehensive SR, product in General Equipment, image-level groups (see the module)."""
    hemorrhage = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="ICH"),
        finding_type=_HEMORRHAGE,
        finding_sites=[hd.sr.FindingSite(_BRAIN)],
        measurements=[
            hd.sr.Measurement(
                name=_PROBABILITY,
                value=probability_percent,
                unit=hd.sr.CodedConcept("%", "UCUM", "percent"),
            )
        ],
        qualitative_evaluations=[_evaluation(True)],
        source_images=[
            hd.sr.SourceImageForMeasurementGroup.from_source_image(image) for image in images[:2]
        ],
    )
    other = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="Calc"),
        finding_type=_CALCIFICATION,
    )
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(),
        procedure_reported=hd.sr.CodedConcept("25045-6", "LN", "CT unspecified body region"),
        imaging_measurements=[hemorrhage, other],
    )
    document = hd.sr.ComprehensiveSR(
        evidence=list(images),
        content=report,
        series_instance_uid=generate_uid(),
        series_number=702,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=VENDOR_MANUFACTURER,
        is_complete=True,
        series_description="ICH Triage (legacy SR)",
    )
    del document.ContributingEquipmentSequence  # highdicom adds itself; such products do not
    document.ManufacturerModelName = VENDOR_MODEL_NAME
    document.SoftwareVersions = VENDOR_VERSION
    return document
