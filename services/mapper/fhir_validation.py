"""Validate every resource of a transaction Bundle before it is sent (pure, no I/O).

Two checks, each failure a PermanentError (the message is dead-lettered: a mapping that builds an
invalid resource will build it again on every retry) naming the resource and the field:

1. the resource against its fhir.resources model. fhir.resources 8 ships R5 at the top level and
   R4B in `fhir.resources.R4B`; the resources radmesh writes (Device, Observation,
   DiagnosticReport, Provenance) have the same R4 and R4B structure in every element used here,
   so R4B is the R4-compatible model available;
2. the target type of each top-level Reference against the types R4 allows there
   (fhir.resources records them but does not enforce them), resolving `urn:uuid:` fullUrls to
   the type of the Bundle entry they name — this is what keeps, e.g., `Observation.derivedFrom`
   on an ImagingStudy or an Observation and `DiagnosticReport.result` on Observations.
"""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from shared.errors import PermanentError
from shared.messages import validation_problems

__all__ = ["validate_bundle", "validate_resource"]


def _name(resource: dict[str, Any]) -> str:
    identifiers = resource.get("identifier") or []
    tags = (resource.get("meta") or {}).get("tag") or []
    label = identifiers[0].get("value") if identifiers else tags[0].get("code") if tags else None
    return f"{resource.get('resourceType')} {label}" if label else str(resource.get("resourceType"))


def _reference_type(reference: dict[str, Any], types_by_url: dict[str, str]) -> str | None:
    target = reference.get("reference")
    if not isinstance(target, str):
        return None  # a logical reference (identifier only) names no type to check
    if target.startswith("urn:"):
        return types_by_url.get(target)
    parts = target.split("/_history/", maxsplit=1)[0].rstrip("/").split("/")
    return parts[-2] if len(parts) >= 2 else None


def validate_resource(resource: dict[str, Any], types_by_url: dict[str, str]) -> None:
    """Raise PermanentError naming the resource and field when `resource` is not valid R4."""
    resource_type = resource.get("resourceType")
    try:
        model_class = get_fhir_model_class(str(resource_type))
    except KeyError:
        raise PermanentError(f"cannot validate unknown resource type {resource_type!r}") from None
    try:
        model_class.model_validate(resource)
    except ValidationError as error:
        problems = validation_problems(error, root="<resource>")
        raise PermanentError(
            f"{_name(resource)} is not valid FHIR ({problems}); not sent, message dead-lettered"
        ) from error
    for field_name, field in model_class.model_fields.items():
        extra = field.json_schema_extra
        allowed = extra.get("enum_reference_types") if isinstance(extra, dict) else None
        value = resource.get(field_name)
        if not isinstance(allowed, list) or value is None or "Resource" in allowed:
            continue
        for reference in value if isinstance(value, list) else [value]:
            target_type = _reference_type(reference, types_by_url)
            if target_type is not None and target_type not in allowed:
                raise PermanentError(
                    f"{_name(resource)}: {field_name} references a {target_type}, R4 allows "
                    f"{', '.join(str(t) for t in allowed)}; not sent, message dead-lettered"
                )


def validate_bundle(bundle: dict[str, Any]) -> None:
    """Validate every entry's resource of a transaction Bundle (references resolved in it)."""
    entries = bundle.get("entry") or []
    types_by_url = {
        str(entry["fullUrl"]): str(entry["resource"]["resourceType"])
        for entry in entries
        if "fullUrl" in entry and "resource" in entry
    }
    for entry in entries:
        validate_resource(entry["resource"], types_by_url)
    try:
        get_fhir_model_class("Bundle").model_validate(bundle)
    except ValidationError as error:
        raise PermanentError(
            f"transaction Bundle is not valid FHIR: {error.errors()[0]['msg']}"
        ) from error
