"""A radiologist's rejection → an IHE IOCM rejection note for the AI's SR (pure, no I/O).

When the AI's results are rejected, its SR must not keep standing in the PACS as if it were a
report. IHE Imaging Object Change Management says how a PACS is told: a Key Object Selection
document titled (113001, DCM, "Rejected for Quality Reasons") that references the rejected
instances: the SR and the run's key-image selection (key_images.py); a PACS that honours IOCM
hides both. The note names the radiologist as the observer and carries the coded reason's words. Its UIDs derive from the run, so a
redelivered finding.rejected stores the same instance.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from pydicom import Dataset

from services.mapper.object_uids import run_object_uids
from services.mapper.structured_report import device_observer_uid
from shared.codes import DEVICE, IOCM_REJECTION_TITLES, PERSON
from shared.iocm import QUALITY, RADMESH_MANUFACTURER
from shared.registry import Algorithm

__all__ = [
    "REJECTED_FOR_QUALITY_REASONS",
    "REJECTION_SERIES_NUMBER",
    "REJECTION_TITLES",
    "key_object_document",
    "rejection_note",
    "rejection_note_uids",
]

# IOCM's document titles (DICOM CID 7010), from shared.codes.
REJECTION_TITLES = {title.code: title.dicom() for title in IOCM_REJECTION_TITLES}
REJECTED_FOR_QUALITY_REASONS = REJECTION_TITLES[QUALITY]
REJECTION_SERIES_NUMBER = 9002
_REFERENCE_VALUE_TYPES = {"IMAGE", "COMPOSITE", "WAVEFORM"}


def rejection_note_uids(
    study_instance_uid: str, model: Algorithm, generation: int = 1
) -> tuple[str, str]:
    """(SeriesInstanceUID, SOPInstanceUID) of the rejection note of one run."""
    return run_object_uids("radmesh-iocm", study_instance_uid, model, generation)


def rejection_note(
    rejected: Dataset,
    model: Algorithm,
    *,
    also_rejected: Sequence[Dataset] = (),
    reason: str,
    verifier_name: str | None,
    generation: int = 1,
    title: str = QUALITY,
) -> Dataset:
    """The Key Object Selection rejecting `rejected` (the AI's SR) and `also_rejected` (what
    stands on it: the run's key-image selection and SEG), in its study: by the radiologist
    `verifier_name`, or (None) by radmesh itself because the images the AI read were retracted,
    under the IOCM `title` code that says why."""
    series_uid, sop_uid = rejection_note_uids(str(rejected.StudyInstanceUID), model, generation)
    if verifier_name is None:
        observer = hd.sr.ObserverContext(
            observer_type=DEVICE.dicom(),
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=device_observer_uid(model),
                name="radmesh",
            ),
        )
        description = f"AI result retracted: {reason}"
    else:
        observer = hd.sr.ObserverContext(
            observer_type=PERSON.dicom(),
            observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
                name=verifier_name
            ),
        )
        description = f"AI result rejected by the radiologist: {reason}"
    content = hd.ko.KeyObjectSelection(
        document_title=REJECTION_TITLES[title],
        referenced_objects=[rejected, *also_rejected],
        observer_person_context=observer if verifier_name is not None else None,
        observer_device_context=observer if verifier_name is None else None,
        description=description[:1024],
    )
    return key_object_document(
        content,
        [rejected, *also_rejected],
        uids=(series_uid, sop_uid),
        series_number=REJECTION_SERIES_NUMBER,
    )


def key_object_document(
    content: hd.ko.KeyObjectSelection,
    evidence: Sequence[Dataset],
    *,
    uids: tuple[str, str],
    series_number: int,
) -> hd.ko.KeyObjectSelectionDocument:
    """A Key Object Selection document radmesh stores (the rejection note, the key images):
    its (SeriesInstanceUID, SOPInstanceUID) `uids`, radmesh as Manufacturer (how the subscriber
    knows its own objects), the references as TID 2010 wants them."""
    document = hd.ko.KeyObjectSelectionDocument(
        evidence=list(evidence),
        content=content,
        series_instance_uid=uids[0],
        series_number=series_number,
        sop_instance_uid=uids[1],
        instance_number=1,
        manufacturer=RADMESH_MANUFACTURER,
    )
    _without_purpose_of_reference(document)
    return document


def _without_purpose_of_reference(note: Dataset) -> None:
    """TID 2010 (Key Object Selection) forbids a Purpose of Reference on the referenced objects;
    highdicom names each one SCT "Source" (PS3.3 C.17.3 allows a generic name elsewhere), which
    PixelMed's validator reports as an error: the name is taken off."""
    for item in note.ContentSequence:
        if item.ValueType in _REFERENCE_VALUE_TYPES and "ConceptNameCodeSequence" in item:
            del item.ConceptNameCodeSequence
