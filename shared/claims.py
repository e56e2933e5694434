"""The analysis claim: a FHIR Task "radmesh AI analysis" per model run on a study, identified by
`urn:radmesh:analysis-claim|<study>/<model>/<version>`. The subscriber creates it `ready`
before announcing the run, so that one run starts per study however many hooks arrive, and sets
it `in-progress` once study.detected is published (a claim left `ready` was never announced: its
subscriber stopped in between, and the subscriber's sweep announces it); the mapper completes it
when the results are posted (output: the DiagnosticReport), so the record never shows an
analysis "in progress" that finished. A retraction cancels it, and the run's next generation is
claimed under a new value."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.identifiers import ANALYSIS_CLAIM_SYSTEM

__all__ = [
    "ANNOUNCED_CLAIM_STATUS",
    "CLAIMED_STATUS",
    "MAX_RUN_GENERATIONS",
    "RETRACTED_CLAIM_STATUS",
    "analysis_claim_search",
    "analysis_claim_task",
]

# A retraction (the images the run read were deleted or rejected in the PACS, or the study's
# patient changed) cancels the run's claim; the study's next announcement then claims the next
# generation of the run (shared.identifiers.run_parts). A bound against a retraction loop:
MAX_RUN_GENERATIONS = 50
RETRACTED_CLAIM_STATUS = "cancelled"
# Claimed, study.detected not yet published ("ready": nothing done yet), then announced.
CLAIMED_STATUS = "ready"
ANNOUNCED_CLAIM_STATUS = "in-progress"


def analysis_claim_search(value: str) -> str:
    """The search that finds the claim (for If-None-Exist and conditional updates)."""
    return f"identifier={ANALYSIS_CLAIM_SYSTEM}|{value}"


def analysis_claim_task(
    *,
    value: str,
    imaging_study: str,
    patient: str | None,
    model_id: str,
    model_version: str,
    correlation_id: str,
    diagnostic_report: str | None = None,
    status: str = ANNOUNCED_CLAIM_STATUS,
) -> dict[str, Any]:
    """The claim Task: `status` (`ready` when created before the announcement, `in-progress`
    after), or `completed` with the report as its output. `value` is the run's
    `shared.identifiers.study_run_value`."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    task: dict[str, Any] = {
        "resourceType": "Task",
        "identifier": [{"system": ANALYSIS_CLAIM_SYSTEM, "value": value}],
        "status": status if diagnostic_report is None else "completed",
        "intent": "order",
        "code": {"text": "radmesh AI analysis of an imaging study"},
        "description": f"{model_id} {model_version} on this study (run {correlation_id})",
        "focus": {"reference": imaging_study},
        "input": [{"type": {"text": "correlation-id"}, "valueString": correlation_id}],
    }
    if diagnostic_report is None:
        task["authoredOn"] = now
    else:
        task["lastModified"] = now
        task["output"] = [
            {
                "type": {"text": "diagnostic-report"},
                "valueReference": {"reference": diagnostic_report},
            }
        ]
    if patient:
        task["for"] = {"reference": patient}
    return task
