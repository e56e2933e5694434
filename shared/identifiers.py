"""Deterministic business identifiers of everything radmesh writes (DESIGN: exactly-once effects).

Each resource radmesh creates carries one identifier `system|value`; every write is a conditional
create on it, so a redelivered message, a repeated hook or a replayed dead letter finds the
existing resource instead of creating a second one. Values join their parts with "/".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ANALYSIS_CLAIM_SYSTEM",
    "DICOM_IMAGE_EXTENSION",
    "DICOM_UID_MAX_LENGTH",
    "DICOM_UID_PATTERN",
    "DICOM_UID_SYSTEM",
    "FHIR_DATETIME_PATTERN",
    "FHIR_ID_PATTERN",
    "FindingValue",
    "StudyRun",
    "business_identifier",
    "fhir_reference_pattern",
    "is_dicom_uid",
    "radmesh_identifier_value",
    "radmesh_system",
    "run_parts",
    "study_run_value",
]

DICOM_UID_SYSTEM = "urn:dicom:uid"  # ImagingStudy.identifier value: urn:oid:<StudyInstanceUID>
# The subscriber's claim of one model's run on one study (a Task; value: study_run_value)
ANALYSIS_CLAIM_SYSTEM = "urn:radmesh:analysis-claim"
# The Observation extension naming the DICOM series, instances and centre voxel of a finding.
DICOM_IMAGE_EXTENSION = "urn:radmesh:extension:dicom-image-reference"

# DICOM PS3.5 §9.1: numeric components separated by ".", no leading zeros, at most 64 characters.
DICOM_UID_PATTERN = r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$"
DICOM_UID_MAX_LENGTH = 64
# FHIR R4 id (datatypes: id): 1-64 characters of A-Z a-z 0-9 - . — but "." and "..", which FHIR
# allows and no URL can carry (RFC 3986 removes them as dot-segments: "Task/.." is the server's
# base). No look-ahead: pydantic's (Rust) regular expressions have none.
FHIR_ID_PATTERN = r"(?:[A-Za-z0-9\-.]{3,64}|[A-Za-z0-9\-][A-Za-z0-9\-.]?|\.[A-Za-z0-9\-])"

# FHIR R4 dateTime (datatypes: dateTime): a year, month or day, or a time to the second (with
# optional fraction) and a time zone, which FHIR requires whenever a time is given.
FHIR_DATETIME_PATTERN = (
    r"^[0-9]{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12][0-9]|3[01])"
    r"(T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]{1,9})?"
    r"(Z|[+-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00)))?)?)?$"
)

_DICOM_UID = re.compile(DICOM_UID_PATTERN)
_GENERATION = re.compile(r"^g[1-9][0-9]*$")


def is_dicom_uid(value: str) -> bool:
    """Whether `value` is a well-formed DICOM UID (so it is safe in a QIDO/WADO path)."""
    # fullmatch: `$` also matches before a trailing newline ("1.2.3\n" is no UID)
    return len(value) <= DICOM_UID_MAX_LENGTH and _DICOM_UID.fullmatch(value) is not None


def fhir_reference_pattern(*resource_types: str) -> str:
    """A regular expression for a relative reference `Type/id` to one of `resource_types`."""
    return rf"^({'|'.join(resource_types)})/{FHIR_ID_PATTERN}$"


def radmesh_system(resource_type: str) -> str:
    """The identifier system of a resource type radmesh writes, e.g. urn:radmesh:diagnosticreport."""
    return f"urn:radmesh:{resource_type.lower()}"


def run_parts(
    study_instance_uid: str, model_id: str, model_version: str, generation: int = 1
) -> tuple[str, ...]:
    """What names one run of a model on a study. A run whose results were retracted (the PACS
    deleted or rejected its images, or the study's patient changed) is followed by a new
    generation when the study comes again; generation 1 has no part of its own, so identifiers
    written before generations existed keep their meaning."""
    parts = (study_instance_uid, model_id, model_version)
    return parts if generation == 1 else (*parts, f"g{generation}")


def study_run_value(
    study_instance_uid: str, model_id: str, model_version: str, generation: int = 1
) -> str:
    """The value shared by everything one run of a model wrote about one study."""
    return "/".join(run_parts(study_instance_uid, model_id, model_version, generation))


@dataclass(frozen=True)
class StudyRun:
    """A run value read back: `<study>/<model>/<version>[/g<generation>]`."""

    study_instance_uid: str
    model_id: str
    model_version: str
    generation: int = 1

    @property
    def value(self) -> str:
        return study_run_value(
            self.study_instance_uid, self.model_id, self.model_version, self.generation
        )

    @classmethod
    def parse(cls, value: str) -> StudyRun:
        """The run a run value (or a value that starts with one, e.g. an Observation's) names;
        ValueError when it is none."""
        parts = value.split("/")
        if len(parts) < 3 or not is_dicom_uid(parts[0]) or not parts[1] or not parts[2]:
            raise ValueError(f"{value[:200]!r} is not a radmesh run value")
        generation = 1
        if len(parts) > 3 and _GENERATION.match(parts[3]):
            generation = int(parts[3][1:])
        return cls(parts[0], parts[1], parts[2], generation)


@dataclass(frozen=True)
class FindingValue:
    """A value naming one finding of a run, `<run value>/<finding key>/<index>` (an
    Observation's, and an alert's), and what follows it in the value of a follow-up
    (`…/withdrawal`, `…/escalation/2`)."""

    run: StudyRun
    finding_key: str
    index: int
    follow_up: tuple[str, ...] = ()

    @property
    def value(self) -> str:
        return f"{self.run.value}/{self.finding_key}/{self.index}"

    @classmethod
    def parse(cls, value: str) -> FindingValue:
        run = StudyRun.parse(value)
        rest = value.removeprefix(run.value).split("/")[1:]
        if len(rest) < 2 or not rest[0] or not rest[1].isdigit():
            raise ValueError(f"{value[:200]!r} names no finding of a radmesh run")
        return cls(run, rest[0], int(rest[1]), tuple(rest[2:]))


def radmesh_identifier_value(resource: dict[str, Any]) -> str | None:
    """The value of the business identifier radmesh gave a resource (its type's system)."""
    system = radmesh_system(str(resource.get("resourceType", "")))
    return next(
        (str(i["value"]) for i in resource.get("identifier", []) if i.get("system") == system),
        None,
    )


def business_identifier(resource_type: str, *parts: str | int) -> dict[str, str]:
    """A FHIR Identifier for a radmesh resource: system per type, value from the parts."""
    return {"system": radmesh_system(resource_type), "value": "/".join(str(part) for part in parts)}
