"""services.mapper.verified_report and rejection_note: what supersedes the AI's SR after a
radiologist's verdict (the verified SR; the IOCM rejection note)."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pydicom
from pydicom import Dataset
from pydicom.filewriter import dcmwrite

from services.mapper.rejection_note import rejection_note
from services.mapper.structured_report import build_structured_report, tracking_uid
from services.mapper.verified_report import (
    Amendment,
    verified_sr_uid,
    verified_structured_report,
)
from tests.dicom_sr import content_items
from tests.unit.services.test_mapper_structured_report import (
    MODEL,
    _event,
    evidence,
)

__all__ = ["evidence"]  # the module fixture, shared with the preliminary SR's tests

VERIFIED_AT = datetime(2026, 12, 1, 9, 30, 15, tzinfo=UTC)


def _preliminary(evidence: list[Dataset]) -> Dataset:
    return build_structured_report(_event(evidence), MODEL, evidence, created=VERIFIED_AT)


def _volumes(report: Dataset) -> list[str]:
    return [
        str(item.MeasuredValueSequence[0].NumericValue)
        for item in content_items(report)
        if item.get("ValueType") == "NUM"
        and item.ConceptNameCodeSequence[0].CodeValue
        == MODEL.finding("hemorrhage-volume").codes[0].code
    ]


def test_verified_sr_names_the_radiologist_and_its_predecessor_and_keeps_the_content(
    evidence: list[Dataset],
) -> None:
    """VERIFIED, COMPLETE, the Verifying Observer with organization and time, the preliminary
    SR as predecessor, a new instance (deterministic UID, next instance number) in the same
    series; the findings are as the AI reported them; it writes as a DICOM file."""
    preliminary = _preliminary(evidence)
    study = str(preliminary.StudyInstanceUID)
    uid = verified_sr_uid(study, MODEL)
    assert uid == verified_sr_uid(study, MODEL) != str(preliminary.SOPInstanceUID)
    verified, applied = verified_structured_report(
        preliminary,
        sop_instance_uid=uid,
        verifier_name="Adler^Rita",
        organization="Radiology, General Hospital",
        verified_at=VERIFIED_AT,
    )
    assert applied == []
    assert (verified.VerificationFlag, verified.CompletionFlag) == ("VERIFIED", "COMPLETE")
    (observer,) = verified.VerifyingObserverSequence
    assert str(observer.VerifyingObserverName) == "Adler^Rita"
    assert observer.VerifyingOrganization == "Radiology, General Hospital"
    assert observer.VerificationDateTime == "20261201093015"
    (predecessor,) = verified.PredecessorDocumentsSequence
    assert predecessor.StudyInstanceUID == study
    (series,) = predecessor.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == preliminary.SeriesInstanceUID
    assert series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == preliminary.SOPInstanceUID
    assert verified.SeriesInstanceUID == preliminary.SeriesInstanceUID
    assert verified.SOPInstanceUID == uid
    assert verified.InstanceNumber == int(preliminary.InstanceNumber) + 1
    assert _volumes(verified) == _volumes(preliminary) == ["7.5"]
    assert preliminary.VerificationFlag == "UNVERIFIED"  # the original is not touched
    buffer = io.BytesIO()
    dcmwrite(buffer, verified, enforce_file_format=True)
    buffer.seek(0)
    assert pydicom.dcmread(buffer).VerificationFlag == "VERIFIED"


def test_an_amended_measurement_is_corrected_in_its_group_and_an_unknown_one_is_reported(
    evidence: list[Dataset],
) -> None:
    """The volume of the hemorrhage's group becomes 5.25; an amendment naming a group the SR
    does not have is not applied, and the caller is told."""
    preliminary = _preliminary(evidence)
    study = str(preliminary.StudyInstanceUID)
    code = MODEL.finding("hemorrhage-volume").codes[0].code
    known = Amendment(tracking_uid(study, MODEL, "intracranial-hemorrhage", 0), code, 5.25)
    unknown = Amendment(tracking_uid(study, MODEL, "intracranial-hemorrhage", 7), code, 1.0)
    verified, applied = verified_structured_report(
        preliminary,
        sop_instance_uid=verified_sr_uid(study, MODEL),
        verifier_name="Adler^Rita",
        organization="Radiology",
        verified_at=VERIFIED_AT,
        amendments=[known, unknown],
    )
    assert applied == [known]
    assert _volumes(verified) == ["5.25"]
    assert _volumes(preliminary) == ["7.5"]


def test_a_rejection_is_an_iocm_rejection_note_referencing_the_ai_sr(
    evidence: list[Dataset],
) -> None:
    """Rejected: a Key Object Selection titled (113001, DCM) "Rejected for Quality Reasons" in
    the study, referencing the AI's SR, naming the radiologist and the reason; its UIDs are the
    same on every delivery; the reference has no Purpose of Reference (TID 2010 forbids one);
    it writes as a DICOM file."""
    preliminary = _preliminary(evidence)
    note = rejection_note(
        preliminary, MODEL, reason="False positive: calcified falx", verifier_name="Adler^Rita"
    )
    again = rejection_note(preliminary, MODEL, reason="x", verifier_name="Adler^Rita")
    assert (note.SeriesInstanceUID, note.SOPInstanceUID) == (
        again.SeriesInstanceUID,
        again.SOPInstanceUID,
    )
    assert note.Modality == "KO"
    assert note.StudyInstanceUID == preliminary.StudyInstanceUID
    assert note.ConceptNameCodeSequence[0].CodeValue == "113001"
    references = [
        item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        for item in content_items(note)
        if item.get("ValueType") == "COMPOSITE"
    ]
    assert references == [preliminary.SOPInstanceUID]
    assert not [
        item
        for item in content_items(note)
        if item.get("ValueType") == "COMPOSITE" and "ConceptNameCodeSequence" in item
    ]
    texts = [str(item.get("TextValue", "")) for item in content_items(note)]
    assert any("calcified falx" in text for text in texts)
    names = [str(item.get("PersonName", "")) for item in content_items(note)]
    assert "Adler^Rita" in names
    buffer = io.BytesIO()
    dcmwrite(buffer, note, enforce_file_format=True)
    assert buffer.tell() > 0
