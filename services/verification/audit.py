"""The audit trail of the review desk: a FHIR AuditEvent for every read of AI results and every
verdict, after IHE Basic Audit Log Patterns (BALP): a RESTful-operation event (DICOM/BALP type
`rest`, subtype the FHIR interaction), the signed-in user as the requesting agent (by their
issuer and subject, with their account name and network address), radmesh's verification
service as the source, and the Task, report and patient read or changed as entities.

Recording is best effort and never blocks the clinical work: a FHIR server that refuses an
AuditEvent is logged as an error (`audit_event_not_recorded`), and the read or verdict stands.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal

import structlog

from shared.auth import Principal
from shared.codes import (
    INFORMATION_RECIPIENT,
    OBJECT_ROLE_DOMAIN_RESOURCE,
    OBJECT_ROLE_PATIENT,
    OBJECT_ROLE_REPORT,
    RESTFUL_INTERACTION,
    RESTFUL_OPERATION,
    SECURITY_SOURCE_APPLICATION_SERVER,
    SYSTEM_OBJECT,
    VERIFIER,
)
from shared.fhir import FhirClient
from shared.identifiers import FHIR_ID_PATTERN

__all__ = ["AuditTrail", "audit_event"]

log = structlog.get_logger(__name__)

Interaction = Literal["read", "search-type", "update"]
_ACTIONS = {"read": "R", "search-type": "E", "update": "U"}
_REST = RESTFUL_OPERATION.fhir()
_ROLE = {  # the entity's role (BALP: object-role); any other resource is a Domain Resource
    "Patient": OBJECT_ROLE_PATIENT,
    "DiagnosticReport": OBJECT_ROLE_REPORT,
}
_SOURCE = {
    "observer": {"display": "radmesh verification service"},
    "type": [SECURITY_SOURCE_APPLICATION_SERVER.fhir()],
}


def _outcome(status: int) -> str:
    """AuditEvent.outcome: 0 success, 4 minor failure (the request was refused), 8 serious."""
    if status < 400:
        return "0"
    return "4" if status < 500 else "8"


_REFERENCE = re.compile(rf"[A-Z][A-Za-z]{{1,63}}/{FHIR_ID_PATTERN}")


def _what(reference: str, found: bool) -> dict[str, str]:
    """The entity: a reference to the resource; or, when the request named none or one the
    server does not have (`found` false: a 404), what it named, as escaped text. A reference
    there kept the AuditEvent of the attempt off the server: HAPI's referential integrity
    refuses a reference to nothing (HAPI-1094), and its JSON parser the escape of a control
    character in an id — probing for Tasks left no trail."""
    if not _REFERENCE.fullmatch(reference):
        return {"display": f"not a resource reference: {reference[:200]!r}"}
    if not found:
        return {"display": f"not on the server: {reference}"}
    return {"reference": reference}


def audit_event(
    principal: Principal,
    interaction: Interaction,
    entities: Iterable[str],
    *,
    status: int,
    address: str | None,
    query: str | None = None,
    description: str | None = None,
    practitioner: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """One AuditEvent (pure): who did what to which resources, when, from where, with what
    outcome. A reader is the information recipient (IRCP), a decider the verifier (VRF)."""
    role = INFORMATION_RECIPIENT if interaction != "update" else VERIFIER
    who: dict[str, Any] = {
        "identifier": {"system": principal.issuer, "value": principal.subject},
        "display": principal.label,
    }
    if practitioner:
        who["reference"] = practitioner
    agent: dict[str, Any] = {
        "type": role.concept(),
        "who": who,
        "altId": principal.label,
        "requestor": True,
    }
    if address:
        agent["network"] = {"address": address, "type": "2"}
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": _REST,
        "subtype": [{"system": RESTFUL_INTERACTION, "code": interaction}],
        "action": _ACTIONS[interaction],
        "recorded": (now or datetime.now(UTC)).isoformat(),
        "outcome": _outcome(status),
        "agent": [agent],
        "source": _SOURCE,
        "entity": [],
    }
    if description:
        event["outcomeDesc"] = description
    seen: set[str] = set()
    for reference in entities:
        if not reference or reference in seen:
            continue
        seen.add(reference)
        entity_role = _ROLE.get(reference.split("/", 1)[0], OBJECT_ROLE_DOMAIN_RESOURCE)
        event["entity"].append(
            {"what": _what(reference, found=status != 404), "role": entity_role.fhir()}
        )
    if query:
        event["entity"].append(
            {
                "type": SYSTEM_OBJECT.fhir(),
                "query": base64.b64encode(query.encode()).decode("ascii"),
            }
        )
    return event


class AuditTrail:
    def __init__(self, fhir: FhirClient) -> None:
        self.fhir = fhir

    async def record(self, event: dict[str, Any]) -> str | None:
        """POST the AuditEvent; its reference, or None when the server refused it (logged)."""
        try:
            created = await self.fhir.create_resource(event)
        except Exception as error:  # an unrecorded audit never undoes the read or verdict
            log.error(
                "audit_event_not_recorded",
                error=str(error)[:500],
                action="the read or verdict stands; the FHIR server's AuditEvent store needs a look",
            )
            return None
        return f"AuditEvent/{created['id']}"
