"""Watching a running mesh: every event on the radmesh exchange, grouped per study, until each
study's results (and alert, and verification Task) are in. Used by `make demo` and the e2e tests.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aio_pika

from shared.fhir import FhirClient
from shared.messages import EVENT_TYPES, Event

__all__ = ["MeshWatcher", "StudyProgress"]


@dataclass
class StudyProgress:
    """The events seen for one study, in arrival order, and the Tasks found for its reports."""

    study_instance_uid: str
    events: list[Event] = field(default_factory=list)
    tasks: dict[str, str] = field(default_factory=dict)  # DiagnosticReport ref → Task ref

    def of_type(self, event_type: str) -> list[Any]:
        return [event for event in self.events if event.event_type == event_type]

    def caused_by(self, cause: Event, event_type: str) -> list[Any]:
        """The events of `event_type` seen that `cause` caused (their causation id is its id)."""
        return [
            event for event in self.of_type(event_type) if event.causation_id == cause.message_id
        ]

    def first(self, event_type: str) -> Any | None:
        found = self.of_type(event_type)
        return found[0] if found else None

    @property
    def expected_models(self) -> set[str]:
        return {
            model.id for detected in self.of_type("study.detected") for model in detected.models
        }

    def missing(self) -> list[str]:
        """What has not happened yet (empty when the study is complete)."""
        if not self.of_type("study.detected"):
            return ["study.detected (the hook never reached the subscriber?)"]
        missing = []
        posted = {event.model.id: event for event in self.of_type("results.posted")}
        for model in sorted(self.expected_models):
            if model not in posted:
                stage = "results.posted"
                if not any(e.model.id == model for e in self.of_type("inference.completed")):
                    stage = "inference.completed"
                if not any(e.model.id == model for e in self.of_type("study.fetched")):
                    stage = "study.fetched"
                missing.append(f"{stage} for {model}")
        for event in posted.values():
            if any(f.critical for f in event.findings) and not any(
                alert.diagnostic_report == event.diagnostic_report
                for alert in self.of_type("alert.raised")
            ):
                missing.append(f"alert.raised for {event.diagnostic_report}")
            if event.diagnostic_report not in self.tasks:
                missing.append(f"Task for {event.diagnostic_report}")
        return missing

    def stage_seconds(self) -> dict[str, float]:
        """Seconds between the events of the first run: detect → fetch → infer → post → alert."""
        stages = [
            ("fetch", "study.detected", "study.fetched"),
            ("inference", "study.fetched", "inference.completed"),
            ("mapping", "inference.completed", "results.posted"),
            ("alert", "results.posted", "alert.raised"),
        ]
        seconds = {}
        for name, start_type, end_type in stages:
            start, end = self.first(start_type), self.first(end_type)
            if start is not None and end is not None:
                seconds[name] = _seconds(start.created_at, end.created_at)
        return seconds


def _seconds(start: datetime, end: datetime) -> float:
    return round((end - start).total_seconds(), 3)


class MeshWatcher:
    """An exclusive queue bound to every routing key of the radmesh exchange."""

    def __init__(self, amqp_url: str, exchange: str, fhir: FhirClient) -> None:
        self.amqp_url = amqp_url
        self.exchange = exchange
        self.fhir = fhir
        self.studies: dict[str, StudyProgress] = {}
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._queue: aio_pika.abc.AbstractQueue | None = None

    async def start(self) -> None:
        self._connection = await aio_pika.connect_robust(self.amqp_url)
        channel = await self._connection.channel()
        exchange = await channel.declare_exchange(
            self.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        self._queue = await channel.declare_queue(
            f"radmesh.watch-{uuid.uuid4().hex[:8]}", exclusive=True, auto_delete=True
        )
        await self._queue.bind(exchange, routing_key="#")

    async def stop(self) -> None:
        if self._connection is not None:
            await self._connection.close()

    def track(self, study_instance_uid: str) -> StudyProgress:
        return self.studies.setdefault(study_instance_uid, StudyProgress(study_instance_uid))

    async def _drain(self) -> None:
        assert self._queue is not None
        while (message := await self._queue.get(no_ack=True, fail=False)) is not None:
            event_class = EVENT_TYPES.get(message.routing_key or "")
            if event_class is None:
                continue
            event = event_class.model_validate_json(message.body)
            study = getattr(event, "study", None)
            if study is not None and study.study_instance_uid in self.studies:
                self.studies[study.study_instance_uid].events.append(event)

    async def poll(self) -> None:
        """Take in the events published since the last look, without waiting for anything."""
        await self._drain()

    async def _find_tasks(self, progress: StudyProgress) -> None:
        for posted in progress.of_type("results.posted"):
            if posted.diagnostic_report in progress.tasks:
                continue
            tasks = await self.fhir.resources("Task").search(focus=posted.diagnostic_report).fetch()
            if tasks:
                progress.tasks[posted.diagnostic_report] = f"Task/{tasks[0]['id']}"

    async def wait(self, timeout_seconds: float, poll_seconds: float = 0.25) -> list[StudyProgress]:
        """Until every tracked study is complete or the timeout passes; returns the incomplete."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_seconds
        while True:
            await self._drain()
            for progress in self.studies.values():
                if progress.expected_models:
                    await self._find_tasks(progress)
            incomplete = [p for p in self.studies.values() if p.missing()]
            if not incomplete or loop.time() > deadline:
                return incomplete
            await asyncio.sleep(poll_seconds)
