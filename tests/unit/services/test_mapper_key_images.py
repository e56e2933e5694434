"""services.mapper.key_images: the Key Object Selection listing the slices the AI's located
findings lie on, and its rejection together with the SR."""

from __future__ import annotations

import io

import highdicom as hd
import pydicom
import structlog
from pydicom import Dataset
from pydicom.filewriter import dcmwrite

from services.mapper.handlers import _encoded_structured_report
from services.mapper.key_images import key_image_selection, key_images_uids
from services.mapper.rejection_note import rejection_note
from tests.dicom_sr import content_items
from tests.unit.services.test_mapper_structured_report import MODEL, _event, _located, evidence
from tests.unit.services.test_mapper_verified_report import _preliminary

__all__ = ["evidence"]  # the module fixture, shared with the preliminary SR's tests


def _written(document: Dataset) -> Dataset:
    buffer = io.BytesIO()
    dcmwrite(buffer, document, enforce_file_format=True)
    buffer.seek(0)
    return hd.ko.KeyObjectSelectionDocument.from_dataset(pydicom.dcmread(buffer))


def test_key_images_are_the_slices_of_the_located_findings_titled_of_interest(
    evidence: list[Dataset],
) -> None:
    """A located bleed: one document in its study, titled (113000, DCM) "Of Interest", whose
    IMAGE references are the slice the bleed lies on, observed by the algorithm, naming the
    finding; read back by highdicom from its Part 10 bytes; the same UIDs on every delivery."""
    event = _located(evidence)
    document = key_image_selection(event, MODEL, evidence[0])
    assert document is not None
    series_uid, sop_uid = key_images_uids(event.study.study_instance_uid, MODEL)
    assert (document.SeriesInstanceUID, document.SOPInstanceUID) == (series_uid, sop_uid)
    assert document.Modality == "KO"
    assert document.StudyInstanceUID == evidence[0].StudyInstanceUID
    assert document.PatientID == evidence[0].PatientID
    read = _written(document)
    title = read.ConceptNameCodeSequence[0]
    assert (title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning) == (
        "113000",
        "DCM",
        "Of Interest",
    )
    images = [
        item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        for item in content_items(read)
        if item.get("ValueType") == "IMAGE"
    ]
    assert images == [evidence[0].SOPInstanceUID]
    assert not [i for i in content_items(read) if i.get("ValueType") == "COMPOSITE"]
    texts = " ".join(str(item.get("TextValue", "")) for item in content_items(read))
    assert "AI-selected key images (ich-reference 1)" in texts
    assert MODEL.finding("intracranial-hemorrhage").codes[0].display in texts
    referenced = read.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    assert [s.SeriesInstanceUID for s in referenced] == [evidence[0].SeriesInstanceUID]


def test_a_run_without_a_located_present_finding_lists_no_key_images(
    evidence: list[Dataset],
) -> None:
    """Unlocated (no centre): no document; a located finding that is absent: none either."""
    assert key_image_selection(_event(evidence), MODEL, evidence[0]) is None
    located = _located(evidence)
    absent = located.findings[0].model_copy(update={"present": False})
    quiet = located.model_copy(update={"findings": (absent, *located.findings[1:])})
    assert key_image_selection(quiet, MODEL, evidence[0]) is None


def test_the_rejection_note_rejects_the_sr_and_the_key_images_together(
    evidence: list[Dataset],
) -> None:
    """The IOCM note of a rejected run references its SR and its key-image selection, and
    lists both in its evidence: no key image of a rejected run keeps standing."""
    preliminary = _preliminary(evidence)
    selection = key_image_selection(_located(evidence), MODEL, evidence[0])
    assert selection is not None
    note = rejection_note(
        preliminary,
        MODEL,
        also_rejected=[selection],
        reason="False positive",
        verifier_name="Adler^Rita",
    )
    references = [
        item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        for item in content_items(note)
        if item.get("ValueType") == "COMPOSITE"
    ]
    assert references == [preliminary.SOPInstanceUID, selection.SOPInstanceUID]
    evidence_uids = {
        instance.ReferencedSOPInstanceUID
        for study in note.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for instance in series.ReferencedSOPSequence
    }
    assert evidence_uids == {preliminary.SOPInstanceUID, selection.SOPInstanceUID}


def test_key_images_that_cannot_be_listed_leave_the_sr_to_be_stored_alone(
    evidence: list[Dataset],
) -> None:
    """A header without an image size (so no IMAGE reference can be made): the SR's bytes are
    still there to store, the selection is left out, and the error says so in the log."""
    header = Dataset()
    header.update(evidence[0])
    del header.Rows
    with structlog.testing.capture_logs() as logs:
        report, encoded = _encoded_structured_report(
            _located(evidence), MODEL, [header, *evidence[1:]]
        )
    assert len(encoded) == 1
    assert pydicom.dcmread(io.BytesIO(encoded[0])).SOPInstanceUID == report.SOPInstanceUID
    (logged,) = [e for e in logs if e["event"] == "key_image_selection_not_stored"]
    assert logged["log_level"] == "error" and logged["action"] == "the SR is stored without it"
