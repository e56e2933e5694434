"""The review desk: the worklist of open verification Tasks, and deciding one of them.

Deciding reads the Task, the report and its Observations (remembering their versions), checks
that the Task is still open and the verifier exists, writes the verdict in one transaction
guarded by those versions (`verdicts.verdict_bundle`), and only then publishes
finding.verified / finding.rejected in the study's run (the Task keeps its correlation id)
through the outbox (`outbox.py`): an event the broker did not take is published by its sweep.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from services.verification.key_images import display_window
from services.verification.outbox import VerdictOutbox
from services.verification.tasks import (
    finding_view,
    is_verification_task,
    task_run,
    worklist_item,
)
from services.verification.verdicts import (
    InvalidVerdict,
    ReviewedRecord,
    Verdict,
    verdict_bundle,
)
from shared.dicomweb import DicomWebClient
from shared.errors import RemoteConflict, RemoteRejected
from shared.fhir import FhirClient, reference_of
from shared.identifiers import FHIR_ID_PATTERN
from shared.messages import Event
from shared.provenance import pin_provenance_targets
from shared.registry import Algorithm, Registry
from shared.verification_task import TASK_CODE

__all__ = ["ReviewDesk", "TaskConflict", "TaskNotFound"]

log = structlog.get_logger(__name__)
_FHIR_ID = re.compile(rf"^{FHIR_ID_PATTERN}$")
_PRIORITY_ORDER = {"stat": 0, "asap": 1, "urgent": 2, "routine": 3}


class TaskNotFound(Exception):
    """No verification Task with this id (answered with 404)."""


class TaskConflict(Exception):
    """The Task was already decided, or changed while deciding (answered with 409)."""


class ReviewDesk:
    """Lists open verification Tasks and records verdicts on them."""

    def __init__(
        self,
        fhir: FhirClient,
        publish: Callable[[Event], Awaitable[None]],
        fhir_base_url: str,
        worklist_limit: int = 200,
        *,
        registry: Registry | None = None,
        pacs: DicomWebClient | None = None,
        outbox: VerdictOutbox | None = None,
    ) -> None:
        self.fhir = fhir
        self.publish = publish
        self.fhir_base_url = fhir_base_url
        self.worklist_limit = worklist_limit
        self.registry = registry
        self.pacs = pacs
        # The live path of the outbox; its sweep runs where the service wires it (app.py).
        self.outbox = outbox or VerdictOutbox(fhir, publish, sweep_seconds=0)

    def _model(self, task: dict[str, Any]) -> Algorithm | None:
        """The registry entry of the model whose results the Task holds ("<id>/<version>")."""
        model = task_run(task).model
        if self.registry is None or not model or "/" not in model:
            return None
        model_id, version = model.split("/", 1)
        try:
            return self.registry.algorithm(model_id, version)
        except KeyError:
            return None

    async def key_image(self, task_id: str, series: str, sop: str) -> bytes:
        """The PACS's rendering of an instance a finding of the Task lies on, windowed for the
        model's body part; TaskNotFound for any other instance."""
        task, view = await self._task_and_view(task_id)
        named = {(i["series"], i["sop"]) for f in view["findings"] for i in f["images"]}
        if (series, sop) not in named:
            raise TaskNotFound(f"no finding of Task/{task_id} lies on instance {sop}")
        if self.pacs is None:
            raise TaskNotFound("no PACS is configured to render key images")
        model = self._model(task)
        window = display_window(model.body_parts if model else ())
        return await self.pacs.rendered_instance(view["study_instance_uid"], series, sop, window)

    async def open_tasks(self) -> dict[str, Any]:
        """Open (requested) verification Tasks with findings: stat/asap/urgent first, then
        routine, oldest first within each; at most `worklist_limit` Tasks."""
        items: list[dict[str, Any]] = []
        truncated = False
        for priorities in ("stat,asap,urgent", "routine"):
            remaining = self.worklist_limit - len(items)
            if remaining <= 0:
                truncated = True
                break
            page, more = await self._open_tasks_page(priorities, remaining)
            items.extend(sorted(page, key=lambda item: _PRIORITY_ORDER.get(item["priority"], 9)))
            truncated = truncated or more
        return {"tasks": items, "count": len(items), "truncated": truncated}

    async def _open_tasks_page(
        self, priorities: str, count: int
    ) -> tuple[list[dict[str, Any]], bool]:
        bundle: dict[str, Any] | None = await self.fhir.execute(
            "Task",
            "get",
            params={
                "status": "requested",
                "code": f"{TASK_CODE['system']}|{TASK_CODE['code']}",
                "priority": priorities,
                "_include": "Task:focus",
                "_include:iterate": "DiagnosticReport:result",
                "_sort": "authored-on",
                "_count": count,
            },
        )
        resources: dict[str, dict[str, Any]] = {}
        tasks: list[dict[str, Any]] = []
        more = False
        while bundle is not None:
            for entry in bundle.get("entry", []):
                resource = entry.get("resource") or {}
                resources[f"{resource.get('resourceType')}/{resource.get('id')}"] = resource
                if resource.get("resourceType") == "Task" and is_verification_task(resource):
                    tasks.append(resource)
            if len(tasks) >= count:
                more = len(tasks) > count or any(
                    link.get("relation") == "next" for link in bundle.get("link", [])
                )
                break
            bundle = await self.fhir.next_page(bundle)  # the server's page may be smaller
        tasks = tasks[:count]
        await self._read_missing(tasks, resources)
        items = []
        for task in tasks:
            report = resources.get((task.get("focus") or {}).get("reference", ""))
            results = [ref.get("reference", "") for ref in (report or {}).get("result", [])]
            observations = [resources[ref] for ref in results if ref in resources]
            items.append(
                worklist_item(task, report, observations, self.fhir_base_url, self._model(task))
            )
        return items, more

    async def _read_missing(
        self, tasks: list[dict[str, Any]], resources: dict[str, dict[str, Any]]
    ) -> None:
        """Reports and Observations the search did not include (a server that ignores
        `_include`, or `_include:iterate`, as R4 lets it), read by reference: one search by
        `_id` per resource type and step."""
        reports = [(t.get("focus") or {}).get("reference", "") for t in tasks]
        await self._read_by_id("DiagnosticReport", reports, resources)
        results = [
            str(ref.get("reference", ""))
            for report in reports
            for ref in resources.get(report, {}).get("result", [])
        ]
        await self._read_by_id("Observation", results, resources)

    async def _read_by_id(
        self, resource_type: str, references: list[str], resources: dict[str, dict[str, Any]]
    ) -> None:
        prefix = f"{resource_type}/"
        ids = sorted(
            {
                ref.removeprefix(prefix)
                for ref in references
                if ref.startswith(prefix) and ref not in resources
            }
        )
        for start in range(0, len(ids), 50):
            chunk = ids[start : start + 50]
            bundle = await self.fhir.execute(
                resource_type, "get", params={"_id": ",".join(chunk), "_count": len(chunk)}
            )
            for entry in bundle.get("entry", []):
                resource = entry.get("resource") or {}
                resources[f"{resource.get('resourceType')}/{resource.get('id')}"] = resource

    async def task_view(self, task_id: str) -> dict[str, Any]:
        """One verification Task (open or decided) as the worklist shows it."""
        return (await self._task_and_view(task_id))[1]

    async def _task_and_view(self, task_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        if not _FHIR_ID.fullmatch(task_id):
            raise TaskNotFound(f"{task_id!r} is not a FHIR id")
        task = await self._get(f"Task/{task_id}")
        if task is None or not is_verification_task(task):
            raise TaskNotFound(f"there is no verification Task/{task_id}")
        resources: dict[str, dict[str, Any]] = {}
        await self._read_missing([task], resources)
        report = resources.get((task.get("focus") or {}).get("reference", ""))
        results = [ref.get("reference", "") for ref in (report or {}).get("result", [])]
        observations = [resources[ref] for ref in results if ref in resources]
        view = worklist_item(task, report, observations, self.fhir_base_url, self._model(task))
        return task, view

    async def report_view(self, report_id: str) -> dict[str, Any]:
        """A DiagnosticReport with its findings, whatever its status (the caller decides who
        may see which status)."""
        if not _FHIR_ID.fullmatch(report_id):
            raise TaskNotFound(f"{report_id!r} is not a FHIR id")
        report = await self._get(f"DiagnosticReport/{report_id}")
        if report is None:
            raise TaskNotFound(f"there is no DiagnosticReport/{report_id}")
        resources: dict[str, dict[str, Any]] = {}
        references = [str(ref.get("reference", "")) for ref in report.get("result", [])]
        await self._read_by_id("Observation", references, resources)
        return {
            "diagnostic_report": f"DiagnosticReport/{report_id}",
            "patient": (report.get("subject") or {}).get("reference"),
            "status": report.get("status"),
            "code": (report.get("code") or {}).get("text")
            or next((c.get("display") for c in report.get("code", {}).get("coding", [])), None),
            "conclusion": report.get("conclusion"),
            "issued": report.get("issued"),
            "findings": [finding_view(resources[r]) for r in references if r in resources],
        }

    async def open_task_counts(self) -> dict[str, Any]:
        """How many verification Tasks wait, per priority, and since when (no patient data)."""
        counts: dict[str, Any] = {}
        for priority in ("stat", "asap", "urgent", "routine"):
            bundle = await self.fhir.execute(
                "Task",
                "get",
                params={
                    "status": "requested",
                    "code": f"{TASK_CODE['system']}|{TASK_CODE['code']}",
                    "priority": priority,
                    "_sort": "authored-on",
                    "_count": 1,
                    "_total": "accurate",
                    "_elements": "authoredOn",
                },
            )
            oldest = next(
                (e.get("resource", {}).get("authoredOn") for e in bundle.get("entry", [])), None
            )
            counts[priority] = {"waiting": bundle.get("total"), "oldest_authored_on": oldest}
        return {"open_verification_tasks": counts}

    async def decide(self, task_id: str, verdict: Verdict) -> dict[str, Any]:
        """Record the verdict on the Task; returns what was written and the event published."""
        record = await self._read(task_id, verdict)
        run = task_run(record.task)
        structlog.contextvars.bind_contextvars(
            correlation_id=str(run.correlation_id),
            study_instance_uid=run.study.study_instance_uid,
            task=f"Task/{task_id}",
        )
        bundle = verdict_bundle(record, verdict, datetime.now(UTC), self.fhir_base_url)
        try:
            response = await self.fhir.transaction(
                bundle, replace_security_labels=True, representation=True
            )
        except (RemoteConflict, RemoteRejected) as error:
            if error.status in (409, 412):
                raise TaskConflict(
                    f"Task/{task_id}, its report or an Observation changed while the verdict "
                    "was being written; nothing was stored: reload the worklist and decide again"
                ) from error
            raise
        provenance = reference_of(response["entry"][-1])
        await pin_provenance_targets(self.fhir, bundle, response)
        report = f"DiagnosticReport/{record.report['id']}"
        event, published = await self.outbox.release(
            await self.fhir.read_resource(f"Task/{task_id}")
        )
        log.info(
            "verdict_recorded",
            verdict=verdict.kind,
            observations=len(record.observations),
            event_published=published,
        )
        return {
            "task": f"Task/{task_id}",
            "status": "completed",
            "verdict": verdict.kind,
            "verifier": verdict.verifier.reference,
            "diagnostic_report": report,
            "observations": [f"Observation/{o['id']}" for o in record.observations],
            "provenance": provenance,
            "event": event.event_type,
            "event_published": published,
        }

    async def _read(self, task_id: str, verdict: Verdict) -> ReviewedRecord:
        if not _FHIR_ID.fullmatch(task_id):
            raise TaskNotFound(f"{task_id!r} is not a FHIR id")
        task = await self._get(f"Task/{task_id}")
        if task is None or not is_verification_task(task):
            raise TaskNotFound(f"there is no verification Task/{task_id}")
        if task.get("status") != "requested":
            raise TaskConflict(
                f"Task/{task_id} is {task.get('status')}: it was already decided, nothing changed"
            )
        if await self._get(verdict.verifier.reference) is None:
            raise InvalidVerdict(
                f"verifier {verdict.verifier.reference} does not exist on the FHIR server"
            )
        report_reference = (task.get("focus") or {}).get("reference")
        report = await self._get(report_reference) if report_reference else None
        if report is None:
            raise TaskConflict(f"Task/{task_id} points at no readable DiagnosticReport")
        if report.get("status") != "preliminary":
            raise TaskConflict(
                f"the report of Task/{task_id} is {report.get('status')}, not preliminary: "
                "it was decided elsewhere; nothing changed"
            )
        references = [
            str(ref["reference"]) for ref in report.get("result", []) if ref.get("reference")
        ]
        observations = await asyncio.gather(*(self._get(ref) for ref in references))
        missing = [
            ref for ref, found in zip(references, observations, strict=True) if found is None
        ]
        if missing:
            raise TaskConflict(f"the report of Task/{task_id} refers to missing {missing}")
        return ReviewedRecord(
            task=task, report=report, observations=[o for o in observations if o is not None]
        )

    async def _get(self, reference: str) -> dict[str, Any] | None:
        """The resource, or None when the server says it does not exist (404/410)."""
        try:
            resource = await self.fhir.execute(reference, "get")
        except RemoteRejected as error:
            if error.status in (404, 410):
                return None
            raise
        return dict(resource)
