"""IHE Imaging Object Change Management (IOCM): why AI results are retracted.

When the PACS deletes the images a run read, a Key Object Selection "rejection note" stored to
the PACS rejects them, or the study's patient changes, the AI results made from those images
are wrong or unsupported: radmesh retracts them (services/verification/retractions.py). The
reason travels as a DICOM code of CID 7010 (the rejection note's document title; the codes are in
shared.codes), one table for every service:

- a rejection note carries its own title;
- a deletion in the PACS is taken as (113037, "Rejected for Patient Safety Reasons"): the result
  no longer has its evidence;
- a changed patient of the ImagingStudy is (113038, "Incorrect Modality Worklist Entry"), IOCM's
  code for images filed under the wrong patient or order;
- an operator's re-analysis (`radmesh rerun`) is (113001, "Rejected for Quality Reasons"): the
  earlier results are superseded, and two live AI reports of one study must not disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, cast

from shared.codes import (
    DCM,
    INCORRECT_MODALITY_WORKLIST_ENTRY,
    IOCM_REJECTION_TITLES,
    REJECTED_FOR_PATIENT_SAFETY_REASONS,
    REJECTED_FOR_QUALITY_REASONS,
    SCHEME_DESIGNATORS,
    IocmCode,
)

__all__ = [
    "IOCM_TITLES",
    "KEY_OBJECT_SELECTION_MODALITY",
    "QUALITY",
    "RADMESH_MANUFACTURER",
    "SOURCE_CODES",
    "IocmCode",
    "RejectionNote",
    "RetractionSource",
    "reason_coding",
    "rejected_series",
    "rejection_notes",
]

QUALITY = cast(IocmCode, REJECTED_FOR_QUALITY_REASONS.code)
IOCM_TITLES: dict[str, str] = {title.code: title.display for title in IOCM_REJECTION_TITLES}
RetractionSource = Literal[
    "pacs-deleted", "pacs-rejection-note", "patient-changed", "operator-rerun"
]
# The code a retraction carries when its source has no title of its own.
SOURCE_CODES: dict[RetractionSource, IocmCode] = {
    "pacs-deleted": cast(IocmCode, REJECTED_FOR_PATIENT_SAFETY_REASONS.code),
    "patient-changed": cast(IocmCode, INCORRECT_MODALITY_WORKLIST_ENTRY.code),
    "operator-rerun": QUALITY,
}


# radmesh's own notes reject radmesh's SRs (services/mapper/rejection_note.py), never images.
RADMESH_MANUFACTURER = "radmesh"
KEY_OBJECT_SELECTION_MODALITY = "KO"


@dataclass(frozen=True)
class RejectionNote:
    """A Key Object Selection in the PACS whose title is an IOCM rejection reason, and the
    series whose instances it rejects."""

    sop_instance_uid: str
    code: IocmCode
    series_instance_uids: frozenset[str]


def _values(dataset: dict[str, Any], tag: str) -> list[Any]:
    return list((dataset.get(tag) or {}).get("Value") or [])


def rejection_notes(metadata: list[dict[str, Any]]) -> list[RejectionNote]:
    """The rejection notes among the instances of a KO series (WADO-RS metadata, DICOM JSON):
    title (Concept Name Code Sequence, 0040A043) a code of IOCM_TITLES in scheme DCM, the
    rejected series from the Current Requested Procedure Evidence Sequence (0040A375). radmesh's
    own notes (Manufacturer radmesh) are left out."""
    notes = []
    for instance in metadata:
        if RADMESH_MANUFACTURER in _values(instance, "00080070"):
            continue
        titles = _values(instance, "0040A043")
        title = titles[0] if titles and isinstance(titles[0], dict) else {}
        code = next(iter(_values(title, "00080100")), None)
        scheme = next(iter(_values(title, "00080102")), None)
        if code not in IOCM_TITLES or scheme != SCHEME_DESIGNATORS[DCM]:
            continue
        series = {
            str(uid)
            for study in _values(instance, "0040A375")
            if isinstance(study, dict)
            for referenced in _values(study, "00081115")
            if isinstance(referenced, dict)
            for uid in _values(referenced, "0020000E")
        }
        sop = next(iter(_values(instance, "00080018")), "")
        notes.append(RejectionNote(str(sop), cast(IocmCode, code), frozenset(series)))
    return notes


def rejected_series(notes: list[RejectionNote]) -> frozenset[str]:
    """Every series some rejection note rejects."""
    return frozenset(uid for note in notes for uid in note.series_instance_uids)


def reason_coding(code: str) -> dict[str, str]:
    """The FHIR Coding of an IOCM reason code."""
    return {"system": DCM, "code": code, "display": IOCM_TITLES[code]}
