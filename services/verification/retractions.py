"""Retracting AI results whose images changed (IHE IOCM) or whose study changed patient.

study.retracted (from the subscriber: the PACS deleted series or a whole study, a rejection
note rejected images, or the ImagingStudy's patient changed) → every radmesh run on the study
whose findings were read from a retracted series (every run, when the whole study is
retracted) is retracted in one guarded transaction (`ifMatch` on each version read):

- its Observations and DiagnosticReport become `entered-in-error`, a note and the conclusion
  saying when and why (the AI's words are kept after it);
- its verification Task is `cancelled` with the coded reason when no radiologist decided it
  yet; a decided one keeps its verdict and gets a note (the report it verified is retracted);
- its analysis claim is `cancelled` (created so when the mapper wrote none), so that the
  study's next announcement starts the run's next generation under new identifiers
  (shared.claims): a study sent again after a correction is analysed afresh;
- after a deletion, a patient change or an operator's re-analysis (`radmesh rerun`), runs still
  in progress are cancelled too (their claim; the mapper then posts nothing for them);
- a Provenance (activity NULLIFY, reason the IOCM code) names every changed resource.

Then results.retracted goes out per run: the notifier withdraws the run's alerts, the mapper
rejects its SR in the PACS. A run found already retracted is not written again but announced
again, so a retraction whose events were lost (a broker outage after the write) still reaches
the alerts; both consumers are idempotent.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from shared.claims import (
    ANNOUNCED_CLAIM_STATUS,
    CLAIMED_STATUS,
    RETRACTED_CLAIM_STATUS,
    analysis_claim_search,
    analysis_claim_task,
)
from shared.codes import NULLIFY, PROVENANCE_AUTHOR
from shared.fhir import FhirClient, reference_of, transaction_bundle, versioned_update_entry
from shared.identifiers import (
    ANALYSIS_CLAIM_SYSTEM,
    DICOM_IMAGE_EXTENSION,
    DICOM_UID_SYSTEM,
    StudyRun,
    radmesh_identifier_value,
    radmesh_system,
)
from shared.iocm import reason_coding
from shared.messages import Event, ResultsRetracted, StudyRetracted
from shared.metrics import RESULTS_RETRACTED
from shared.provenance import pin_provenance_targets

__all__ = ["RetractResults", "RetractedRun", "retraction_bundle", "series_of"]

log = structlog.get_logger(__name__)

RETRACTED = "entered-in-error"
# Task states in which no radiologist has decided yet (FHIR R4 TaskStatus).
_UNDECIDED = {"draft", "requested", "received", "accepted", "ready", "in-progress", "on-hold"}
_NULLIFY = NULLIFY.concept(text="retract")
_AUTHOR = PROVENANCE_AUTHOR.concept()
_SOURCE_WORDS = {
    "pacs-deleted": "the PACS deleted the images it was made from",
    "pacs-rejection-note": "a rejection note in the PACS rejected the images it was made from",
    "patient-changed": "the imaging study was filed under another patient",
    "operator-rerun": "an operator asked for the study to be analysed again",
}


@dataclass(frozen=True)
class RetractedRun:
    """One run's resources as read just before the retraction."""

    report: dict[str, Any]
    observations: list[dict[str, Any]]
    verification_task: dict[str, Any] | None
    claim: dict[str, Any] | None


def series_of(observation: dict[str, Any]) -> set[str]:
    """The DICOM series an Observation's finding was read from (its image extension)."""
    found = set()
    for extension in observation.get("extension", []):
        if extension.get("url") != DICOM_IMAGE_EXTENSION:
            continue
        for part in extension.get("extension", []):
            if part.get("url") == "seriesInstanceUid" and part.get("valueOid"):
                found.add(str(part["valueOid"]).removeprefix("urn:oid:"))
    return found


def retraction_text(event: StudyRetracted, when: str) -> str:
    """Why, for people: the source, the coded reason, the subscriber's words."""
    return (
        f"Retracted by radmesh on {when}: {_SOURCE_WORDS[event.source]} "
        f"({reason_coding(event.reason_code)['display']}: {event.reason})."
    )


def _status_reason(event: StudyRetracted, text: str) -> dict[str, Any]:
    return {"coding": [reason_coding(event.reason_code)], "text": text}


def _note(resource: dict[str, Any], text: str, when: str) -> list[dict[str, Any]]:
    return [*resource.get("note", []), {"authorString": "radmesh", "time": when, "text": text}]


def _reference(resource: dict[str, Any]) -> dict[str, str]:
    return {"reference": f"{resource['resourceType']}/{resource['id']}"}


def _claim_entry(
    run: RetractedRun, event: StudyRetracted, text: str, base_url: str
) -> dict[str, Any] | None:
    """The cancelled claim: the existing one updated, or (none written) a new one created by a
    conditional PUT, so that the next announcement finds this generation retracted."""
    status_reason = _status_reason(event, text)
    if run.claim is not None:
        if run.claim.get("status") == RETRACTED_CLAIM_STATUS:
            return None
        cancelled = {**run.claim, "status": RETRACTED_CLAIM_STATUS, "statusReason": status_reason}
        return versioned_update_entry(cancelled, base_url)
    value = radmesh_identifier_value(run.report)
    studies: list[dict[str, Any]] = run.report.get("imagingStudy", [])
    imaging_study = studies[0].get("reference") if studies else None
    if value is None or imaging_study is None:
        return None
    parsed = StudyRun.parse(value)
    task = analysis_claim_task(
        value=value,
        imaging_study=str(imaging_study),
        patient=(run.report.get("subject") or {}).get("reference"),
        model_id=parsed.model_id,
        model_version=parsed.model_version,
        correlation_id=str(event.correlation_id),
    )
    task.update(status=RETRACTED_CLAIM_STATUS, statusReason=status_reason)
    return {
        "fullUrl": f"urn:uuid:{uuid.uuid4()}",
        "resource": task,
        "request": {"method": "PUT", "url": f"Task?{analysis_claim_search(value)}"},
    }


def retraction_bundle(
    run: RetractedRun, event: StudyRetracted, now: datetime, base_url: str
) -> dict[str, Any]:
    """The transaction retracting one run; the Provenance is its last entry."""
    when = now.isoformat()
    text = retraction_text(event, when)
    changed: list[dict[str, Any]] = []
    entries = []
    for observation in run.observations:
        if observation.get("status") != RETRACTED:
            retracted = {**observation, "status": RETRACTED, "note": _note(observation, text, when)}
            entries.append(versioned_update_entry(retracted, base_url))
            changed.append(observation)
    report = {
        **run.report,
        "status": RETRACTED,
        "conclusion": f"{text} The AI had reported: {run.report.get('conclusion') or ''}".strip(),
    }
    entries.append(versioned_update_entry(report, base_url))
    changed.append(run.report)
    task = run.verification_task
    if task is not None and task.get("status") in _UNDECIDED:
        cancelled = {**task, "status": "cancelled", "statusReason": _status_reason(event, text)}
        entries.append(versioned_update_entry(cancelled, base_url))
        changed.append(task)
    elif task is not None:
        entries.append(versioned_update_entry({**task, "note": _note(task, text, when)}, base_url))
        changed.append(task)
    claim = _claim_entry(run, event, text, base_url)
    if claim is not None:
        entries.append(claim)
    entries.append(
        {
            "fullUrl": f"urn:uuid:{uuid.uuid4()}",
            "resource": {
                "resourceType": "Provenance",
                "target": [_reference(resource) for resource in changed],
                "recorded": when,
                "activity": _NULLIFY,
                "agent": [{"type": _AUTHOR, "who": {"display": "radmesh"}}],
                "reason": [_status_reason(event, text)],
            },
            "request": {"method": "POST", "url": "Provenance"},
        }
    )
    return transaction_bundle(entries)


class RetractResults:
    """The consumer of study.retracted (see the module's docstring)."""

    def __init__(self, fhir: FhirClient, base_url: str) -> None:
        self.fhir = fhir
        self.base_url = base_url

    async def __call__(self, event: StudyRetracted) -> Sequence[Event]:
        studies = await self._search(
            "ImagingStudy",
            {
                "identifier": f"{DICOM_UID_SYSTEM}|urn:oid:{event.study.study_instance_uid}",
                "_elements": "id",
            },
        )
        await self._cancel_runs_in_flight(event, studies)
        runs = await self._runs(event, studies)
        if not runs:
            log.info("nothing_to_retract", reason="no radmesh result read from these images")
            return []
        announced: list[Event] = []
        for run in runs:
            provenance = None
            if run.report.get("status") != RETRACTED:
                bundle = retraction_bundle(run, event, datetime.now(UTC), self.base_url)
                response = await self.fhir.transaction(bundle, representation=True)
                provenance = reference_of(response["entry"][-1])
                await pin_provenance_targets(self.fhir, bundle, response)
                RESULTS_RETRACTED.labels(source=event.source).inc()
                log.warning(
                    "results_retracted",
                    diagnostic_report=f"DiagnosticReport/{run.report['id']}",
                    source=event.source,
                    reason_code=event.reason_code,
                    observations=len(run.observations),
                )
            task = run.verification_task
            announced.append(
                event.follow(
                    ResultsRetracted,
                    study=event.study,
                    diagnostic_report=f"DiagnosticReport/{run.report['id']}",
                    task=f"Task/{task['id']}" if task else None,
                    provenance=provenance,
                    source=event.source,
                    reason_code=event.reason_code,
                    reason=event.reason,
                    sr_in_pacs=not (
                        event.source == "pacs-deleted" and not event.series_instance_uids
                    ),
                )
            )
        return announced

    async def _cancel_runs_in_flight(
        self, event: StudyRetracted, studies: list[dict[str, Any]]
    ) -> None:
        """After a deletion, a patient change or an operator's re-analysis, cancel the claims
        of the study's runs still claimed, in progress or given up (`failed`, stale_claims in the
        subscriber) (which series they read is not known yet; for a patient change, those of
        another patient): the mapper posts no results for a cancelled run, and the study's next
        announcement starts the next generation. Not for rejection notes: they are read again
        at every stable-study event, and the fetcher leaves rejected series out of every run."""
        if event.source == "pacs-rejection-note":
            return
        now = datetime.now(UTC).isoformat()
        text = retraction_text(event, now)
        entries = []
        for imaging_study in studies:
            claims = await self._search(
                "Task",
                {
                    "focus": f"ImagingStudy/{imaging_study['id']}",
                    "identifier": f"{ANALYSIS_CLAIM_SYSTEM}|",
                    "status": f"{CLAIMED_STATUS},{ANNOUNCED_CLAIM_STATUS},failed",
                },
            )
            for claim in claims:
                patient = (claim.get("for") or {}).get("reference")
                if event.source == "patient-changed" and patient == event.study.patient:
                    continue
                cancelled = {
                    **claim,
                    "status": RETRACTED_CLAIM_STATUS,
                    "statusReason": _status_reason(event, text),
                }
                entries.append(versioned_update_entry(cancelled, self.base_url))
        if entries:
            await self.fhir.transaction(transaction_bundle(entries))
            log.warning("runs_in_flight_cancelled", runs=len(entries), source=event.source)

    async def _runs(
        self, event: StudyRetracted, studies: list[dict[str, Any]]
    ) -> list[RetractedRun]:
        """The study's radmesh runs whose findings were read from the retracted series."""
        reports: dict[str, dict[str, Any]] = {}
        observations: dict[str, dict[str, Any]] = {}
        for imaging_study in studies:
            found = await self._search(
                "Observation",
                {
                    "derived-from": f"ImagingStudy/{imaging_study['id']}",
                    "identifier": f"{radmesh_system('Observation')}|",
                    "_revinclude": "DiagnosticReport:result",
                    "_count": 100,
                },
            )
            for resource in found:
                reference = f"{resource['resourceType']}/{resource['id']}"
                if resource["resourceType"] == "Observation":
                    observations[reference] = resource
                elif radmesh_identifier_value(resource) is not None:
                    reports[reference] = resource
        wanted = set(event.series_instance_uids)
        runs = []
        for report in reports.values():
            results = [
                observations[str(ref.get("reference"))]
                for ref in report.get("result", [])
                if str(ref.get("reference")) in observations
            ]
            read_from = set().union(*(series_of(o) for o in results)) if results else set()
            if wanted and not (read_from & wanted):
                continue
            subject = (report.get("subject") or {}).get("reference")
            if event.source == "patient-changed" and subject == event.study.patient:
                continue  # a run for the patient the study is filed under now
            runs.append(await self._run(report, results))
        return runs

    async def _run(
        self, report: dict[str, Any], observations: list[dict[str, Any]]
    ) -> RetractedRun:
        value = radmesh_identifier_value(report) or ""
        tasks = await self._search(
            "Task",
            {"identifier": f"{radmesh_system('Task')}|{value},{ANALYSIS_CLAIM_SYSTEM}|{value}"},
        )

        def task_of(system: str) -> dict[str, Any] | None:
            return next(
                (
                    task
                    for task in tasks
                    if any(i.get("system") == system for i in task.get("identifier", []))
                ),
                None,
            )

        return RetractedRun(
            report=report,
            observations=observations,
            verification_task=task_of(radmesh_system("Task")),
            claim=task_of(ANALYSIS_CLAIM_SYSTEM),
        )

    async def _search(self, resource_type: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Every match of a search, across the server's pages."""
        bundle: dict[str, Any] | None = await self.fhir.execute(resource_type, "get", params=params)
        found = []
        while bundle is not None:
            found += [entry["resource"] for entry in bundle.get("entry", []) if "resource" in entry]
            bundle = await self.fhir.next_page(bundle)
        return found
