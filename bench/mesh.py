"""Driving the running mesh for the benchmark: start and stop services, count a queue, and see
when each study's results and verification Task are in (events from the exchange, Tasks from
the FHIR server once every report is posted, so that watching costs the servers nothing).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import aio_pika
import requests

from samples.mesh_watch import MeshWatcher, StudyProgress
from shared.fhir import FhirClient
from shared.settings import RadmeshSettings

ROOT = Path(__file__).resolve().parents[1]
_FHIR_JSON = "application/fhir+json"


def fhir_instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class Mesh:
    """The six services, started by deploy/mesh-up.sh with the bench registry."""

    def __init__(self, registry: Path, fhir_base_url: str) -> None:
        self.registry = registry
        self.fhir_base_url = fhir_base_url
        self.settings = RadmeshSettings()
        self._watcher: MeshWatcher | None = None
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None

    def _script(self, name: str, services: Iterable[str]) -> None:
        env = {**os.environ, "RADMESH_REGISTRY_PATH": str(self.registry)}
        subprocess.run(
            ["bash", str(ROOT / "deploy" / name), *services], check=True, env=env, cwd=ROOT
        )

    def up(self, *services: str) -> None:
        self._script("mesh-up.sh", services)

    def down(self, *services: str) -> None:
        self._script("mesh-down.sh", services)

    async def start_watching(self) -> None:
        self._watcher = MeshWatcher(
            self.settings.broker.url, self.settings.broker.exchange, FhirClient(self.settings.fhir)
        )
        await self._watcher.start()
        self._connection = await aio_pika.connect_robust(self.settings.broker.url)

    async def stop_watching(self) -> None:
        if self._watcher is not None:
            await self._watcher.fhir.close()
            await self._watcher.stop()
        if self._connection is not None:
            await self._connection.close()

    @property
    def watcher(self) -> MeshWatcher:
        assert self._watcher is not None, "start_watching() first"
        return self._watcher

    async def ready_messages(self, service: str) -> int:
        """Messages waiting (not yet delivered) in a service's work queue. A fresh channel each
        time: a second passive declare on one channel answers the first count again."""
        assert self._connection is not None, "start_watching() first"
        prefix = self.settings.broker.queue_prefix
        async with self._connection.channel() as channel:
            queue = await channel.declare_queue(f"{prefix}.{service}", passive=True)
            return int(queue.declaration_result.message_count or 0)

    def track(self, study_instance_uids: Iterable[str]) -> list[StudyProgress]:
        return [self.watcher.track(uid) for uid in study_instance_uids]

    async def wait_posted(
        self, progress: list[StudyProgress], timeout_seconds: float
    ) -> list[StudyProgress]:
        """Until every study's results are posted; returns the studies still without them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_seconds
        while True:
            await self.watcher.poll()
            waiting = [p for p in progress if not p.of_type("results.posted")]
            if not waiting or loop.time() > deadline:
                return waiting
            await asyncio.sleep(0.1)

    async def wait_tasks(
        self, progress: list[StudyProgress], timeout_seconds: float
    ) -> dict[str, dict[str, Any]]:
        """The verification Task of every study's report (report reference → Task), searched in
        batches once the reports are posted; raises TimeoutError naming how many are missing."""
        reports = [p.of_type("results.posted")[0].diagnostic_report for p in progress]
        found: dict[str, dict[str, Any]] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_seconds
        while True:
            missing = [report for report in reports if report not in found]
            for start in range(0, len(missing), 40):
                batch = missing[start : start + 40]
                found.update(await asyncio.to_thread(self._tasks_for, batch))
            if len(found) == len(reports):
                return found
            if loop.time() > deadline:
                raise TimeoutError(f"{len(reports) - len(found)} reports have no Task yet")
            await asyncio.sleep(0.25)

    def _tasks_for(self, reports: list[str]) -> dict[str, dict[str, Any]]:
        response = requests.get(
            f"{self.fhir_base_url}/Task",
            params={"focus": ",".join(reports), "_count": str(len(reports) * 2)},
            headers={"Accept": _FHIR_JSON},
            timeout=60,
        )
        response.raise_for_status()
        tasks: dict[str, dict[str, Any]] = {}
        for entry in response.json().get("entry", []):
            task = entry["resource"]
            tasks[task["focus"]["reference"]] = task
        return tasks

    def first_version_time(self, reference: str) -> datetime:
        """When a resource was first stored (meta.lastUpdated of its version 1)."""
        response = requests.get(
            f"{self.fhir_base_url}/{reference}/_history/1",
            headers={"Accept": _FHIR_JSON},
            timeout=60,
        )
        response.raise_for_status()
        return fhir_instant(response.json()["meta"]["lastUpdated"])
