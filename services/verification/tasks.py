"""The verification Task of a report: how it is read back and how it is listed. What it is and
how it is written (by the mapper, in the results' transaction; here, for a results.posted that
names none): shared/verification_task.py."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from services.verification.key_images import image_references
from shared.codes import PROBABILITY
from shared.identifiers import radmesh_system
from shared.messages import StudyRef
from shared.registry import Algorithm
from shared.verification_task import INPUT_SYSTEM

__all__ = [
    "OUTBOX_TAG",
    "TaskRun",
    "finding_view",
    "is_verification_task",
    "task_run",
    "worklist_item",
]

# On a decided Task until its verdict's event is published (services/verification/outbox.py).
OUTBOX_TAG = {
    "system": "urn:radmesh:outbox",
    "code": "pending",
    "display": "verdict event not yet published",
}
# The mapper codes the probability component DICOM DCM 122157 "Probability"; other writers are
# recognised by the words of their component code.
_PROBABILITY_CODE = (PROBABILITY.system, PROBABILITY.code)
_PROBABILITY_MARKERS = ("probability", "likelihood", "confidence")


def is_verification_task(task: dict[str, Any]) -> bool:
    """A Task this service wrote (its identifier system), not some other system's approve Task."""
    return any(
        identifier.get("system") == radmesh_system("Task")
        for identifier in task.get("identifier", [])
    )


@dataclass(frozen=True)
class TaskRun:
    """What a verification Task remembers of the study run it was created for."""

    study: StudyRef
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None
    model: str | None
    device: str | None


def task_run(task: dict[str, Any]) -> TaskRun:
    """Read the run back from a Task's inputs, for, basedOn and encounter."""
    inputs: dict[str, Any] = {}
    for item in task.get("input", []):
        value = item.get("valueString") or (item.get("valueReference") or {}).get("reference")
        for coding in item.get("type", {}).get("coding", []):
            if coding.get("system") == INPUT_SYSTEM:
                inputs[str(coding.get("code"))] = value
    study = StudyRef(
        study_instance_uid=str(inputs.get("study-instance-uid") or ""),
        imaging_study=inputs.get("imaging-study"),
        patient=(task.get("for") or {}).get("reference"),
        service_request=next((ref.get("reference") for ref in task.get("basedOn", [])), None),
        encounter=(task.get("encounter") or {}).get("reference"),
    )
    return TaskRun(
        study=study,
        correlation_id=_uuid(inputs.get("correlation-id")) or uuid.uuid4(),
        causation_id=_uuid(inputs.get("results-posted-message-id")),
        model=inputs.get("model"),
        device=inputs.get("device"),
    )


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        return None


def _display(concept: dict[str, Any] | None) -> str | None:
    if not concept:
        return None
    for coding in concept.get("coding", []):
        if coding.get("display"):
            return str(coding["display"])
    if concept.get("text"):
        return str(concept["text"])
    return next((str(c["code"]) for c in concept.get("coding", []) if c.get("code")), None)


def _value(resource: dict[str, Any]) -> Any:
    if "valueQuantity" in resource:
        quantity = resource["valueQuantity"]
        return {
            "value": quantity.get("value"),
            "unit": quantity.get("unit") or quantity.get("code"),
        }
    if "valueCodeableConcept" in resource:
        return _display(resource["valueCodeableConcept"])
    for key in ("valueBoolean", "valueString", "valueInteger"):
        if key in resource:
            return resource[key]
    return None


def _probability(observation: dict[str, Any]) -> float | None:
    """The component coded DCM 122157, or whose code says probability (likelihood, confidence),
    as a number 0..1."""
    for component in observation.get("component", []):
        codings = component.get("code", {}).get("coding", [])
        coded = any((c.get("system"), c.get("code")) == _PROBABILITY_CODE for c in codings)
        words = " ".join(
            str(part)
            for coding in component.get("code", {}).get("coding", [])
            for part in (coding.get("code"), coding.get("display"))
            if part
        )
        words = f"{words} {component.get('code', {}).get('text', '')}".lower()
        if not coded and not any(marker in words for marker in _PROBABILITY_MARKERS):
            continue
        if "valueQuantity" in component:
            value = component["valueQuantity"].get("value")
            unit = component["valueQuantity"].get("code") or component["valueQuantity"].get("unit")
            if value is not None:
                return float(value) / 100 if unit == "%" else float(value)
        if "valueDecimal" in component:
            return float(component["valueDecimal"])
    return None


def finding_view(observation: dict[str, Any]) -> dict[str, Any]:
    """One finding as the reviewer sees it: what, value, probability, status, and the slices
    it lies on (with its centre) when the model located it."""
    return {
        "observation": f"Observation/{observation.get('id')}",
        "code": _display(observation.get("code")),
        "value": _value(observation),
        "measured": "valueQuantity" in observation,  # a value a radiologist may amend
        "probability": _probability(observation),
        "status": observation.get("status"),
        "body_site": _display(observation.get("bodySite")),
        "images": image_references(observation),
    }


def worklist_item(
    task: dict[str, Any],
    report: dict[str, Any] | None,
    observations: list[dict[str, Any]],
    fhir_base_url: str,
    model: Algorithm | None = None,
) -> dict[str, Any]:
    """One open Task with its report's findings and the links to act on it; `model` is the
    registry's entry of the model that made them (None when the registry no longer has it)."""
    task_id = str(task.get("id"))
    run = task_run(task)
    report_reference = (task.get("focus") or {}).get("reference")
    fhir = fhir_base_url.rstrip("/")
    return {
        "id": task_id,
        "task": f"Task/{task_id}",
        "status": task.get("status"),
        "priority": task.get("priority", "routine"),
        "authored_on": task.get("authoredOn"),
        "description": task.get("description"),
        "study_instance_uid": run.study.study_instance_uid,
        "patient": run.study.patient,  # a reference, for the audit trail; no name or identifier
        "model": run.model,
        "model_display": model.display if model else run.model,
        "not_for_clinical_use": model.not_for_clinical_use if model else False,
        "diagnostic_report": {
            "reference": report_reference,
            "status": report.get("status") if report else None,
            "code": _display(report.get("code")) if report else None,
            "conclusion": report.get("conclusion") if report else None,
        },
        "findings": [finding_view(observation) for observation in observations],
        "links": {
            "self": f"/tasks/{task_id}",
            "accept": f"/tasks/{task_id}/accept",
            "reject": f"/tasks/{task_id}/reject",
            "task": f"{fhir}/Task/{task_id}",
            "diagnostic_report": f"{fhir}/{report_reference}" if report_reference else None,
            "imaging_study": f"{fhir}/{run.study.imaging_study}"
            if run.study.imaging_study
            else None,
        },
    }
