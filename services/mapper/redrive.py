"""Re-driving runs left half-done: the mapper's consistency sweep.

results.posted is what turns a run's results into a verification Task and, for each critical
finding, an alert. If that message was lost after the results transaction (a crash between the
write and the publish, a queue purged by hand, a consumer's dead letter replayed too late), the
record keeps a preliminary report nobody will review and a bleed nobody was told about.

Every `redrive_interval_seconds` the sweep reads the preliminary radmesh DiagnosticReports last
updated in the past `redrive_hours` but at least `redrive_grace_seconds` ago (the consumers'
time to act), and checks each for its verification Task and, for every present critical finding,
its alert Communication. A run missing either is announced again: results.posted rebuilt from the
record (the same report, Observations, Device and Provenance; the registry says which findings are
critical), so the verification service and the notifier create what is missing and find the rest
(conditional creates). Each re-drive is logged (`run_redriven`, with what was missing) and
counted (`radmesh_runs_redriven_total{missing}`).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from services.mapper.observations import PRESENT, PROBABILITY_CODE
from shared.fhir import FhirClient
from shared.identifiers import (
    FindingValue,
    StudyRun,
    business_identifier,
    radmesh_identifier_value,
    radmesh_system,
)
from shared.messages import Event, ModelRef, PostedFinding, ResultsPosted, StudyRef
from shared.metrics import RUNS_REDRIVEN
from shared.registry import ModelEntry, Registry

__all__ = ["RedriveRuns"]

log = structlog.get_logger(__name__)


def _reference(value: Any) -> str | None:
    if isinstance(value, list):
        value = value[0] if value else None
    return str(value["reference"]) if isinstance(value, dict) and value.get("reference") else None


def _present(observation: dict[str, Any]) -> bool:
    codings = (observation.get("valueCodeableConcept") or {}).get("coding", [])
    return "valueQuantity" in observation or any(
        c.get("code") == PRESENT["code"] for c in codings
    )


def _probability(observation: dict[str, Any]) -> float | None:
    for component in observation.get("component", []):
        codes = {c.get("code") for c in (component.get("code") or {}).get("coding", [])}
        value = (component.get("valueQuantity") or {}).get("value")
        if PROBABILITY_CODE["code"] in codes and isinstance(value, int | float):
            return float(value)
    return None


def _posted(observation: dict[str, Any], model: ModelEntry) -> PostedFinding:
    """The finding as results.posted carried it, read back from its Observation (ValueError or
    KeyError when the Observation is not one of this model's findings)."""
    finding = FindingValue.parse(radmesh_identifier_value(observation) or "")
    present = _present(observation)
    return PostedFinding(
        finding_key=finding.finding_key,
        index=finding.index,
        observation=f"Observation/{observation['id']}",
        present=present,
        probability=_probability(observation),
        critical=model.finding(finding.finding_key).critical and present,
    )


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
    ) -> None:
        self.registry = registry
        self.fhir = fhir
        self.publish = publish
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
        for observation, posted in findings:
            key = radmesh_identifier_value(observation) or ""
            if posted.critical and not await self._exists("Communication", key):
                missing.append("alert")
                break
        if not missing:
            return 0
        event = await self._results_posted(report, findings, run, model)
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
        model: ModelEntry,
    ) -> ResultsPosted | None:
        """results.posted as the mapper published it, read back from the record; None (logged)
        when the record lacks what it needs (the run's Provenance or Device)."""
        provenance = await self.fhir.execute(
            "Provenance",
            "get",
            params={"_tag": f"{radmesh_system('Provenance')}|{run.value}", "_count": 1},
        )
        (entry, *_) = provenance.get("entry") or [{}]
        imaging_study = _reference(report.get("imagingStudy"))
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
            study=StudyRef(
                study_instance_uid=run.study_instance_uid,
                imaging_study=imaging_study,
                patient=_reference(report.get("subject")),
                service_request=_reference(report.get("basedOn")),
                encounter=_reference(report.get("encounter")),
            ),
            model=ModelRef(id=run.model_id, version=run.model_version, generation=run.generation),
            diagnostic_report=f"DiagnosticReport/{report['id']}",
            device=device,
            provenance=f"Provenance/{provenance_id}",
            findings=tuple(posted for _, posted in findings),
            rollout_mode=model.rollout,
        )

