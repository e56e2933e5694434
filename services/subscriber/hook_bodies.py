"""What inbound hooks may carry, validated before anything acts on it: an ImagingStudy (R4 rest-hook
with payload; notification Bundles are read by `notifications`), and the PACS stable-study event. A body
that does not fit is an InvalidMessage saying where (the caller gets a 400 OperationOutcome).

The JSON is read by `shared.json_input.read_json`: UTF-8, at most 64 levels deep, no lone
surrogates, no numbers Python cannot hold, no duplicate member names, and in the two FHIR bodies
no nulls (FHIR JSON has none), so that what passes here cannot fail later in the code that reads
it (e.g. `"series": null` iterated as a list)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from fhir.resources.R4B.imagingstudy import ImagingStudy
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import InvalidMessage
from shared.identifiers import fhir_reference_pattern
from shared.json_input import read_json
from shared.messages import DicomUid, validation_problems

__all__ = [
    "StableSeries",
    "StableStudyEvent",
    "imaging_study_of",
    "parse_imaging_study",
    "parse_stable_study_event",
]


_PATIENT = re.compile(fhir_reference_pattern("Patient"))
_ENDPOINT = re.compile(fhir_reference_pattern("Endpoint"))
_JSON_KINDS = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}


def _kind(value: Any) -> str:
    """What a JSON value is, in JSON's words."""
    return "null" if value is None else _JSON_KINDS.get(type(value), type(value).__name__)


def imaging_study_of(resource: Any) -> dict[str, Any]:
    """`resource` when it is an ImagingStudy valid against the FHIR structure, whose subject (if
    any) is a relative Patient reference and whose relative Endpoint references are well formed
    (InvalidMessage saying what is wrong otherwise). Both are read on the FHIR server before the
    study is announced (its Consents, its PACS address): a subject FHIR allows but radmesh does
    not analyse (a Group, another server's Patient) or a reference that is a path of its own
    must not reach those requests."""
    if not isinstance(resource, dict):
        raise InvalidMessage(f"body must be an ImagingStudy resource, not a JSON {_kind(resource)}")
    if "resourceType" not in resource:
        raise InvalidMessage("body must be an ImagingStudy resource: it has no resourceType")
    if resource["resourceType"] != "ImagingStudy":
        raise InvalidMessage(
            "body must be an ImagingStudy resource, not resourceType "
            f"{str(resource['resourceType'])[:40]!r}"
        )
    try:
        ImagingStudy.model_validate(resource)
    except ValidationError as error:
        raise InvalidMessage(f"ImagingStudy is invalid: {validation_problems(error)}") from error
    subject = (resource.get("subject") or {}).get("reference")
    if subject is not None and not _PATIENT.fullmatch(subject):
        raise InvalidMessage(
            "ImagingStudy subject.reference must be a relative Patient/<id> reference (radmesh "
            f"analyses patients' studies on this FHIR server): {subject[:80]!r}"
        )
    for index, endpoint in enumerate(resource.get("endpoint", [])):
        reference = str(endpoint.get("reference", ""))
        if reference.startswith("Endpoint/") and not _ENDPOINT.fullmatch(reference):
            raise InvalidMessage(
                f"ImagingStudy endpoint.{index}.reference is not an Endpoint/<id> reference: "
                f"{reference[:80]!r}"
            )
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
