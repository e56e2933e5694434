"""One measured run each: the script or the mesh, on a backlog or on a live burst, and the mesh
one study at a time (its overhead). Every run returns what it measured; bench.report prints it.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bench.baseline import Script
from bench.mesh import Mesh, fhir_instant
from bench.procs import SERVERS, SERVICES, CpuMeter, CpuSample
from bench.studies import NOT_FOR_THE_MESH, StoredStudy, StudyMaker
from samples.mesh_watch import StudyProgress

TIMEOUT_SECONDS = 900.0
CONSUMERS = tuple(s for s in SERVICES if s != "subscriber")  # the subscriber has no queue


@dataclass
class Run:
    """What one run measured."""

    kind: str  # "script" | "mesh"
    load: str  # "backlog" | "burst"
    size: str
    repeat: int
    studies: int
    seconds: float
    cpu_seconds: dict[str, float]  # per process (the script itself under "script")
    # per study and stage (mesh runs): detect → fetch → infer → post (results, Task, SR), seconds
    stages: dict[str, list[float]] = field(default_factory=dict)

    @property
    def per_minute(self) -> float:
        return self.studies / self.seconds * 60

    @property
    def cpu_ms_per_study(self) -> float:
        return sum(self.cpu_seconds.values()) / self.studies * 1000


def _servers_only(used: dict[str, float]) -> dict[str, float]:
    return {name: seconds for name, seconds in used.items() if name in SERVERS}


def _stages(progress: StudyProgress, task_updated: datetime) -> dict[str, float]:
    """detect → fetch → infer → post; the mapping's end is whichever comes last of
    results.posted and the Task (the mapper writes the Task with the results, before the SR and
    the event; the verification service writes it after the event only for a redriven run)."""
    detected = progress.of_type("study.detected")[0]
    fetched = progress.of_type("study.fetched")[0]
    completed = progress.of_type("inference.completed")[0]
    posted = progress.of_type("results.posted")[0]
    mapped = max(posted.created_at, task_updated)
    return {
        "fetch": (fetched.created_at - detected.created_at).total_seconds(),
        "inference": (completed.created_at - fetched.created_at).total_seconds(),
        "mapping": (mapped - completed.created_at).total_seconds(),
    }


class Runner:
    """The runs of one size, against one mesh and one script."""

    def __init__(self, mesh: Mesh, script: Script, maker: StudyMaker, meter: CpuMeter) -> None:
        self.mesh = mesh
        self.script = script
        self.maker = maker
        self.meter = meter

    async def settle(self, timeout_seconds: float = 180.0) -> None:
        """Until the mesh is idle (every service queue empty, the six services together under
        5 % of a core for two seconds in a row): what an earlier run left behind (a deleted
        study's retraction, a late stable-study event) is not charged to the next one."""
        deadline = time.monotonic() + timeout_seconds
        quiet = 0
        previous = self.meter.sample()
        while quiet < 2:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the mesh did not come to rest in {timeout_seconds:.0f} s")
            await asyncio.sleep(1.0)
            current = self.meter.sample()
            used = sum(v for k, v in current.since(previous).items() if k in SERVICES)
            waiting = [await self.mesh.ready_messages(service) for service in CONSUMERS]
            quiet = quiet + 1 if used < 0.05 and not any(waiting) else 0
            previous = current

    async def _finish(
        self, studies: list[StoredStudy]
    ) -> tuple[datetime, dict[str, list[float]], list[StudyProgress]]:
        """Waits for every study's report and Task; (when the last study was done: its Task
        stored and its results.posted published, whichever came last; stages)."""
        progress = [self.mesh.watcher.studies[s.study_instance_uid] for s in studies]
        waiting = await self.mesh.wait_posted(progress, TIMEOUT_SECONDS)
        if waiting:
            raise TimeoutError(
                f"{len(waiting)} of {len(studies)} studies got no results in "
                f"{TIMEOUT_SECONDS:.0f} s: {waiting[0].missing()}"
            )
        tasks = await self.mesh.wait_tasks(progress, 120)
        stages: dict[str, list[float]] = {}
        last = datetime.min.replace(tzinfo=UTC)
        for study in progress:
            report = study.of_type("results.posted")[0].diagnostic_report
            updated = fhir_instant(tasks[report]["meta"]["lastUpdated"])
            last = max(last, updated, study.of_type("results.posted")[0].created_at)
            for stage, seconds in _stages(study, updated).items():
                stages.setdefault(stage, []).append(seconds)
        return last, stages, progress

    async def mesh_burst(self, size: str, repeat: int, count: int) -> tuple[Run, list[StoredStudy]]:
        """Studies stored one after the other while the mesh runs: first store → the last study
        done (its Task and its results.posted)."""
        before = self.meter.sample()
        started = datetime.now(UTC)

        def track(study: StoredStudy) -> None:
            self.mesh.track([study.study_instance_uid])

        studies, _ = await asyncio.to_thread(self.maker.store_many, count, on_stored=track)
        last, stages, _ = await self._finish(studies)
        used = self.meter.sample().since(before)
        seconds = (last - started).total_seconds()
        return Run("mesh", "burst", size, repeat, count, seconds, used, stages), studies

    async def mesh_backlog(self, size: str, repeat: int, count: int) -> Run:
        """Studies announced while the fetcher is stopped, then the fetcher started: from its
        first take of the queue to the last study done. The subscriber's CPU for the announcements
        (spent while storing) is counted too."""
        await asyncio.to_thread(self.mesh.down, "fetcher")
        announcing = self.meter.sample()
        studies, _ = await asyncio.to_thread(self.maker.store_many, count)
        self.mesh.track(s.study_instance_uid for s in studies)
        deadline = time.monotonic() + TIMEOUT_SECONDS
        while await self.mesh.ready_messages("fetcher") < count:
            if time.monotonic() > deadline:
                raise TimeoutError("the subscriber did not announce every study")
            await asyncio.sleep(0.1)
        subscriber = self.meter.sample().since(announcing)["subscriber"]
        starting = asyncio.create_task(asyncio.to_thread(self.mesh.up, "fetcher"))
        while True:  # the fetcher's first take of the queue starts the clock
            if await self.mesh.ready_messages("fetcher") < count:
                break
            if starting.done():
                starting.result()  # raises when deploy/mesh-up.sh could not start the fetcher
            await asyncio.sleep(0.01)
        started = datetime.now(UTC)
        before = self.meter.sample()  # the fetcher's own start-up is not the backlog's cost
        await starting
        last, stages, _ = await self._finish(studies)
        used = self.meter.sample().since(before)
        used["subscriber"] = used.get("subscriber", 0.0) + subscriber
        seconds = (last - started).total_seconds()
        return Run("mesh", "backlog", size, repeat, count, seconds, used, stages)

    def script_backlog(self, size: str, repeat: int, studies: list[StoredStudy]) -> Run:
        """The script through studies already stored (and done by the mesh: it writes its own)."""
        before, cpu_before = self.meter.sample(), time.process_time()
        started = time.perf_counter()
        for study in studies:
            self.script.process(study.study_instance_uid)
        seconds = time.perf_counter() - started
        used = _servers_only(self.meter.sample().since(before))
        used["script"] = time.process_time() - cpu_before
        return Run("script", "backlog", size, repeat, len(studies), seconds, used)

    def script_burst(self, size: str, repeat: int, count: int) -> Run:
        """The script taking each study as soon as it is stored: first store → last report.
        The mesh's subscriber is stopped meanwhile, so that the servers' work for its hooks is
        not charged to the script (and its studies are ones the mesh's models do not read, for
        a hook the FHIR server delivers late)."""
        self.mesh.down("subscriber")
        try:
            return self._script_burst(size, repeat, count)
        finally:
            self.mesh.up("subscriber")

    def _script_burst(self, size: str, repeat: int, count: int) -> Run:
        stored: queue.Queue[StoredStudy | None] = queue.Queue()
        script_cpu: list[float] = []

        def work() -> None:
            cpu = time.thread_time()
            while (study := stored.get()) is not None:
                self.script.process(study.study_instance_uid)
            script_cpu.append(time.thread_time() - cpu)

        before: CpuSample = self.meter.sample()
        started = time.perf_counter()
        worker = threading.Thread(target=work, name="script")
        worker.start()
        self.maker.store_many(count, body_part=NOT_FOR_THE_MESH, on_stored=stored.put)
        stored.put(None)
        worker.join()
        seconds = time.perf_counter() - started
        used = _servers_only(self.meter.sample().since(before))
        used["script"] = script_cpu[0]
        return Run("script", "burst", size, repeat, count, seconds, used)

    async def one_at_a_time(self, size: str, count: int) -> list[dict[str, float]]:
        """The mesh with nothing else to do: per study, ImagingStudy stored → done (its Task
        and its results.posted), the hook's
        share of it (stored → study.detected), and end to end minus the WADO-RS transfer and the
        model call (the mesh's overhead)."""
        results = []
        for _ in range(count):
            await self.settle()  # an idle mesh: the last study's late PACS events are over
            study = await asyncio.to_thread(self.maker.store)
            self.mesh.track([study.study_instance_uid])
            last, _, progress = await self._finish([study])
            stored = await asyncio.to_thread(self.mesh.first_version_time, study.imaging_study)
            fetched = progress[0].of_type("study.fetched")[0]
            completed = progress[0].of_type("inference.completed")[0]
            detected = progress[0].of_type("study.detected")[0]
            end_to_end = (last - stored).total_seconds()
            transfer = fetched.fetch_duration_ms / 1000
            model = completed.inference_duration_ms / 1000
            results.append(
                {
                    "end_to_end": end_to_end,
                    # the FHIR server's Subscription delivery (or the PACS's stable-study event)
                    "hook": (detected.created_at - stored).total_seconds(),
                    "wado_transfer": transfer,
                    "model": model,
                    "overhead": end_to_end - transfer - model,
                }
            )
        return results


__all__ = ["Run", "Runner"]
