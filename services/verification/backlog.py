"""The verification backlog as a metric: every `backlog_interval_seconds` the service counts the
verification Tasks waiting for a radiologist (per priority, as `GET /ops/worklist` does) into
`radmesh_verification_backlog{priority}`, so a dashboard and an alert see the queue of AI
results nobody has decided (run by shared.runtime.Periodic: a failure is logged and the next
look tries again)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from shared.metrics import VERIFICATION_BACKLOG

__all__ = ["BacklogGauge"]


class BacklogGauge:
    def __init__(self, count: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        self.count = count

    async def look(self) -> dict[str, int]:
        """Count once; the waiting Tasks per priority (also set on the gauge)."""
        counts = (await self.count())["open_verification_tasks"]
        waiting = {priority: int(entry["waiting"] or 0) for priority, entry in counts.items()}
        for priority, number in waiting.items():
            VERIFICATION_BACKLOG.labels(priority).set(number)
        return waiting
