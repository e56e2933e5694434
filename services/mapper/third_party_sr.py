"""Another AI product's TID 1500 Measurement Report → the findings and evidence of one run (pure,
no I/O), read with highdicom.

- Who made it (`makers`): the Contributing Equipment items of purpose Processing Equipment (IHE
  AI Results names the AI system there), then the SR's own General Equipment (Manufacturer,
  Manufacturer's Model Name, first Software Versions); the registry's `imports` says whether
  radmesh takes that product.
- Each measurement group (TID 1501 image-level, TID 1410 planar and TID 1411 volumetric ROI
  groups) whose Finding carries one of a presence finding's codes becomes that finding, its
  index the group's order among the same finding's groups. It is present unless a qualitative
  evaluation of the group says Absent (SCT 272519000 or 2667000); its probability is a
  measurement named DCM 122157 "Probability" (unit `1`, or `%`); each quantity finding that
  depends on it is a measurement of the group whose name carries one of its codes, in the
  registry's unit (another unit refuses the report: a value read in the wrong unit is worse
  than none). Its Tracking UID is the group's.
- Where: an SCOORD3D region's points (their mean) in its frame of reference, and the images
  the group, its region and its measurements name (source images, SCOORD's image).
- Evidence: the Current Requested Procedure Evidence Sequence, else Pertinent Other Evidence.

A group whose Finding no registry finding carries is left out and counted (`unmapped`); the
mapper logs it. A report that is no TID 1500 Measurement Report, or names one presence finding
of a single (not per-lesion) finding twice, is refused (`PermanentError`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import Comprehensive3DSRStorage, ComprehensiveSRStorage, EnhancedSRStorage

from shared.codes import (
    ABSENCE_FINDINGS,
    ABSENT,
    PROBABILITY,
    PROCESSING_EQUIPMENT,
    SCHEME_DESIGNATORS,
)
from shared.codes import Coding as StandardCoding
from shared.errors import PermanentError
from shared.messages import MAX_EVIDENCE_INSTANCES, EvidenceSeries, Finding
from shared.registry import Algorithm, Coding, FindingMapping
from shared.telemetry import without_quoted_values

__all__ = ["ProducingEquipment", "ReportContent", "makers", "read_measurement_report"]

_READERS: dict[str, Any] = {
    str(Comprehensive3DSRStorage): hd.sr.Comprehensive3DSR,
    str(ComprehensiveSRStorage): hd.sr.ComprehensiveSR,
    str(EnhancedSRStorage): hd.sr.EnhancedSR,
}
_ABSENT = {(SCHEME_DESIGNATORS[c.system], c.code) for c in (ABSENCE_FINDINGS, ABSENT)}
_PROBABILITY = (SCHEME_DESIGNATORS[PROBABILITY.system], PROBABILITY.code)
_PERCENT = "%"


@dataclass(frozen=True)
class ProducingEquipment:
    """The product an SR names as its maker."""

    manufacturer: str
    manufacturer_model_name: str
    software_version: str


@dataclass(frozen=True)
class ReportContent:
    """What one report says, in the registry's findings."""

    findings: tuple[Finding, ...]
    evidence: tuple[EvidenceSeries, ...]
    unmapped: int  # measurement groups whose Finding no registry finding carries


def _first(value: Any) -> str:
    """The first value of a possibly multi-valued DICOM attribute, as text ('' when empty)."""
    if value is None:
        return ""
    if isinstance(value, list | tuple | MultiValue):
        return str(value[0]).strip() if len(value) else ""
    return str(value).strip()


def makers(dataset: Dataset) -> list[ProducingEquipment]:
    """Who may have made the report, most specific first: the Contributing Equipment items
    whose purpose is Processing Equipment (DCM 109102; IHE AI Results names the AI system so;
    writers such as highdicom add themselves and the images' acquisition equipment too), then
    the SR's own General Equipment. Items naming no manufacturer and model are left out."""
    processing = _dicom_key(PROCESSING_EQUIPMENT)
    sources = [
        item
        for item in dataset.get("ContributingEquipmentSequence") or []
        if any(
            (str(code.get("CodingSchemeDesignator", "")), str(code.get("CodeValue", "")))
            == processing
            for code in item.get("PurposeOfReferenceCodeSequence") or []
        )
    ]
    found = []
    for source in [*sources, dataset]:
        manufacturer = _first(source.get("Manufacturer"))
        model_name = _first(source.get("ManufacturerModelName"))
        if manufacturer and model_name:
            maker = ProducingEquipment(
                manufacturer, model_name, _first(source.get("SoftwareVersions"))
            )
            if maker not in found:
                found.append(maker)
    return found


def _key(concept: Any) -> tuple[str, str]:
    return str(concept.scheme_designator), str(concept.value)


def _codes(mapping: FindingMapping) -> set[tuple[str, str]]:
    return {_coded(coding) for coding in mapping.codes}


def _coded(coding: Coding) -> tuple[str, str]:
    return SCHEME_DESIGNATORS[coding.system], coding.code


def _dicom_key(coding: StandardCoding) -> tuple[str, str]:
    return SCHEME_DESIGNATORS[coding.system], coding.code


def _content(dataset: Dataset) -> hd.sr.MeasurementReport:
    reader = _READERS.get(str(dataset.get("SOPClassUID", "")))
    if reader is None:
        raise PermanentError(
            f"SOP class {dataset.get('SOPClassUID')} cannot hold a TID 1500 Measurement Report; "
            "message dead-lettered"
        )
    try:
        content = reader.from_dataset(dataset, copy=False).content
    except (ValueError, TypeError, AttributeError, KeyError) as error:
        raise PermanentError(
            "the SR is no TID 1500 Measurement Report highdicom can read: "
            f"{without_quoted_values(str(error))}; message dead-lettered"
        ) from error
    if not isinstance(content, hd.sr.MeasurementReport):
        raise PermanentError("the SR's content is no TID 1500 Measurement Report")
    return content


def _groups(content: hd.sr.MeasurementReport) -> list[Any]:
    return [
        *content.get_image_measurement_groups(),
        *content.get_planar_roi_measurement_groups(),
        *content.get_volumetric_roi_measurement_groups(),
    ]


def _present(group: Any) -> bool:
    return not any(
        evaluation.value is not None and _key(evaluation.value) in _ABSENT
        for evaluation in group.get_qualitative_evaluations()
    )


def _probability(group: Any) -> float | None:
    for measurement in group.get_measurements():
        if _key(measurement.name) != _PROBABILITY:
            continue
        value = float(measurement.value)
        if measurement.unit is not None and str(measurement.unit.value) == _PERCENT:
            value /= 100
        if not 0 <= value <= 1:
            raise PermanentError(f"the SR states a probability of {value:g}, outside 0–1")
        return value
    return None


def _image_uids(item: Dataset) -> list[str]:
    """SOP Instance UIDs of the IMAGE content items under `item` (and `item` itself)."""
    found = [
        str(reference.ReferencedSOPInstanceUID)
        for reference in item.get("ReferencedSOPSequence") or []
        if item.get("ValueType") == "IMAGE"
    ]
    for child in item.get("ContentSequence") or []:
        found += _image_uids(child)
    return found


def _location(group: Any) -> tuple[tuple[float, float, float] | None, str | None, list[str]]:
    """(centre in patient coordinates, its frame of reference, the images named) of a group."""
    images: list[str] = []
    for source in getattr(group, "source_images", None) or []:
        images.append(str(source.referenced_sop_instance_uid))
    for measurement in group.get_measurements():
        images += [
            str(image.referenced_sop_instance_uid) for image in measurement.referenced_images
        ]
    region = getattr(group, "roi", None)
    centre, frame = None, None
    if isinstance(region, hd.sr.ImageRegion3D):
        points = np.asarray(region.value, dtype=np.float64).reshape(-1, 3)
        mean = points.mean(axis=0)
        centre = (float(mean[0]), float(mean[1]), float(mean[2]))
        frame = str(region.frame_of_reference_uid)
    elif region is not None:
        images += _image_uids(region)
    return centre, frame, list(dict.fromkeys(images))


def _evidence(dataset: Dataset) -> tuple[EvidenceSeries, ...]:
    studies = dataset.get("CurrentRequestedProcedureEvidenceSequence") or dataset.get(
        "PertinentOtherEvidenceSequence"
    )
    by_series: dict[tuple[str, str], list[str]] = {}
    for study in studies or []:
        for series in study.get("ReferencedSeriesSequence") or []:
            for instance in series.get("ReferencedSOPSequence") or []:
                key = (str(series.SeriesInstanceUID), str(instance.ReferencedSOPClassUID))
                by_series.setdefault(key, []).append(str(instance.ReferencedSOPInstanceUID))
    return tuple(
        EvidenceSeries(
            series_instance_uid=series_uid,
            sop_class_uid=sop_class_uid,
            sop_instance_uids=tuple(uids[:MAX_EVIDENCE_INSTANCES]),
        )
        for (series_uid, sop_class_uid), uids in list(by_series.items())[:16]
    )


def _series_of(evidence: Sequence[EvidenceSeries], images: list[str]) -> str | None:
    for series in evidence:
        if set(images) & set(series.sop_instance_uids):
            return series.series_instance_uid
    return evidence[0].series_instance_uid if len(evidence) == 1 else None


def _quantities(
    algorithm: Algorithm, presence: FindingMapping, group: Any, base: dict[str, Any]
) -> list[Finding]:
    found: list[Finding] = []
    for mapping in algorithm.findings:
        if mapping.depends_on != presence.key:
            continue
        for measurement in group.get_measurements():
            if _key(measurement.name) not in _codes(mapping):
                continue
            unit = str(measurement.unit.value) if measurement.unit is not None else ""
            if unit != mapping.unit:
                raise PermanentError(
                    f"the SR measures {mapping.key} in {unit or 'no unit'!r}, the registry "
                    f"maps it in {mapping.unit!r}; message dead-lettered (a value in the wrong "
                    "unit is worse than none)"
                )
            found.append(
                Finding(**base, finding_key=mapping.key, value=float(measurement.value), unit=unit)
            )
            break
    return found


def read_measurement_report(dataset: Dataset, algorithm: Algorithm) -> ReportContent:
    """The findings `algorithm`'s report states, in the registry's terms (see the module)."""
    content = _content(dataset)
    evidence = _evidence(dataset)
    presence = [mapping for mapping in algorithm.findings if mapping.value_type == "presence"]
    findings: list[Finding] = []
    counts: dict[str, int] = {}
    unmapped = 0
    for group in _groups(content):
        finding_type = group.finding_type
        mapping = next(
            (m for m in presence if finding_type is not None and _key(finding_type) in _codes(m)),
            None,
        )
        if mapping is None:
            unmapped += 1
            continue
        index = counts.get(mapping.key, 0)
        if index and not mapping.per_lesion:
            raise PermanentError(
                f"the SR reports {mapping.key} in more than one measurement group, and the "
                "registry maps it as one finding (not per lesion); message dead-lettered"
            )
        counts[mapping.key] = index + 1
        centre, frame, images = _location(group)
        tracking = group.tracking_uid
        base: dict[str, Any] = {
            "index": index,
            "present": _present(group),
            "center_patient": centre if frame is not None else None,
            "frame_of_reference_uid": frame,
            "series_instance_uid": _series_of(evidence, images),
            "sop_instance_uids": tuple(images),
            "tracking_uid": str(tracking) if tracking is not None else None,
        }
        findings.append(Finding(**base, finding_key=mapping.key, probability=_probability(group)))
        if base["present"]:
            findings += _quantities(algorithm, mapping, group, base)
    return ReportContent(tuple(findings), evidence, unmapped)
