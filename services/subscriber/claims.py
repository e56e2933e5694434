"""One claim per study run, shared by every hook and every subscriber replica (the claim Task of
`shared.claims`): before study.detected is published for a model, the subscriber conditionally
creates it. The FHIR server keeps its identifier unique (HAPI refuses a concurrent second create
with 409, retried), so whichever of the PACS event, the FHIR hook, a notification, a sweep or a
second replica comes first starts the run, and the others find the claim and start nothing."""

from __future__ import annotations

from typing import Any

from shared.claims import analysis_claim_search, analysis_claim_task
from shared.fhir import FhirClient
from shared.identifiers import study_run_value
from shared.registry import ModelEntry

__all__ = ["claim_run"]


async def claim_run(
    fhir: FhirClient,
    imaging_study: dict[str, Any],
    study_instance_uid: str,
    model: ModelEntry,
    correlation_id: str,
    *,
    generation: int = 1,
) -> tuple[bool, str]:
    """Claim `model`'s run (of that generation) on the study; returns (whether this call won,
    the claim Task)."""
    value = study_run_value(study_instance_uid, model.id, model.version, generation)
    task = analysis_claim_task(
        value=value,
        imaging_study=f"ImagingStudy/{imaging_study['id']}",
        patient=(imaging_study.get("subject") or {}).get("reference"),
        model_id=model.id,
        model_version=model.version,
        correlation_id=correlation_id,
    )
    created_task, created = await fhir.create_once(task, analysis_claim_search(value))
    return created, f"Task/{created_task['id']}"
