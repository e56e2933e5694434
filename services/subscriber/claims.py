"""One claim per study run, shared by every hook and every subscriber replica (the claim Task of
`shared.claims`): before study.detected is published for a model, the subscriber conditionally
creates it (`ready`). The FHIR server keeps its identifier unique (HAPI refuses a concurrent
second create with 409, retried), so whichever of the PACS event, the FHIR hook, a notification,
a sweep or a second replica comes first starts the run, and the others find the claim and start
nothing. Once study.detected is published the claim is set `in-progress` (`mark_announced`): a
claim still `ready` after a while was never announced (stale_claims.py announces it)."""

from __future__ import annotations

from typing import Any

import structlog

from shared.claims import (
    ANNOUNCED_CLAIM_STATUS,
    CLAIMED_STATUS,
    analysis_claim_search,
    analysis_claim_task,
)
from shared.errors import RadmeshError, RemoteConflict
from shared.fhir import FhirClient
from shared.identifiers import study_run_value
from shared.registry import ModelEntry

__all__ = ["claim_run", "mark_announced"]

log = structlog.get_logger(__name__)


async def claim_run(
    fhir: FhirClient,
    imaging_study: dict[str, Any],
    study_instance_uid: str,
    model: ModelEntry,
    correlation_id: str,
    *,
    generation: int = 1,
) -> tuple[bool, dict[str, Any]]:
    """Claim `model`'s run (of that generation) on the study; returns (whether this call won,
    the claim Task as the server holds it)."""
    value = study_run_value(study_instance_uid, model.id, model.version, generation)
    task = analysis_claim_task(
        value=value,
        imaging_study=f"ImagingStudy/{imaging_study['id']}",
        patient=(imaging_study.get("subject") or {}).get("reference"),
        model_id=model.id,
        model_version=model.version,
        correlation_id=correlation_id,
        status=CLAIMED_STATUS,
    )
    created_task, created = await fhir.create_once(task, analysis_claim_search(value))
    return created, created_task


async def mark_announced(fhir: FhirClient, claims: list[dict[str, Any]]) -> None:
    """Set the claims of a run just published `in-progress`, each only if unchanged since it was
    created (a retraction or the mapper may have been quicker). Failing that, the claim stays
    `ready`, which the subscriber's sweep takes for never announced: the run is announced once
    more, and every stage finds what was done already. Logged, so not silent."""
    for claim in claims:
        try:
            await fhir.update_resource({**claim, "status": ANNOUNCED_CLAIM_STATUS})
        except RemoteConflict:
            log.info("claim_changed_meanwhile", claim=f"Task/{claim['id']}")
        except RadmeshError as error:
            log.warning(
                "claim_not_marked_announced",
                claim=f"Task/{claim['id']}",
                error=str(error),
                action="the subscriber's sweep announces the run again; the stages are idempotent",
            )
