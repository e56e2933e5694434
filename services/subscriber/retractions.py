"""What the subscriber hears that makes AI results stale, as study.retracted (retracting them is
the verification service's, services/verification/retractions.py; the codes: shared.iocm):

- the PACS deleted a study, some of its series or instances (the Orthanc plugin's signed
  "deleted" event, deploy/orthanc/README.md);
- a rejection note (an IOCM Key Object Selection) in the PACS rejects images of the study; it
  is read whenever the PACS says the study is stable, so a note stored after the images is seen;
- the ImagingStudy is now filed under another patient than the runs on it were (a FHIR hook for
  the corrected study): the runs of the previous patient are retracted, and the study is
  analysed afresh for the right one (`announce` passes over their claims).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.errors import InvalidMessage
from shared.iocm import IOCM_TITLES, SOURCE_CODES, RejectionNote
from shared.json_input import read_json
from shared.messages import DicomUid, StudyRef, StudyRetracted, validation_problems

__all__ = [
    "DeletedEvent",
    "deletion_retraction",
    "parse_deleted_event",
    "patient_change_retraction",
    "rejection_note_retractions",
]

# One event names at most this many series (a study with more is deleted whole).
MAX_SERIES = 1000


class DeletedEvent(BaseModel):
    """The PACS's "deleted" event (deploy/orthanc/README.md; no patient data in it)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: str = Field(min_length=8, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")
    emitted_at: datetime
    study_instance_uid: DicomUid
    whole_study: bool
    series_instance_uids: list[DicomUid] = Field(default=[], max_length=MAX_SERIES)

    @model_validator(mode="after")
    def _names_what_went(self) -> DeletedEvent:
        if not self.whole_study and not self.series_instance_uids:
            raise ValueError(
                "a deletion that is not of the whole study names its series (series_instance_uids)"
            )
        return self


def parse_deleted_event(body: bytes) -> DeletedEvent:
    try:
        return DeletedEvent.model_validate(read_json(body))
    except ValidationError as error:
        raise InvalidMessage(f"deleted event is invalid: {validation_problems(error)}") from error


def deletion_retraction(event: DeletedEvent) -> StudyRetracted:
    series = () if event.whole_study else tuple(event.series_instance_uids)
    what = "the whole study" if event.whole_study else f"{len(series)} series"
    return StudyRetracted(
        study=StudyRef(study_instance_uid=event.study_instance_uid),
        series_instance_uids=series,
        source="pacs-deleted",
        reason_code=SOURCE_CODES["pacs-deleted"],
        reason=f"the PACS deleted {what}",
    )


def rejection_note_retractions(
    study_instance_uid: str, notes: list[RejectionNote]
) -> list[StudyRetracted]:
    """One study.retracted per rejection note that rejects images (a note naming no series
    rejects nothing radmesh read)."""
    return [
        StudyRetracted(
            study=StudyRef(study_instance_uid=study_instance_uid),
            series_instance_uids=tuple(sorted(note.series_instance_uids))[:MAX_SERIES],
            source="pacs-rejection-note",
            reason_code=note.code,
            reason=(
                f'a rejection note titled "{IOCM_TITLES[note.code]}" rejects '
                f"{len(note.series_instance_uids)} series"
            ),
        )
        for note in notes
        if note.series_instance_uids
    ]


def patient_change_retraction(study: StudyRef) -> StudyRetracted:
    """The runs on the study that name another patient than `study.patient` are retracted."""
    return StudyRetracted(
        study=study,
        source="patient-changed",
        reason_code=SOURCE_CODES["patient-changed"],
        reason="the imaging study is now filed under another patient",
    )
