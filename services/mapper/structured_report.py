"""One model run → a DICOM TID 1500 Comprehensive 3D SR for the PACS (pure, no I/O).

Per IHE AI Results (AIR): a Measurement Report (TID 1500) whose observer is the algorithm as a
device, Procedure Reported from DICOM CID 100 (LOINC 25045-6 "CT unspecified body region" for a CT
study: shared.codes), one measurement group per presence finding — a Planar ROI group (TID 1410)
when the model located the finding: its Image Region the centre as an SCOORD3D POINT in the
series' frame of reference (geometric purpose CID 219 "Center of Mass"), its probability
inferred from the IMAGE of the slice the centre lies on; otherwise a Measurements and
Qualitative Evaluations group (TID 1501) with the slices it names as source images. Each
group has its tracking identifier and UID (the finding's Observation.identifier carries the
same UID), its finding type, the algorithm (name, version), the finding site, the qualitative
evaluation present/absent (CID 240), the probability (DCM 122157, unit `1`) and the measurements that depend on it
(hemorrhage volume, nodule diameter, in UCUM units) — and the AI system named in the Contributing
Equipment Sequence (purpose DCM 109102 "Processing Equipment"). The evidence is the instances the
model read, as the inference service names them (`InferenceCompleted.evidence`), with one
instance's WADO-RS metadata for the Patient and Study modules; no pixels needed. The SR's Series and SOP Instance UIDs derive
from study + model + version, so a redelivered message stores the same instance again instead of
a second one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.uid import generate_uid

from services.mapper.object_uids import run_object_uids
from services.mapper.segmentation import SEGMENT_NUMBER
from shared.codes import (
    ABSENCE_FINDINGS,
    CENTER_OF_MASS,
    DEVICE,
    PRESENT,
    PROBABILITY,
    PROCESSING_EQUIPMENT,
    procedure_reported,
    ucum,
)
from shared.errors import PermanentError
from shared.identifiers import run_parts
from shared.iocm import RADMESH_MANUFACTURER
from shared.messages import EvidenceSeries, Finding, InferenceCompleted
from shared.registry import Algorithm, Coding
from shared.telemetry import without_quoted_values

__all__ = [
    "SR_SERIES_NUMBER",
    "build_structured_report",
    "dataset_from_metadata",
    "device_observer_uid",
    "evidence_from_manifest",
    "sr_uids",
    "tracking_uid",
]

SR_SERIES_NUMBER = 9001
_BULK_DATA_TAGS = ("7FE00010", "7FE00008", "7FE00009", "54000100", "00420011")


def _lo(text: str) -> str:
    """A DICOM LO value (at most 64 characters)."""
    return text[:64]


def sr_uids(study_instance_uid: str, model: Algorithm, generation: int = 1) -> tuple[str, str]:
    """(SeriesInstanceUID, SOPInstanceUID) of the SR of one model run: the same on every
    delivery of the run, new for the run's next generation (`shared.identifiers.run_parts`)."""
    return run_object_uids("radmesh-sr", study_instance_uid, model, generation)


def device_observer_uid(model: Algorithm) -> str:
    """The Device Observer UID of a model version in radmesh's SRs and rejection notes."""
    return generate_uid(entropy_srcs=["radmesh-device", model.id, model.version])


def tracking_uid(
    study_instance_uid: str, model: Algorithm, finding_key: str, index: int, generation: int = 1
) -> str:
    """The Tracking Unique Identifier of one finding's measurement group: the same on every
    delivery of the run, so a later SR (the verified one) can find the group again."""
    run = run_parts(study_instance_uid, model.id, model.version, generation)
    return generate_uid(entropy_srcs=["radmesh-sr-tracking", *run, finding_key, str(index)])


def dataset_from_metadata(metadata: dict[str, Any]) -> Dataset:
    """A pydicom Dataset from one instance's DICOM JSON metadata, without its bulk data."""
    attributes = {tag: value for tag, value in metadata.items() if tag not in _BULK_DATA_TAGS}
    return Dataset.from_json(attributes)


def evidence_from_manifest(
    header: Dataset, study_instance_uid: str, evidence: Sequence[EvidenceSeries]
) -> list[Dataset]:
    """The SR's evidence from what the model read: `header` (one instance's metadata, whose
    Patient and Study modules the SR copies) first, then each other instance as just the four
    UIDs an evidence reference holds (no per-instance metadata from the PACS, nothing to copy)."""
    datasets = [header]
    for series in evidence:
        for sop_instance_uid in series.sop_instance_uids:
            if sop_instance_uid == header.SOPInstanceUID:
                continue
            reference = Dataset()
            reference.StudyInstanceUID = study_instance_uid
            reference.SeriesInstanceUID = series.series_instance_uid
            reference.SOPClassUID = series.sop_class_uid
            reference.SOPInstanceUID = sop_instance_uid
            datasets.append(reference)
    return datasets


def _concept(coding: Coding) -> hd.sr.CodedConcept:
    return coding.coding().dicom()


def _ucum(unit: str) -> hd.sr.CodedConcept:
    return ucum(unit).dicom()


def _group(
    event: InferenceCompleted,
    model: Algorithm,
    finding: Finding,
    *,
    measured: list[Finding],
    algorithm: hd.sr.AlgorithmIdentification,
    source_sop_class_uid: str,
    segment: hd.sr.ReferencedSegment | None = None,
) -> (
    hd.sr.MeasurementsAndQualitativeEvaluations
    | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
    | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
):
    mapping = model.finding(finding.finding_key)
    finding_type = _concept(mapping.codes[0])
    sites = [hd.sr.FindingSite(_concept(mapping.body_site))] if mapping.body_site else None
    region = _centre_region(finding)
    measurements = []
    if finding.probability is not None:
        measurements.append(
            hd.sr.Measurement(
                name=PROBABILITY.dicom(),
                value=finding.probability,
                unit=_ucum("1"),
                algorithm_id=algorithm,
                # a located finding's group has a region, not source images: the slice its
                # centre lies on is named here
                referenced_images=[
                    hd.sr.SourceImageForMeasurement(source_sop_class_uid, sop_instance_uid)
                    for sop_instance_uid in finding.sop_instance_uids
                ]
                if region is not None or segment is not None
                else None,
            )
        )
    for quantity in measured:
        quantity_mapping = model.finding(quantity.finding_key)
        if quantity.value is None:
            continue
        measurements.append(
            hd.sr.Measurement(
                name=_concept(quantity_mapping.codes[0]),
                value=quantity.value,
                unit=_ucum(quantity.unit or quantity_mapping.unit or "1"),
                algorithm_id=algorithm,
                finding_sites=sites,
            )
        )
    label = f"{finding.finding_key} {finding.index + 1}"
    tracking = hd.sr.TrackingIdentifier(
        uid=tracking_uid(
            event.study.study_instance_uid,
            model,
            finding.finding_key,
            finding.index,
            event.model.generation,
        ),
        identifier=_lo(label),
    )
    evaluations = [
        hd.sr.QualitativeEvaluation(
            name=finding_type,
            value=(PRESENT if finding.present else ABSENCE_FINDINGS).dicom(),
        )
    ]
    group: dict[str, Any] = {
        "tracking_identifier": tracking,
        "finding_type": finding_type,
        "algorithm_id": algorithm,
        "finding_sites": sites,
        "measurements": measurements or None,
        "qualitative_evaluations": evaluations,
    }
    if segment is not None:
        return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            referenced_segment=segment, **group
        )
    if region is not None:
        return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            referenced_region=region, geometric_purpose=CENTER_OF_MASS.dicom(), **group
        )
    source_images = [
        hd.sr.SourceImageForMeasurementGroup(source_sop_class_uid, sop_instance_uid)
        for sop_instance_uid in finding.sop_instance_uids
    ]
    return hd.sr.MeasurementsAndQualitativeEvaluations(source_images=source_images or None, **group)


def _centre_region(finding: Finding) -> hd.sr.ImageRegion3D | None:
    """A located finding's centre as an SCOORD3D POINT (mm, in its frame of reference)."""
    if finding.center_patient is None or finding.frame_of_reference_uid is None:
        return None
    return hd.sr.ImageRegion3D(
        graphic_type=hd.sr.GraphicTypeValues3D.POINT,
        graphic_data=np.asarray([finding.center_patient], dtype=np.float64),
        frame_of_reference_uid=finding.frame_of_reference_uid,
    )


def _segment(segmentation: Dataset | None) -> hd.sr.ReferencedSegment | None:
    """The reference of the run's SEG's one segment, on its source series."""
    if segmentation is None:
        return None
    return hd.sr.ReferencedSegment(
        sop_class_uid=str(segmentation.SOPClassUID),
        sop_instance_uid=str(segmentation.SOPInstanceUID),
        segment_number=SEGMENT_NUMBER,
        source_series=hd.sr.SourceSeriesForSegmentation(
            str(segmentation.ReferencedSeriesSequence[0].SeriesInstanceUID)
        ),
    )


def build_structured_report(
    event: InferenceCompleted,
    model: Algorithm,
    evidence: Sequence[Dataset],
    created: datetime,
    segmentation: Dataset | None = None,
) -> hd.sr.Comprehensive3DSR:
    """The TID 1500 SR of one model run, with `evidence` (the source instances) referenced;
    with the run's `segmentation` (segmentation.py), the segmented finding's group is a
    Volumetric ROI group (TID 1411) referencing its segment, and the SEG is evidence too."""
    if not evidence:
        raise PermanentError(
            f"no source instance metadata for the SR of {model.id} {model.version}; "
            "message dead-lettered"
        )
    algorithm = hd.sr.AlgorithmIdentification(
        name=_lo(model.id), version=_lo(model.version), manufacturer=_lo(model.manufacturer)
    )
    series_uid, sop_uid = sr_uids(event.study.study_instance_uid, model, event.model.generation)
    device_observer = hd.sr.ObserverContext(
        observer_type=DEVICE.dicom(),
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_observer_uid(model),
            name=_lo(model.id),
            manufacturer_name=_lo(model.manufacturer),
            model_name=_lo(model.id),
        ),
    )
    measured: dict[tuple[str, int], list[Finding]] = {}
    for finding in event.findings:
        depends_on = model.finding(finding.finding_key).depends_on
        if depends_on is not None:
            measured.setdefault((depends_on, finding.index), []).append(finding)
    source_sop_class_uid = str(evidence[0].SOPClassUID)
    groups = [
        _group(
            event,
            model,
            finding,
            measured=measured.get((finding.finding_key, finding.index), []),
            algorithm=algorithm,
            source_sop_class_uid=source_sop_class_uid,
            segment=_segment(segmentation) if finding.mask is not None else None,
        )
        for finding in event.findings
        if model.finding(finding.finding_key).value_type == "presence"
    ]
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device_observer),
        procedure_reported=procedure_reported(str(evidence[0].get("Modality") or "")).dicom(),
        imaging_measurements=groups,
    )
    equipment = hd.ContributingEquipment(
        manufacturer=_lo(model.manufacturer),
        purpose_of_reference=PROCESSING_EQUIPMENT.dicom(),
        manufacturer_model_name=_lo(model.id),
        software_versions=_lo(model.version),
        contribution_datetime=created,
        contribution_description=model.display[:1024],
    )
    try:
        structured_report = hd.sr.Comprehensive3DSR(
            evidence=[*evidence, *([segmentation] if segmentation is not None else [])],
            content=report,
            series_instance_uid=series_uid,
            series_number=SR_SERIES_NUMBER,
            sop_instance_uid=sop_uid,
            instance_number=1,
            manufacturer=RADMESH_MANUFACTURER,
            is_complete=True,
            is_final=False,
            is_verified=False,
            contributing_equipment=[equipment],
            series_description=_lo(f"AI results {model.id} v{model.version} (preliminary)"),
        )
    except (ValueError, TypeError, AttributeError) as error:
        # highdicom and pydicom quote the header value they refuse (a birth date, a name).
        raise PermanentError(
            f"SR of {model.id} {model.version} cannot be built: {without_quoted_values(str(error))}"
        ) from error
    return structured_report
