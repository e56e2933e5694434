"""Deterministic business identifiers of everything radmesh writes (DESIGN: exactly-once effects).

Each resource radmesh creates carries one identifier `system|value`; every write is a conditional
create on it, so a redelivered message, a repeated hook or a replayed dead letter finds the
existing resource instead of creating a second one. Values join their parts with "/".
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "ANALYSIS_CLAIM_SYSTEM",
    "DICOM_IMAGE_EXTENSION",
    "DICOM_UID_MAX_LENGTH",
    "DICOM_UID_PATTERN",
    "DICOM_UID_SYSTEM",
    "FHIR_ID_PATTERN",
    "business_identifier",
    "fhir_reference_pattern",
    "is_dicom_uid",
    "radmesh_identifier_value",
    "radmesh_system",
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
# FHIR R4 id (datatypes: id): 1-64 characters of A-Z a-z 0-9 - .
FHIR_ID_PATTERN = r"[A-Za-z0-9\-.]{1,64}"

_DICOM_UID = re.compile(DICOM_UID_PATTERN)


def is_dicom_uid(value: str) -> bool:
    """Whether `value` is a well-formed DICOM UID (so it is safe in a QIDO/WADO path)."""
    return len(value) <= DICOM_UID_MAX_LENGTH and bool(_DICOM_UID.match(value))


def fhir_reference_pattern(*resource_types: str) -> str:
    """A regular expression for a relative reference `Type/id` to one of `resource_types`."""
    return rf"^({'|'.join(resource_types)})/{FHIR_ID_PATTERN}$"


def radmesh_system(resource_type: str) -> str:
    """The identifier system of a resource type radmesh writes, e.g. urn:radmesh:diagnosticreport."""
    return f"urn:radmesh:{resource_type.lower()}"


def study_run_value(study_instance_uid: str, model_id: str, model_version: str) -> str:
    """The value shared by everything one model wrote about one study."""
    return f"{study_instance_uid}/{model_id}/{model_version}"


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
