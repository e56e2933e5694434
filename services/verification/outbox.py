"""The verdict outbox: a verdict's event (finding.verified / finding.rejected) is never lost
between the FHIR write and the publish.

The verdict transaction tags the completed Task `urn:radmesh:outbox|pending` (the tag is the
outbox: it is written in the same transaction as the verdict). After the event is published,
the tag is removed (`$meta-delete`, which makes no new version). A sweep, on start and every
`outbox_sweep_seconds`, finds Tasks still tagged after `outbox_grace_seconds` (the live path
had its chance: the broker was down, or the service died between write and publish), rebuilds
each event from the Task alone and publishes it. The event's message id derives from the Task,
so the live publish and a sweep's publish are the same message; consumers are idempotent.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from services.verification.tasks import OUTBOX_TAG, task_run
from services.verification.verdicts import OUTPUT_SYSTEM
from shared.fhir import FhirClient
from shared.messages import Event, FindingRejected, FindingVerified
from shared.runtime import Periodic

__all__ = ["VerdictOutbox", "verdict_event"]

log = structlog.get_logger(__name__)


def _output(task: dict[str, Any], code: str) -> dict[str, Any] | None:
    for item in task.get("output", []):
        for coding in item.get("type", {}).get("coding", []):
            if coding.get("system") == OUTPUT_SYSTEM and coding.get("code") == code:
                return dict(item)
    return None


def verdict_event(task: dict[str, Any]) -> Event:
    """The finding.verified / finding.rejected of a decided Task, from the Task alone."""
    run = task_run(task)
    reference = f"Task/{task['id']}"
    verdict = (_output(task, "verdict") or {}).get("valueCode")
    provenance = next(
        (str(h["reference"]) for h in reversed(task.get("relevantHistory", []))), None
    )
    if verdict not in ("accepted", "rejected", "amended") or provenance is None:
        raise ValueError(f"{reference} holds no recorded verdict")
    common: dict[str, Any] = {
        "message_id": uuid.uuid5(uuid.NAMESPACE_URL, f"radmesh:verdict:{reference}"),
        "correlation_id": run.correlation_id,
        "causation_id": run.causation_id,
        "study": run.study,
        "task": reference,
        "diagnostic_report": (task.get("focus") or {}).get("reference"),
        "verifier": (task.get("owner") or {}).get("reference"),
        "provenance": provenance,
    }
    if verdict != "rejected":
        return FindingVerified(**common, amended=verdict == "amended")
    reason = task.get("statusReason") or {}
    return FindingRejected(
        **common,
        reason=str(reason.get("text") or ""),
        reason_code=next((c.get("code") for c in reason.get("coding", [])), None),
    )


class VerdictOutbox:
    def __init__(
        self,
        fhir: FhirClient,
        publish: Callable[[Event], Awaitable[None]],
        sweep_seconds: float = 60.0,
        grace_seconds: float = 30.0,
    ) -> None:
        self.fhir = fhir
        self.publish = publish
        self.sweep_seconds = sweep_seconds
        self.grace_seconds = grace_seconds
        # The FHIR server may be down: logged, tried again next round.
        self._periodic = Periodic(self.sweep_once, sweep_seconds, "outbox_sweep_failed")

    async def release(self, task: dict[str, Any]) -> tuple[Event, bool]:
        """Publish the Task's event and take it out of the outbox; (the event, whether it was
        published). A failed publish leaves the Task tagged for the sweep."""
        event = verdict_event(task)
        try:
            await self.publish(event)
        except Exception as error:  # the sweep publishes it later; nothing is lost
            log.error(
                "verdict_event_not_published",
                event_type=event.event_type,
                error=str(error)[:300],
                action="left in the outbox; the sweep publishes it again",
            )
            return event, False
        try:
            await self.fhir.execute(
                f"Task/{task['id']}/$meta-delete",
                "post",
                data={
                    "resourceType": "Parameters",
                    "parameter": [{"name": "meta", "valueMeta": {"tag": [OUTBOX_TAG]}}],
                },
            )
        except Exception as error:  # published: at worst the sweep sends the same message again
            log.warning(
                "outbox_tag_not_removed",
                task=f"Task/{task['id']}",
                error=str(error)[:300],
                action="the sweep will publish the same message (same id) once more",
            )
        return event, True

    async def sweep_once(self) -> int:
        """Publish every verdict event left in the outbox longer than the grace time."""
        before = datetime.now(UTC) - timedelta(seconds=self.grace_seconds)
        bundle: dict[str, Any] | None = await self.fhir.execute(
            "Task",
            "get",
            params={
                "_tag": f"{OUTBOX_TAG['system']}|{OUTBOX_TAG['code']}",
                "_lastUpdated": f"lt{before.isoformat()}",
                "_count": 50,
            },
        )
        released = 0
        while bundle is not None:
            for entry in bundle.get("entry", []):
                task = entry.get("resource") or {}
                try:
                    event, published = await self.release(task)
                except ValueError as error:
                    log.error("outbox_entry_unreadable", task=task.get("id"), error=str(error))
                    continue
                if published:
                    released += 1
                    log.warning(
                        "verdict_event_republished",
                        task=f"Task/{task.get('id')}",
                        event_type=event.event_type,
                    )
            bundle = await self.fhir.next_page(bundle)
        return released

    async def start(self) -> None:
        await self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()
