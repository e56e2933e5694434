"""What inbound hooks may carry, validated before anything acts on it: an ImagingStudy (R4 rest-hook
with payload; notification Bundles are read by `notifications`), and the PACS stable-study event. A body
that does not fit is an InvalidMessage saying where (the caller gets a 400 OperationOutcome).

The JSON is read by `shared.json_input.read_json`: UTF-8, at most 64 levels deep, no lone
surrogates, no numbers Python cannot hold, no duplicate member names, and in the two FHIR bodies
no nulls (FHIR JSON has none), so that what passes here cannot fail later in the code that reads
it (e.g. `"series": null` iterated as a list)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fhir.resources.R4B.imagingstudy import ImagingStudy
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import InvalidMessage
from shared.json_input import read_json
from shared.messages import DicomUid, validation_problems

__all__ = [
    "StableSeries",
    "StableStudyEvent",
    "imaging_study_of",
    "parse_imaging_study",
    "parse_stable_study_event",
]


def imaging_study_of(resource: Any) -> dict[str, Any]:
    """`resource` when it is an ImagingStudy valid against the FHIR structure (InvalidMessage
    saying what is wrong otherwise)."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "ImagingStudy":
        raise InvalidMessage("body must be an ImagingStudy resource")
    try:
        ImagingStudy.model_validate(resource)
    except ValidationError as error:
        raise InvalidMessage(f"ImagingStudy is invalid: {validation_problems(error)}") from error
    return resource


def parse_imaging_study(body: bytes) -> dict[str, Any]:
    """The ImagingStudy of a rest-hook with payload, checked against the FHIR structure."""
    return imaging_study_of(read_json(body, fhir=True))


class StableSeries(BaseModel):
    """One series of a stable-study event (deploy/orthanc/README.md)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    series_instance_uid: str = Field(min_length=1)
    modality: str | None = None
    series_number: int | None = None
    series_description: str | None = None
    instance_count: int = Field(default=0, ge=0)


class StableStudyEvent(BaseModel):
    """The PACS's stable-study event (deploy/orthanc/README.md; no patient data in it)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    # signed with the rest of the body: what the replay protection checks (hook_auth.ReplayGuard)
    event_id: str = Field(min_length=8, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")
    emitted_at: datetime
    study_instance_uid: DicomUid  # it goes into QIDO-RS paths and queries
    accession_number: str | None = None
    modalities: list[str] = []
    series_count: int | None = Field(default=None, ge=0)
    instance_count: int | None = Field(default=None, ge=0)
    series: list[StableSeries] = []
    dicomweb_root: str | None = None


def parse_stable_study_event(body: bytes) -> StableStudyEvent:
    """The PACS's event; a null where a list is expected (series, modalities) is refused."""
    try:
        return StableStudyEvent.model_validate(read_json(body))
    except ValidationError as error:
        raise InvalidMessage(
            f"stable-study event is invalid: {validation_problems(error)}"
        ) from error
