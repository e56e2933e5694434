"""Deterministic business identifiers of everything radmesh writes (DESIGN: exactly-once effects).

Each resource radmesh creates carries one identifier `system|value`; every write is a conditional
create on it, so a redelivered message, a repeated hook or a replayed dead letter finds the
existing resource instead of creating a second one. Values join their parts with "/".
"""

from __future__ import annotations

__all__ = ["DICOM_UID_SYSTEM", "business_identifier", "radmesh_system", "study_run_value"]

DICOM_UID_SYSTEM = "urn:dicom:uid"  # ImagingStudy.identifier value: urn:oid:<StudyInstanceUID>


def radmesh_system(resource_type: str) -> str:
    """The identifier system of a resource type radmesh writes, e.g. urn:radmesh:diagnosticreport."""
    return f"urn:radmesh:{resource_type.lower()}"


def study_run_value(study_instance_uid: str, model_id: str, model_version: str) -> str:
    """The value shared by everything one model wrote about one study."""
    return f"{study_instance_uid}/{model_id}/{model_version}"


def business_identifier(resource_type: str, *parts: str | int) -> dict[str, str]:
    """A FHIR Identifier for a radmesh resource: system per type, value from the parts."""
    return {"system": radmesh_system(resource_type), "value": "/".join(str(part) for part in parts)}
