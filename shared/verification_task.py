"""The verification Task of a report: one per DiagnosticReport, asking a radiologist to verify
the preliminary AI results (status `requested`, intent `order`, code task-code `approve`, focus
the report, for the patient, basedOn the study's ServiceRequest, priority `stat` when any finding
is critical). Its identifier `urn:radmesh:task` | `<study UID>/<model>/<version>` is the one run
value the report itself is identified by, so a repeated write creates no second Task.
`Task.input` keeps what the verdict needs later: the study UID, the ImagingStudy, the model, the
Device, and the correlation id and message id of the run's results.posted (to publish
finding.verified / finding.rejected in the same run).

The mapper writes it in the transaction of the results themselves, so an AI result never stands
on the FHIR server without the Task that holds it for review (and the FHIR server takes one
validated request less per run); the verification service writes it for a results.posted that
names none (a run redriven from the record: services/mapper/redrive.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from shared.codes import TASK_APPROVE
from shared.fhir import conditional_create_entry
from shared.identifiers import business_identifier
from shared.messages import ModelRef, ResultsPosted, StudyRef

__all__ = [
    "INPUT_SYSTEM",
    "TASK_CODE",
    "verification_task_entry",
    "verification_task_entry_of",
]

TASK_CODE = TASK_APPROVE.fhir()
INPUT_SYSTEM = "urn:radmesh:task-input"


def _input(code: str, **value: Any) -> dict[str, Any]:
    return {"type": {"coding": [{"system": INPUT_SYSTEM, "code": code}], "text": code}, **value}


def verification_task_entry_of(
    *,
    study: StudyRef,
    model: ModelRef,
    diagnostic_report: str,
    device: str,
    correlation_id: uuid.UUID,
    results_posted_id: uuid.UUID,
    findings: Iterable[tuple[bool, bool]],
    now: datetime,
    full_url: str | None = None,
) -> dict[str, Any]:
    """The conditional-create transaction entry of the Task. `findings`: (present, critical) of
    each finding; `diagnostic_report` and `device` are references, or the fullUrls of the same
    transaction's entries (the server resolves them)."""
    run = model.run_value(study.study_instance_uid)
    identifier = business_identifier("Task", run)
    flags = list(findings)
    critical = sum(1 for present, is_critical in flags if present and is_critical)
    present = sum(1 for is_present, _ in flags if is_present)
    inputs = [
        _input("study-instance-uid", valueString=study.study_instance_uid),
        _input("model", valueString=f"{model.id}/{model.version}"),
        _input("device", valueReference={"reference": device}),
        _input("correlation-id", valueString=str(correlation_id)),
        _input("results-posted-message-id", valueString=str(results_posted_id)),
    ]
    if study.imaging_study:
        inputs.insert(1, _input("imaging-study", valueReference={"reference": study.imaging_study}))
    task: dict[str, Any] = {
        "resourceType": "Task",
        "identifier": [identifier],
        "status": "requested",
        "intent": "order",
        "priority": "stat" if critical else "routine",
        "code": {"coding": [TASK_CODE], "text": "Verify AI results"},
        "description": (
            f"Verify the preliminary AI results of {model.id} version {model.version}: "
            f"{len(flags)} finding(s), {present} present, {critical} critical."
        ),
        "focus": {"reference": diagnostic_report},
        "authoredOn": now.isoformat(),
        "requester": {"reference": device},
        "input": inputs,
    }
    if study.patient:
        task["for"] = {"reference": study.patient}
    if study.encounter:
        task["encounter"] = {"reference": study.encounter}
    if study.service_request:
        task["basedOn"] = [{"reference": study.service_request}]
    return conditional_create_entry(
        task, full_url or f"urn:uuid:{uuid.uuid4()}", identifier["system"], identifier["value"]
    )


def verification_task_entry(event: ResultsPosted, now: datetime) -> dict[str, Any]:
    """The Task's entry for a results.posted (the verification service's write)."""
    return verification_task_entry_of(
        study=event.study,
        model=event.model,
        diagnostic_report=event.diagnostic_report,
        device=event.device,
        correlation_id=event.correlation_id,
        results_posted_id=event.message_id,
        findings=((finding.present, finding.critical) for finding in event.findings),
        now=now,
    )
