"""A radiologist's verdict on a verification Task, and the one transaction that records it.

The verifier is always the signed-in user (their Practitioner); a body naming someone else is
refused. What each verdict writes, every update a PUT with `ifMatch` on the version that was
read (a concurrent change fails the whole transaction with 412 and nothing is written):

- accept: Observations and DiagnosticReport `final`; the report's conclusion and each
  Observation's note say verified, by whom, when; the AI Transparency label AIAST becomes
  CLINAST_AIRPT (clinician asserted from AI reported); the verifier is the report's
  resultsInterpreter.
- reject `{"reason": <code>, "note": <text>}`: `entered-in-error` when the reason says the
  finding was wrong (false-positive, wrong-location), `cancelled` otherwise (poor-image-quality,
  other); the coded reason goes to Task.statusReason, the notes, the conclusion and the
  Provenance. The alert side (consult, CommunicationRequest, withdrawal) is the notifier's, on
  finding.rejected.
- amend `{"observation": "Observation/<id>", "value": <number>, "note": <text>}`: that
  Observation gets the corrected value and status `amended` (the AI's value stays in its note
  and in its history); the others become `final`; the report `final`, its conclusion naming the
  amendment; labels as for accept.

Each verdict completes the Task (businessStatus accepted / rejected / amended, the verifier as
owner, tagged for the outbox until its event is published: outbox.py) and adds a Provenance naming the verifier (agent type verifier) with every changed
resource as target.
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from services.verification.tasks import OUTBOX_TAG
from shared.ai_transparency import CLINICIAN_ASSERTED_FROM_AI, relabelled, verified_text
from shared.codes import CLINAST_AIRPT, NULLIFY, PROVENANCE_VERIFIER, REVISE, VERIFIER
from shared.fhir import versioned_update_entry
from shared.identifiers import fhir_reference_pattern
from shared.narrative import concept_text, quantity_text

__all__ = [
    "MAX_NOTE_LENGTH",
    "OUTPUT_SYSTEM",
    "REASON_SYSTEM",
    "REJECT_REASONS",
    "Amendment",
    "InvalidVerdict",
    "RejectReason",
    "ReviewedRecord",
    "Reviewer",
    "Verdict",
    "VerdictKind",
    "parse_verdict",
    "verdict_bundle",
]

OUTPUT_SYSTEM = "urn:radmesh:task-output"
REASON_SYSTEM = "urn:radmesh:verdict-reason"
MAX_NOTE_LENGTH = 2000
_OBSERVATION = re.compile(fhir_reference_pattern("Observation"))
# FHIR R4 datatypes, string: no Unicode code points below 32 but tab, line feed, carriage return
# (HAPI refuses the transaction carrying one: a 502 to the radiologist)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
VerdictKind = Literal["accepted", "rejected", "amended"]


@dataclass(frozen=True)
class RejectReason:
    code: str
    display: str
    status: Literal["cancelled", "entered-in-error"]  # what the results become


REJECT_REASONS = {
    reason.code: reason
    for reason in (
        RejectReason(
            "false-positive", "False positive: the finding is not there", "entered-in-error"
        ),
        RejectReason("wrong-location", "Wrong location", "entered-in-error"),
        RejectReason("poor-image-quality", "Poor image quality", "cancelled"),
        RejectReason("other", "Other reason", "cancelled"),
    )
}

_ACTIVITY = {
    "accepted": VERIFIER.concept(text="verify"),
    "rejected": NULLIFY.concept(text="reject"),
    "amended": REVISE.concept(text="amend"),
}
_VERIFIER_TYPE = PROVENANCE_VERIFIER.concept()


class InvalidVerdict(ValueError):
    """The request body of a verdict is not what the API takes (answered with 400)."""


@dataclass(frozen=True)
class Reviewer:
    """The signed-in radiologist: their Practitioner and how records name them."""

    reference: str  # "Practitioner/<id>"
    display: str


@dataclass(frozen=True)
class Amendment:
    observation: str  # "Observation/<id>"
    value: float


@dataclass(frozen=True)
class Verdict:
    """Who decided, what, and why."""

    kind: VerdictKind
    verifier: Reviewer
    reason: RejectReason | None = None
    note: str | None = None
    amendment: Amendment | None = None

    @property
    def reason_text(self) -> str | None:
        if self.reason is None:
            return self.note
        return f"{self.reason.display}: {self.note}" if self.note else self.reason.display


@dataclass(frozen=True)
class ReviewedRecord:
    """The resources a verdict changes, as read (with their versions) just before writing."""

    task: dict[str, Any]
    report: dict[str, Any]
    observations: list[dict[str, Any]]


_FIELDS: dict[VerdictKind, set[str]] = {
    "accepted": {"verifier", "note"},
    "rejected": {"verifier", "reason", "note"},
    "amended": {"verifier", "observation", "value", "note"},
}


def _note(body: dict[str, Any]) -> str | None:
    note = body.get("note")
    if note is None:
        return None
    if not isinstance(note, str):
        raise InvalidVerdict("note must be a string")
    if len(note) > MAX_NOTE_LENGTH:
        raise InvalidVerdict(f"note is longer than {MAX_NOTE_LENGTH} characters")
    if (control := _CONTROL.search(note)) is not None:
        raise InvalidVerdict(
            f"note has the control character U+{ord(control.group()):04X}: FHIR strings carry "
            "none but tab and line breaks"
        )
    return note.strip() or None


def parse_verdict(body: Any, kind: VerdictKind, verifier: Reviewer) -> Verdict:
    """Validate the body of an accept `{}`, a reject `{"reason", "note"}` or an amend
    `{"observation", "value", "note"}`; the verifier is the signed-in `verifier`."""
    allowed = _FIELDS[kind]
    if not isinstance(body, dict):
        raise InvalidVerdict(f"the body must be a JSON object with at most {sorted(allowed)}")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidVerdict(f"unknown field(s) {unknown}; expected at most {sorted(allowed)}")
    named = body.get("verifier")
    if named is not None and named != verifier.reference:
        raise InvalidVerdict(
            f"the verifier is the signed-in user ({verifier.reference}); a verdict cannot be "
            f"recorded in the name of {named!r}"
        )
    note = _note(body)
    if kind == "accepted":
        return Verdict(kind=kind, verifier=verifier, note=note)
    if kind == "rejected":
        code = body.get("reason")
        reason = REJECT_REASONS.get(code) if isinstance(code, str) else None
        if reason is None:
            raise InvalidVerdict(f"reason must be one of {sorted(REJECT_REASONS)}")
        if reason.code == "other" and note is None:
            raise InvalidVerdict('reason "other" needs a note saying why')
        return Verdict(kind=kind, verifier=verifier, reason=reason, note=note)
    observation = body.get("observation")
    if not isinstance(observation, str) or not _OBSERVATION.fullmatch(observation):
        raise InvalidVerdict('observation must be a reference "Observation/<id>" of the report')
    value = body.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidVerdict("value must be a finite number (the corrected measurement)")
    return Verdict(
        kind=kind,
        verifier=verifier,
        note=note,
        amendment=Amendment(observation=observation, value=float(value)),
    )


def _reference_to(resource: dict[str, Any]) -> dict[str, str]:
    return {"reference": f"{resource['resourceType']}/{resource['id']}"}


def _amended(observation: dict[str, Any], verdict: Verdict, when: str) -> dict[str, Any]:
    """The Observation with the corrected value; its note keeps the AI's value."""
    assert verdict.amendment is not None
    quantity = observation.get("valueQuantity")
    if not isinstance(quantity, dict):
        raise InvalidVerdict(
            f"{verdict.amendment.observation} has no measured value (valueQuantity) to amend"
        )
    corrected = {**quantity, "value": verdict.amendment.value}
    text = (
        f"Amended by {verdict.verifier.display} on {when}: the AI measured "
        f"{quantity_text(quantity)}, the radiologist {quantity_text(corrected)}."
    )
    if verdict.note:
        text += f" {verdict.note}"
    return {
        **observation,
        "status": "amended",
        "valueQuantity": corrected,
        "note": [*observation.get("note", []), _annotation(verdict, when, text)],
    }


def _annotation(verdict: Verdict, when: str, text: str) -> dict[str, Any]:
    return {
        "authorReference": {
            "reference": verdict.verifier.reference,
            "display": verdict.verifier.display,
        },
        "time": when,
        "text": text,
    }


def _verified_notes(observation: dict[str, Any], verdict: Verdict, when: str) -> list[Any]:
    return [
        {**note, "text": verified_text(str(note["text"]), verdict.verifier.display, when)}
        if isinstance(note, dict) and isinstance(note.get("text"), str)
        else note
        for note in observation.get("note", [])
    ]


def _observation_after(observation: dict[str, Any], verdict: Verdict, when: str) -> dict[str, Any]:
    if verdict.kind == "rejected":
        assert verdict.reason is not None
        text = f"Rejected by {verdict.verifier.display} on {when}: {verdict.reason_text}."
        return {
            **observation,
            "status": verdict.reason.status,
            "note": [*observation.get("note", []), _annotation(verdict, when, text)],
        }
    updated = {
        **observation,
        "status": "final",
        "meta": relabelled(observation.get("meta"), CLINICIAN_ASSERTED_FROM_AI),
        "note": _verified_notes(observation, verdict, when),
    }
    amendment = verdict.amendment
    if amendment is not None and amendment.observation == f"Observation/{observation['id']}":
        return _amended(updated, verdict, when)
    return updated


def _report_after(
    report: dict[str, Any], observations: list[dict[str, Any]], verdict: Verdict, when: str
) -> dict[str, Any]:
    conclusion = str(report.get("conclusion") or "")
    verifier = {"reference": verdict.verifier.reference, "display": verdict.verifier.display}
    if verdict.kind == "rejected":
        assert verdict.reason is not None
        return {
            **report,
            "status": verdict.reason.status,
            "conclusion": (
                f"AI result rejected by {verdict.verifier.display} on {when}: "
                f"{verdict.reason_text}. The AI had reported: {conclusion}"
            ),
        }
    conclusion = verified_text(conclusion, verdict.verifier.display, when)
    for observation in observations:
        if observation.get("status") == "amended":
            code = concept_text(observation.get("code")) or "value"
            conclusion += (
                f" Amended by the radiologist: {code} "
                f"{quantity_text(observation['valueQuantity'])}."
            )
    interpreters = report.get("resultsInterpreter", [])
    if not any(i.get("reference") == verdict.verifier.reference for i in interpreters):
        interpreters = [*interpreters, verifier]
    return {
        **report,
        "status": "final",
        "meta": relabelled(report.get("meta"), CLINICIAN_ASSERTED_FROM_AI),
        "conclusion": conclusion,
        "resultsInterpreter": interpreters,
    }


def verdict_bundle(
    record: ReviewedRecord, verdict: Verdict, now: datetime, base_url: str
) -> dict[str, Any]:
    """The transaction: PUT each Observation, the report and the Task; POST the Provenance last.

    Response entries come back in this order, so the Provenance is the last one.
    """
    when = now.isoformat()
    if verdict.amendment is not None:
        references = {f"Observation/{o['id']}" for o in record.observations}
        if verdict.amendment.observation not in references:
            raise InvalidVerdict(
                f"{verdict.amendment.observation} is not one of this report's findings"
            )
    provenance_url = f"urn:uuid:{uuid.uuid4()}"
    observations = [_observation_after(o, verdict, when) for o in record.observations]
    entries = [versioned_update_entry(observation, base_url) for observation in observations]
    entries.append(
        versioned_update_entry(_report_after(record.report, observations, verdict, when), base_url)
    )
    entries.append(
        versioned_update_entry(
            _completed_task(record.task, verdict, when, provenance_url), base_url
        )
    )
    provenance: dict[str, Any] = {
        "resourceType": "Provenance",
        "target": [_reference_to(record.report), *map(_reference_to, record.observations)],
        "recorded": when,
        "activity": _ACTIVITY[verdict.kind],
        "agent": [
            {
                "type": _VERIFIER_TYPE,
                "who": {
                    "reference": verdict.verifier.reference,
                    "display": verdict.verifier.display,
                },
            }
        ],
        "entity": [{"role": "source", "what": _reference_to(record.task)}],
    }
    if verdict.kind != "rejected":
        # AI Transparency on FHIR: a clinician now asserts what the AI reported (the same code
        # replaces AIAST in the results' meta.security)
        provenance["reason"] = [CLINAST_AIRPT.concept(text=CLINAST_AIRPT.display)]
    if verdict.reason_text:
        reason: dict[str, Any] = {"text": verdict.reason_text}
        if verdict.reason is not None:
            reason["coding"] = [
                {
                    "system": REASON_SYSTEM,
                    "code": verdict.reason.code,
                    "display": verdict.reason.display,
                }
            ]
        provenance.setdefault("reason", []).append(reason)
    entries.append(
        {
            "fullUrl": provenance_url,
            "resource": provenance,
            "request": {"method": "POST", "url": "Provenance"},
        }
    )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _output(code: str, **value: Any) -> dict[str, Any]:
    return {"type": {"coding": [{"system": OUTPUT_SYSTEM, "code": code}], "text": code}, **value}


def _completed_task(
    task: dict[str, Any], verdict: Verdict, when: str, provenance_url: str
) -> dict[str, Any]:
    verifier = {"reference": verdict.verifier.reference, "display": verdict.verifier.display}
    outputs = [
        _output("verdict", valueCode=verdict.kind),
        _output("verifier", valueReference=verifier),
    ]
    meta = task.get("meta") or {}
    completed = {
        **task,
        "meta": {**meta, "tag": [*meta.get("tag", []), OUTBOX_TAG]},
        "status": "completed",
        "businessStatus": {"text": verdict.kind},
        "lastModified": when,
        "owner": verifier,
        "executionPeriod": {**(task.get("executionPeriod") or {}), "end": when},
        "output": [*task.get("output", []), *outputs],
        "relevantHistory": [*task.get("relevantHistory", []), {"reference": provenance_url}],
    }
    if verdict.reason is not None:
        completed["statusReason"] = {
            "coding": [
                {
                    "system": REASON_SYSTEM,
                    "code": verdict.reason.code,
                    "display": verdict.reason.display,
                }
            ],
            "text": verdict.reason_text,
        }
        completed["output"].append(_output("reason", valueString=verdict.reason_text))
    if verdict.amendment is not None:
        completed["output"].append(
            _output("amended", valueReference={"reference": verdict.amendment.observation})
        )
    return completed
