"""services.mapper.structured_report: the TID 1500 SR of a run, from synthetic evidence."""

from __future__ import annotations

import copy
import io
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from pydicom import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.sr.codedict import codes
from pydicom.valuerep import DT, TM

from samples.dicom_series import describe_study, iter_instances
from samples.phantoms import head_ct
from services.mapper.structured_report import (
    build_structured_report,
    dataset_from_metadata,
    evidence_from_manifest,
    sr_uids,
    tracking_uid,
)
from shared.codes import PROBABILITY
from shared.errors import PermanentError
from shared.messages import EvidenceSeries, Finding, InferenceCompleted, ModelRef, StudyRef
from shared.registry import load_registry
from tests.dicom_sr import content_items

REGISTRY = load_registry(Path(__file__).resolve().parents[3] / "registry" / "models.yaml")
MODEL = REGISTRY.get("ich-reference", "1")


@pytest.fixture(scope="module")
def evidence() -> list[Dataset]:
    """Two slices of a small synthetic head CT, as WADO-RS metadata would give them."""
    phantom = head_ct(seed=5, slices=8, size=32)
    info = describe_study(phantom, scenario="mapper-sr-unit", seed=5)
    slices = list(iter_instances(phantom, info))[:2]
    return [dataset_from_metadata(ds.to_json_dict()) for ds in slices]


def _event(evidence: list[Dataset]) -> InferenceCompleted:
    first = evidence[0]
    return InferenceCompleted(
        study=StudyRef(study_instance_uid=str(first.StudyInstanceUID)),
        model=ModelRef(id=MODEL.id, version=MODEL.version),
        findings=(
            Finding(
                finding_key="intracranial-hemorrhage",
                present=True,
                probability=0.88,
                series_instance_uid=str(first.SeriesInstanceUID),
                sop_instance_uids=(str(first.SOPInstanceUID),),
            ),
            Finding(finding_key="hemorrhage-volume", present=True, value=7.5, unit="mL"),
        ),
        inference_duration_ms=12.0,
    )


def test_sr_uids_are_deterministic_per_study_model_and_version() -> None:
    """Same study + model + version → same series and SOP UIDs; another study → others."""
    assert sr_uids("1.2.3", MODEL) == sr_uids("1.2.3", MODEL)
    assert sr_uids("1.2.3", MODEL) != sr_uids("1.2.4", MODEL)
    series_uid, sop_uid = sr_uids("1.2.3", MODEL)
    assert series_uid != sop_uid


def test_sr_is_a_tid_1500_comprehensive_3d_sr_in_the_source_study(
    evidence: list[Dataset],
) -> None:
    """The SR is Comprehensive 3D SR, titled Imaging Measurement Report, in the source study,
    with the deterministic UIDs, the source instances as evidence and the algorithm in the
    Contributing Equipment Sequence; it survives a Part 10 round trip."""
    event = _event(evidence)
    report = build_structured_report(event, MODEL, evidence, created=event.created_at)
    buffer = io.BytesIO()
    dcmwrite(buffer, report, enforce_file_format=True)
    stored = pydicom.dcmread(io.BytesIO(buffer.getvalue()))
    assert stored.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"
    assert stored.Modality == "SR"
    assert stored.StudyInstanceUID == evidence[0].StudyInstanceUID
    assert (stored.SeriesInstanceUID, stored.SOPInstanceUID) == sr_uids(
        str(evidence[0].StudyInstanceUID), MODEL
    )
    assert stored.ConceptNameCodeSequence[0].CodeValue == "126000"
    referenced = {
        item.ReferencedSOPInstanceUID
        for study in stored.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert referenced == {str(ds.SOPInstanceUID) for ds in evidence}
    assert ("ich-reference", "1", "109102") in {
        (
            item.ManufacturerModelName,
            item.SoftwareVersions,
            item.PurposeOfReferenceCodeSequence[0].CodeValue,
        )
        for item in stored.ContributingEquipmentSequence
    }


def test_sr_groups_hold_finding_presence_probability_volume_and_algorithm(
    evidence: list[Dataset],
) -> None:
    """One measurement group for the bleed: finding type ICH, evaluation Present, probability
    0.88 (unit 1), volume 7.5 mL, and the algorithm name and version."""
    event = _event(evidence)
    report = build_structured_report(event, MODEL, evidence, created=event.created_at)
    items = content_items(report)
    values = {
        item.ConceptNameCodeSequence[0].CodeMeaning: item
        for item in items
        if "ConceptNameCodeSequence" in item
    }
    assert values["Finding"].ConceptCodeSequence[0].CodeValue == "1386000"
    assert values["Intracranial hemorrhage"].ConceptCodeSequence[0].CodeValue == "52101004"
    probability = values["Probability"].MeasuredValueSequence[0]
    assert float(probability.NumericValue) == 0.88
    assert probability.MeasurementUnitsCodeSequence[0].CodeValue == "1"
    volume = values["Volume"].MeasuredValueSequence[0]
    assert float(volume.NumericValue) == 7.5
    assert volume.MeasurementUnitsCodeSequence[0].CodeValue == "mL"
    assert values["Algorithm Name"].TextValue == "ich-reference"
    assert values["Algorithm Version"].TextValue == "1"
    groups = [i for i in items if i.ConceptNameCodeSequence[0].CodeValue == "125007"]
    assert len(groups) == 1


def test_sr_procedure_reported_is_cid_100_and_absent_is_cid_240(
    evidence: list[Dataset],
) -> None:
    """Procedure Reported is DICOM CID 100's (LN 25045-6 "CT unspecified body region" for a CT
    study), not the registry's LOINC report code; an absent bleed is evaluated SCT 272519000
    "Absent" (CID 240)."""
    event = _event(evidence)
    absent = event.findings[0].model_copy(update={"present": False, "probability": 0.1})
    event = event.model_copy(update={"findings": (absent,)})
    items = content_items(build_structured_report(event, MODEL, evidence, event.created_at))
    values = {
        item.ConceptNameCodeSequence[0].CodeMeaning: item.ConceptCodeSequence[0]
        for item in items
        if "ConceptNameCodeSequence" in item and "ConceptCodeSequence" in item
    }
    procedure = values["Procedure reported"]
    assert (procedure.CodeValue, procedure.CodingSchemeDesignator, procedure.CodeMeaning) == (
        "25045-6",
        "LN",
        "CT unspecified body region",
    )
    evaluation = values["Intracranial hemorrhage"]
    assert (evaluation.CodeValue, evaluation.CodeMeaning) == ("272519000", "Absent")


def test_sr_without_evidence_is_a_permanent_error() -> None:
    """No source metadata (the series is not in the PACS) → PermanentError, no SR."""
    event = InferenceCompleted(
        study=StudyRef(study_instance_uid="1.2.3"),
        model=ModelRef(id=MODEL.id, version=MODEL.version),
        findings=(Finding(finding_key="intracranial-hemorrhage", present=False),),
        inference_duration_ms=1.0,
    )
    with pytest.raises(PermanentError, match="no source instance metadata"):
        build_structured_report(event, MODEL, [], created=event.created_at)


def test_sr_whose_evidence_header_is_refused_says_why_without_quoting_the_value(
    evidence: list[Dataset],
) -> None:
    """A modality that wrote the birth date as 1950-01-31 (not DICOM DA): highdicom refuses to
    copy it; the PermanentError (logged by the mapper) says what could not be converted, not
    the birth date."""
    sloppy = [copy.deepcopy(dataset) for dataset in evidence]  # the fixture stays as it is
    event = _event(sloppy)
    with (
        pytest.warns(UserWarning, match="Invalid value for VR DA"),  # pydicom's, on assignment
        pytest.raises(PermanentError, match="cannot be built: Unable to convert") as raised,
    ):
        for dataset in sloppy:
            dataset.PatientBirthDate = "1950-01-31"
        build_structured_report(event, MODEL, sloppy, created=event.created_at)
    assert "1950" not in str(raised.value)


def test_an_sr_from_the_manifest_equals_the_sr_from_every_instances_metadata() -> None:
    """The evidence built from the inference service's manifest (one instance's metadata, the
    other instances as UIDs) gives the same SR, byte for byte, as one pydicom Dataset per
    instance from the series' full WADO-RS metadata (the clock's times aside)."""
    phantom = head_ct(seed=6, slices=12, size=32)
    info = describe_study(phantom, scenario="mapper-sr-manifest", seed=6)
    slices = [dataset_from_metadata(ds.to_json_dict()) for ds in iter_instances(phantom, info)]
    event = _event(slices).model_copy(
        update={
            "evidence": (
                EvidenceSeries(
                    series_instance_uid=str(slices[0].SeriesInstanceUID),
                    sop_class_uid=str(slices[0].SOPClassUID),
                    sop_instance_uids=tuple(str(ds.SOPInstanceUID) for ds in slices),
                ),
            )
        }
    )
    from_manifest = evidence_from_manifest(
        slices[0], str(slices[0].StudyInstanceUID), event.evidence
    )
    assert len(from_manifest) == len(slices)
    encoded = []
    for evidence in (slices, from_manifest):
        buffer = io.BytesIO()
        report = build_structured_report(event, MODEL, evidence, created=event.created_at)
        report.InstanceCreationTime = report.ContentTime = TM("120000")
        for equipment in report.ContributingEquipmentSequence:
            equipment.ContributionDateTime = DT("20261201120000")
        dcmwrite(buffer, report, enforce_file_format=True)
        encoded.append(buffer.getvalue())
    assert encoded[0] == encoded[1]


def _read_back(report: Dataset) -> hd.sr.MeasurementReport:
    """The SR's TID 1500 content as highdicom reads it from the Part 10 bytes."""
    buffer = io.BytesIO()
    dcmwrite(buffer, report, enforce_file_format=True)
    content = hd.sr.srread(io.BytesIO(buffer.getvalue())).content
    assert isinstance(content, hd.sr.MeasurementReport)
    return content


def _located(evidence: list[Dataset]) -> InferenceCompleted:
    """The bleed of `_event`, located: centre at (12.5, -20, 31.25) mm in the series' frame."""
    event = _event(evidence)
    bleed = event.findings[0].model_copy(
        update={
            "center_voxel": (1.0, 10.0, 12.0),
            "center_patient": (12.5, -20.0, 31.25),
            "frame_of_reference_uid": str(evidence[0].FrameOfReferenceUID),
        }
    )
    return event.model_copy(update={"findings": (bleed, *event.findings[1:])})


def test_a_located_finding_is_a_planar_roi_group_with_its_centre_as_an_scoord3d_point(
    evidence: list[Dataset],
) -> None:
    """Read back with highdicom: the bleed's group is TID 1410 with an SCOORD3D POINT at its
    centre in the series' frame of reference (purpose "Center of Mass"), its tracking UID the
    run's, its probability inferred from the IMAGE of the slice it lies on; its volume is in the
    same group."""
    event = _located(evidence)
    report = build_structured_report(event, MODEL, evidence, created=event.created_at)
    stored = _read_back(report)
    assert stored.get_image_measurement_groups() == []
    (group,) = stored.get_planar_roi_measurement_groups()
    region = group.roi
    assert isinstance(region, hd.sr.Scoord3DContentItem)
    assert region.graphic_type == hd.sr.GraphicTypeValues3D.POINT
    assert region.value.tolist() == [[12.5, -20.0, 31.25]]
    assert region.frame_of_reference_uid == evidence[0].FrameOfReferenceUID
    assert group.tracking_uid == tracking_uid(
        event.study.study_instance_uid, MODEL, "intracranial-hemorrhage", 0
    )
    purposes = [
        item.ConceptCodeSequence[0].CodeValue
        for item in content_items(report)
        if item.ConceptNameCodeSequence[0].CodeValue == "130400"  # Geometric purpose of region
    ]
    assert purposes == ["128138"]
    probability = group.get_measurements(name=PROBABILITY.dicom())[0]
    (image,) = probability.referenced_images
    assert image.referenced_sop_instance_uid == evidence[0].SOPInstanceUID
    assert [float(m.value) for m in group.get_measurements(name=codes.SCT.Volume)] == [7.5]


def test_an_unlocated_finding_keeps_a_tid_1501_group_naming_its_slices(
    evidence: list[Dataset],
) -> None:
    """Without a centre in patient coordinates there is no region to draw: the group is TID
    1501 with the slice as its source image."""
    event = _event(evidence)
    report = build_structured_report(event, MODEL, evidence, created=event.created_at)
    stored = _read_back(report)
    assert stored.get_planar_roi_measurement_groups() == []
    (group,) = stored.get_image_measurement_groups()
    (image,) = group.source_images
    assert image.referenced_sop_instance_uid == evidence[0].SOPInstanceUID
