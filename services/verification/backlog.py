"""The verification backlog as a metric: every `backlog_interval_seconds` the service counts the
verification Tasks waiting for a radiologist (per priority, as `GET /ops/worklist` does) into
`radmesh_verification_backlog{priority}`, so a dashboard and an alert see the queue of AI
results nobody has decided. Failures are logged and the next look tries again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from shared.errors import RadmeshError
from shared.metrics import VERIFICATION_BACKLOG

__all__ = ["BacklogGauge"]

log = structlog.get_logger(__name__)


class BacklogGauge:
    def __init__(
        self, count: Callable[[], Awaitable[dict[str, Any]]], interval_seconds: float
    ) -> None:
        self.count = count
        self.interval_seconds = interval_seconds
        self._task: asyncio.Task[None] | None = None

    async def look(self) -> dict[str, int]:
        """Count once; the waiting Tasks per priority (also set on the gauge)."""
        counts = (await self.count())["open_verification_tasks"]
        waiting = {priority: int(entry["waiting"] or 0) for priority, entry in counts.items()}
        for priority, number in waiting.items():
            VERIFICATION_BACKLOG.labels(priority).set(number)
        return waiting

    async def start(self) -> None:
        if self.interval_seconds > 0:
            self._task = asyncio.create_task(self._every_interval())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _every_interval(self) -> None:
        while True:
            try:
                await self.look()
            except RadmeshError as error:
                log.warning("backlog_unreadable", error=str(error), next_in_seconds=self.interval_seconds)
            await asyncio.sleep(self.interval_seconds)
