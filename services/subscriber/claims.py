"""One claim per study run, shared by every hook and every subscriber replica: before
study.detected is published for a model, the subscriber conditionally creates a FHIR Task
"radmesh AI analysis" with the identifier `urn:radmesh:analysis-claim|<study>/<model>/<version>`.
The FHIR server keeps that identifier unique (HAPI refuses a concurrent second create with 409,
retried), so whichever of the PACS event, the FHIR hook, a notification, a sweep or a second
replica comes first starts the run, and the others find the claim and start nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.fhir import FhirClient
from shared.identifiers import ANALYSIS_CLAIM_SYSTEM, study_run_value
from shared.registry import ModelEntry

__all__ = ["claim_run"]


def _claim_task(
    imaging_study: dict[str, Any], value: str, model: ModelEntry, correlation_id: str
) -> dict[str, Any]:
    task: dict[str, Any] = {
        "resourceType": "Task",
        "identifier": [{"system": ANALYSIS_CLAIM_SYSTEM, "value": value}],
        "status": "in-progress",
        "intent": "order",
        "code": {"text": "radmesh AI analysis of an imaging study"},
        "description": f"{model.id} {model.version} on this study (run {correlation_id})",
        "focus": {"reference": f"ImagingStudy/{imaging_study['id']}"},
        "authoredOn": datetime.now(UTC).isoformat(timespec="seconds"),
        "input": [
            {
                "type": {"text": "correlation-id"},
                "valueString": correlation_id,
            }
        ],
    }
    subject = (imaging_study.get("subject") or {}).get("reference")
    if subject:
        task["for"] = {"reference": subject}
    return task


async def claim_run(
    fhir: FhirClient,
    imaging_study: dict[str, Any],
    study_instance_uid: str,
    model: ModelEntry,
    correlation_id: str,
) -> tuple[bool, str]:
    """Claim `model`'s run on the study; returns (whether this call won, the claim Task)."""
    value = study_run_value(study_instance_uid, model.id, model.version)
    task, created = await fhir.create_once(
        _claim_task(imaging_study, value, model, correlation_id),
        if_none_exist=f"identifier={ANALYSIS_CLAIM_SYSTEM}|{value}",
    )
    return created, f"Task/{task['id']}"
