"""Re-driving runs left half-done: the mapper's consistency sweep.

results.posted is what turns a run's results into a verification Task and, for each critical
finding, an alert. If that message was lost after the results transaction (a crash between the
write and the publish, a queue purged by hand, a consumer's dead letter replayed too late), the
record keeps a preliminary report nobody will review and a bleed nobody was told about.

Every `redrive_interval_seconds` the sweep reads the preliminary radmesh DiagnosticReports last
updated in the past `redrive_hours` but at least `redrive_grace_seconds` ago (the consumers'
time to act), and checks each for its verification Task, for every present critical finding
its alert Communication, and (when the mapper writes SRs) its SR in the PACS. A run missing the
Task or an alert is announced again: results.posted rebuilt from the record (the same report,
Observations, Device and Provenance; the registry says which findings are critical), so the
verification service and the notifier create what is missing and find the rest (conditional
creates). A missing SR is stored again, rebuilt from the same record (the findings read back
from their Observations, `observations.finding_of_observation`; the same deterministic UIDs).
Each re-drive is logged (`run_redriven`, with what was missing) and counted
(`radmesh_runs_redriven_total{missing}`).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from services.mapper.handlers import store_structured_report
from services.mapper.observations import finding_of_observation
from services.mapper.structured_report import sr_uids
from shared.dicomweb import DicomWebClient
from shared.fhir import FhirClient
from shared.identifiers import (
    StudyRun,
    business_identifier,
    radmesh_identifier_value,
    radmesh_system,
)
from shared.messages import (
    Event,
    Finding,
    InferenceCompleted,
    ModelRef,
    PostedFinding,
    ResultsPosted,
    StudyRef,
)
from shared.metrics import RUNS_REDRIVEN
from shared.registry import Algorithm, Registry

__all__ = ["RedriveRuns"]

log = structlog.get_logger(__name__)


def _reference(value: Any) -> str | None:
    if isinstance(value, list):
        value = value[0] if value else None
    return str(value["reference"]) if isinstance(value, dict) and value.get("reference") else None


def _posted(observation: dict[str, Any], model: Algorithm) -> tuple[Finding, PostedFinding]:
    """The finding read back from its Observation, and as results.posted carried it (ValueError
    or KeyError when the Observation is not one of this model's findings)."""
    finding = finding_of_observation(observation)
    return finding, PostedFinding(
        finding_key=finding.finding_key,
        index=finding.index,
        observation=f"Observation/{observation['id']}",
        present=finding.present,
        probability=finding.probability,
        critical=model.finding(finding.finding_key).critical and finding.present,
    )


def _issued(report: dict[str, Any]) -> datetime:
    """When the run's report was issued (its SR's content time), else now."""
    try:
        return datetime.fromisoformat(str(report["issued"]))
    except (KeyError, ValueError):
        return datetime.now(UTC)


class RedriveRuns:
    """The sweep (see the module's docstring); `publish` is the bus's."""

    def __init__(
        self,
        registry: Registry,
        fhir: FhirClient,
        publish: Callable[[Event], Awaitable[None]],
        *,
        hours: float,
        grace_seconds: float,
        dicomweb: DicomWebClient | None = None,
    ) -> None:
        self.registry = registry
        self.fhir = fhir
        self.publish = publish
        self.dicomweb = dicomweb  # None: SRs are not written, nor checked
        self.hours = hours
        self.grace_seconds = grace_seconds

    async def sweep(self, now: datetime | None = None) -> int:
        """One round; how many runs were announced again."""
        now = now or datetime.now(UTC)
        bundle: dict[str, Any] | None = await self.fhir.execute(
            "DiagnosticReport",
            "get",
            params={
                "identifier": f"{radmesh_system('DiagnosticReport')}|",
                "status": "preliminary",
                "_lastUpdated": [
                    f"ge{(now - timedelta(hours=self.hours)).isoformat()}",
                    f"le{(now - timedelta(seconds=self.grace_seconds)).isoformat()}",
                ],
                "_include": "DiagnosticReport:result",
                "_count": 50,
            },
        )
        redriven = 0
        while bundle is not None:
            resources = [e["resource"] for e in bundle.get("entry", []) if "resource" in e]
            by_reference = {f"{r['resourceType']}/{r['id']}": r for r in resources}
            for report in (r for r in resources if r["resourceType"] == "DiagnosticReport"):
                redriven += await self._check(report, by_reference)
            bundle = await self.fhir.next_page(bundle)
        if redriven:
            log.warning("redrive_swept", redriven=redriven)
        return redriven

    async def _check(self, report: dict[str, Any], resources: dict[str, dict[str, Any]]) -> int:
        observations = [
            resources[ref]
            for ref in (_reference(r) for r in report.get("result", []))
            if ref in resources
        ]
        try:
            run = StudyRun.parse(radmesh_identifier_value(report) or "")
            model = self.registry.get(run.model_id, run.model_version)
            findings = [
                (observation, _posted(observation, model)) for observation in observations
            ]
        except (ValueError, KeyError) as error:
            log.info(
                "run_not_checked",
                diagnostic_report=f"DiagnosticReport/{report['id']}",
                reason=f"not a run this registry can rebuild: {error}",
            )
            return 0
        missing = []
        if not await self._exists("Task", run.value):
            missing.append("verification-task")
        for observation, (_, posted) in findings:
            key = radmesh_identifier_value(observation) or ""
            if posted.critical and not await self._exists("Communication", key):
                missing.append("alert")
                break
        sr_missing = self.dicomweb is not None and not await self._sr_in_pacs(run, model)
        if not missing and not sr_missing:
            return 0
        study = self._study(report, run)
        if sr_missing and self.dicomweb is not None:
            stored = await store_structured_report(
                InferenceCompleted(
                    created_at=_issued(report),
                    study=study,
                    model=ModelRef(
                        id=run.model_id, version=run.model_version, generation=run.generation
                    ),
                    findings=tuple(finding for _, (finding, _) in findings),
                    inference_duration_ms=0.0,
                ),
                model,
                self.dicomweb,
            )
            if stored:
                RUNS_REDRIVEN.labels(missing="structured-report").inc()
                log.warning(
                    "run_redriven",
                    diagnostic_report=f"DiagnosticReport/{report['id']}",
                    missing=["structured-report"],
                    study_instance_uid=run.study_instance_uid,
                )
        if not missing:
            return int(sr_missing)
        event = await self._results_posted(
            report, [(o, posted) for o, (_, posted) in findings], run, model, study
        )
        if event is None:
            return 0
        await self.publish(event)
        for what in missing:
            RUNS_REDRIVEN.labels(missing=what).inc()
        log.warning(
            "run_redriven",
            diagnostic_report=event.diagnostic_report,
            missing=missing,
            correlation_id=str(event.correlation_id),
            study_instance_uid=run.study_instance_uid,
        )
        return 1

    async def _sr_in_pacs(self, run: StudyRun, model: Algorithm) -> bool:
        assert self.dicomweb is not None
        series_uid, sop_uid = sr_uids(run.study_instance_uid, model, run.generation)
        instances = await self.dicomweb.search_instances(run.study_instance_uid, series_uid)
        return any(instance.sop_instance_uid == sop_uid for instance in instances)

    @staticmethod
    def _study(report: dict[str, Any], run: StudyRun) -> StudyRef:
        return StudyRef(
            study_instance_uid=run.study_instance_uid,
            imaging_study=_reference(report.get("imagingStudy")),
            patient=_reference(report.get("subject")),
            service_request=_reference(report.get("basedOn")),
            encounter=_reference(report.get("encounter")),
            started=report.get("effectiveDateTime"),
        )

    async def _exists(self, resource_type: str, value: str) -> bool:
        identifier = business_identifier(resource_type, value)
        found = await self.fhir.execute(
            resource_type,
            "get",
            params={"identifier": f"{identifier['system']}|{identifier['value']}", "_count": 1},
        )
        return bool(found.get("entry"))

    async def _results_posted(
        self,
        report: dict[str, Any],
        findings: list[tuple[dict[str, Any], PostedFinding]],
        run: StudyRun,
        model: Algorithm,
        study: StudyRef,
    ) -> ResultsPosted | None:
        """results.posted as the mapper published it, read back from the record; None (logged)
        when the record lacks what it needs (the run's Provenance or Device)."""
        provenance = await self.fhir.execute(
            "Provenance",
            "get",
            params={"_tag": f"{radmesh_system('Provenance')}|{run.value}", "_count": 1},
        )
        (entry, *_) = provenance.get("entry") or [{}]
        device = _reference(findings[0][0].get("device")) if findings else None
        provenance_id = (entry.get("resource") or {}).get("id")
        if device is None or provenance_id is None:
            log.error(
                "run_not_redriven",
                diagnostic_report=f"DiagnosticReport/{report['id']}",
                reason="the run's Device or Provenance is not on the FHIR server",
                action="look at the report by hand; its Task or alert is missing",
            )
            return None
        return ResultsPosted(
            correlation_id=uuid.uuid4(),
            study=study,
            model=ModelRef(id=run.model_id, version=run.model_version, generation=run.generation),
            diagnostic_report=f"DiagnosticReport/{report['id']}",
            device=device,
            provenance=f"Provenance/{provenance_id}",
            findings=tuple(posted for _, posted in findings),
            rollout_mode=model.rollout,
        )

