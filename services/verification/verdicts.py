"""A radiologist's verdict on a verification Task, and the one transaction that records it.

Accept: the report's Observations and the DiagnosticReport become `final` (the verifier is the
report's resultsInterpreter), the Task `completed`, and a Provenance names the verifier (agent
type verifier, activity verify) with the report and Observations as targets. Reject: they become
`cancelled`, the reason goes to Task.statusReason, Task.output, the Observations' notes and the
Provenance's reason. Every update is a PUT with `ifMatch` on the version that was read, so a
concurrent change makes the whole transaction fail with 412 and nothing is written.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.identifiers import fhir_reference_pattern

__all__ = [
    "MAX_REASON_LENGTH",
    "OUTPUT_SYSTEM",
    "InvalidVerdict",
    "ReviewedRecord",
    "Verdict",
    "parse_verdict",
    "verdict_bundle",
]

OUTPUT_SYSTEM = "urn:radmesh:task-output"
MAX_REASON_LENGTH = 2000
_VERIFIER = re.compile(fhir_reference_pattern("Practitioner"))
_VERIFY_ACTIVITY = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
            "code": "VRF",
            "display": "verifier",
        }
    ],
    "text": "verify",
}
_REJECT_ACTIVITY = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
            "code": "NULLIFY",
            "display": "nullify",
        }
    ],
    "text": "reject",
}
_VERIFIER_TYPE = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
            "code": "verifier",
            "display": "Verifier",
        }
    ]
}


class InvalidVerdict(ValueError):
    """The request body of an accept or reject is not what the API takes (answered with 400)."""


@dataclass(frozen=True)
class Verdict:
    """Who decided, what, and why."""

    verifier: str  # "Practitioner/<id>"
    accepted: bool
    reason: str | None = None


@dataclass(frozen=True)
class ReviewedRecord:
    """The resources a verdict changes, as read (with their versions) just before writing."""

    task: dict[str, Any]
    report: dict[str, Any]
    observations: list[dict[str, Any]]


def parse_verdict(body: Any, *, accepted: bool) -> Verdict:
    """Validate an accept body {"verifier"} or a reject body {"verifier", "reason"}."""
    allowed = {"verifier"} if accepted else {"verifier", "reason"}
    if not isinstance(body, dict):
        raise InvalidVerdict(f"the body must be a JSON object with {sorted(allowed)}")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidVerdict(f"unknown field(s) {unknown}; expected {sorted(allowed)}")
    verifier = body.get("verifier")
    if not isinstance(verifier, str) or not _VERIFIER.match(verifier):
        raise InvalidVerdict(
            'verifier must be a reference "Practitioner/<id>" to the radiologist who decides'
        )
    if accepted:
        return Verdict(verifier=verifier, accepted=True)
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidVerdict("reason is required to reject: a non-empty string saying why")
    if len(reason) > MAX_REASON_LENGTH:
        raise InvalidVerdict(f"reason is longer than {MAX_REASON_LENGTH} characters")
    return Verdict(verifier=verifier, accepted=False, reason=reason.strip())


def _update(resource: dict[str, Any], base_url: str) -> dict[str, Any]:
    """A PUT entry guarded by the version the resource was read at; its fullUrl is the
    resource's absolute URL (a transaction entry needs one, and references inside the Bundle
    resolve against it)."""
    meta = {
        k: v
        for k, v in (resource.get("meta") or {}).items()
        if k not in ("versionId", "lastUpdated")
    }
    version = (resource.get("meta") or {}).get("versionId")
    body = {key: value for key, value in resource.items() if key != "meta"}
    if meta:
        body["meta"] = meta
    reference = f"{resource['resourceType']}/{resource['id']}"
    request: dict[str, Any] = {"method": "PUT", "url": reference}
    if version is not None:
        request["ifMatch"] = f'W/"{version}"'
    return {"fullUrl": f"{base_url.rstrip('/')}/{reference}", "resource": body, "request": request}


def _reference_to(resource: dict[str, Any]) -> dict[str, str]:
    return {"reference": f"{resource['resourceType']}/{resource['id']}"}


def verdict_bundle(
    record: ReviewedRecord, verdict: Verdict, now: datetime, base_url: str
) -> dict[str, Any]:
    """The transaction: PUT each Observation, the report and the Task; POST the Provenance last.

    Response entries come back in this order, so the Provenance is the last one.
    """
    status = "final" if verdict.accepted else "cancelled"
    when = now.isoformat()
    verifier = {"reference": verdict.verifier}
    provenance_url = f"urn:uuid:{uuid.uuid4()}"
    entries: list[dict[str, Any]] = []
    for observation in record.observations:
        updated = {**observation, "status": status}
        if not verdict.accepted:
            note = {
                "authorReference": verifier,
                "time": when,
                "text": f"Rejected: {verdict.reason}",
            }
            updated["note"] = [*observation.get("note", []), note]
        entries.append(_update(updated, base_url))
    report = {**record.report, "status": status}
    if verdict.accepted and verifier not in report.get("resultsInterpreter", []):
        report["resultsInterpreter"] = [*report.get("resultsInterpreter", []), verifier]
    entries.append(_update(report, base_url))
    entries.append(_update(_completed_task(record.task, verdict, when, provenance_url), base_url))
    provenance: dict[str, Any] = {
        "resourceType": "Provenance",
        "target": [_reference_to(record.report), *map(_reference_to, record.observations)],
        "recorded": when,
        "activity": _VERIFY_ACTIVITY if verdict.accepted else _REJECT_ACTIVITY,
        "agent": [{"type": _VERIFIER_TYPE, "who": verifier}],
        "entity": [{"role": "source", "what": _reference_to(record.task)}],
    }
    if verdict.reason:
        provenance["reason"] = [{"text": verdict.reason}]
    entries.append(
        {
            "fullUrl": provenance_url,
            "resource": provenance,
            "request": {"method": "POST", "url": "Provenance"},
        }
    )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _completed_task(
    task: dict[str, Any], verdict: Verdict, when: str, provenance_url: str
) -> dict[str, Any]:
    outcome = "accepted" if verdict.accepted else "rejected"
    outputs: list[dict[str, Any]] = [
        {
            "type": {"coding": [{"system": OUTPUT_SYSTEM, "code": "verdict"}], "text": "verdict"},
            "valueCode": outcome,
        },
        {
            "type": {"coding": [{"system": OUTPUT_SYSTEM, "code": "verifier"}], "text": "verifier"},
            "valueReference": {"reference": verdict.verifier},
        },
    ]
    completed = {
        **task,
        "status": "completed",
        "businessStatus": {"text": outcome},
        "lastModified": when,
        "owner": {"reference": verdict.verifier},
        "executionPeriod": {**(task.get("executionPeriod") or {}), "end": when},
        "output": [*task.get("output", []), *outputs],
        "relevantHistory": [*task.get("relevantHistory", []), {"reference": provenance_url}],
    }
    if verdict.reason:
        completed["statusReason"] = {"text": verdict.reason}
        completed["output"].append(
            {
                "type": {"coding": [{"system": OUTPUT_SYSTEM, "code": "reason"}], "text": "reason"},
                "valueString": verdict.reason,
            }
        )
    return completed
