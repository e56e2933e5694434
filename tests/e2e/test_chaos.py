"""Chaos: bursts of studies through the six-service mesh while its parts fail (`make chaos`).

Each test loads a burst of studies (head CTs with and without a bleed, chest CTs; one every
`PACE_SECONDS`) and, while they flow, injects one kind of fault:

- every service SIGKILLed in turn mid-burst and started again (a supervisor's restart);
- every service stopped in turn by SIGTERM mid-burst, as a rolling update does (each must exit
  0, having finished what it held), and started again;
- the project's own RabbitMQ node restarted mid-burst, while messages sit in retry delays (the
  FHIR server made unreachable for the writing services just before);
- the FHIR server, the PACS and the model server each frozen (SIGSTOP) for 30 s, then resumed.

After each, read back from the FHIR server: every study has exactly one DiagnosticReport per
model that applies, one verification Task per report and one alert Communication per critical
finding the model found, and no service dead-lettered anything during the burst. The figures (studies, burst
length, time from the burst's end to the last result, the slowest study) are printed, and the
README's "Guarantees" section quotes them.

The mesh runs with the production retry delays (1, 5, 25, 120 s): a 30 s outage must be
outlasted by the retries, as in production. These tests restart the broker and freeze shared
servers: they run alone (`make chaos`, after `make test` in CI), never beside other tests.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from samples.load import LoadResult, Settings, load_study
from shared.bus import REASON_HEADER, ServiceQueues
from shared.codes import PRESENT
from shared.dead_letters import SERVICES as CONSUMERS
from shared.dead_letters import queue_status
from shared.fhir import FhirClient
from shared.identifiers import business_identifier, study_run_value
from tests.e2e.conftest import ROOT, SERVICES, Mesh

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

STUDIES = int(os.environ.get("RADMESH_CHAOS_STUDIES", "30"))
PACE_SECONDS = 1.0  # one study loaded every second: the burst lasts about STUDIES seconds
FREEZE_SECONDS = 30.0
RESULTS_WITHIN_SECONDS = 420.0
# scenario → (the model that applies, whether its finding is critical)
SCENARIOS = {
    "head-bleed": ("ich-reference", "intracranial-hemorrhage"),
    "chest-nodules": ("lung-nodule-reference", None),
    "head-normal": ("ich-reference", None),
}
RUN_DIR = Path(os.environ.get("RADMESH_RUN_DIR", ROOT / ".run"))


@pytest.fixture(scope="module")
def mesh_overrides() -> dict[str, str]:
    return {"RADMESH_BROKER__RETRY_DELAYS_SECONDS": "[1, 5, 25, 120]"}


@dataclass
class BurstOutcome:
    studies: int
    burst_seconds: float
    settle_seconds: float  # from the burst's end until every study had all its results
    slowest_seconds: float  # the longest from a study's loading to its last result
    problems: list[str]


async def _load(scenario: str, seed: int) -> LoadResult:
    """One study loaded (retried: the loader itself may hit a frozen server)."""
    for attempt in range(6):
        try:
            return await asyncio.to_thread(
                load_study, scenario, settings=Settings.from_env(), seed=seed, slices=16, size=96
            )
        except Exception:  # the harness retries its own loading, whatever failed
            if attempt == 5:
                raise
            await asyncio.sleep(FREEZE_SECONDS / 3)
    raise AssertionError("unreachable")


async def _count(fhir: FhirClient, resource_type: str, *parts: str | int) -> int:
    identifier = business_identifier(resource_type, *parts)
    bundle = await fhir.execute(
        resource_type,
        "get",
        params={"identifier": f"{identifier['system']}|{identifier['value']}", "_summary": "count"},
    )
    return int(bundle.get("total", 0))


async def _present(fhir: FhirClient, value: str) -> bool | None:
    """Whether the run's Observation of a presence finding says present (None: no Observation)."""
    identifier = business_identifier("Observation", value)
    bundle = await fhir.execute(
        "Observation",
        "get",
        params={"identifier": f"{identifier['system']}|{identifier['value']}"},
    )
    observations = [entry["resource"] for entry in bundle.get("entry", [])]
    if not observations:
        return None
    codings = (observations[0].get("valueCodeableConcept") or {}).get("coding", [])
    return any(coding.get("code") == PRESENT.code for coding in codings)


async def _missing(fhir: FhirClient, scenario: str, loaded: LoadResult) -> list[str]:
    """What the study still lacks, or has twice (empty: exactly what it should have). A
    critical finding's alert is expected where the model found it: the reference detector
    misses a small phantom bleed now and then (its sensitivity is measured elsewhere,
    tests/integration/test_reference_models.py), and a miss is no loss."""
    model, critical = SCENARIOS[scenario]
    run = study_run_value(loaded.study_instance_uid, model, "1")
    expected = {("DiagnosticReport", run): 1, ("Task", run): 1}
    if critical is not None:
        finding = f"{run}/{critical}/0"
        expected[("Observation", finding)] = 1
        present = await _present(fhir, finding)
        if present is False:
            print(f"[chaos] {loaded.study_instance_uid}: the model found no bleed (no alert due)")
        expected[("Communication", finding)] = 0 if present is False else 1
    problems = []
    for (resource_type, value), wanted in expected.items():
        found = await _count(fhir, resource_type, value)
        if found != wanted:
            problems.append(f"{loaded.study_instance_uid} {resource_type} {value}: {found}")
    return problems


async def _dead_letters(mesh: Mesh) -> dict[str, tuple[str, str]]:
    """Every dead letter on the mesh's queues: message id → (the whole message as text, its
    reason), browsed (they go back unacknowledged when the channel closes)."""
    letters: dict[str, tuple[str, str]] = {}
    connection = await aio_pika.connect(mesh.settings.broker.url)
    try:
        channel = await connection.channel()
        for service in CONSUMERS:
            name = ServiceQueues(service, mesh.settings.broker.queue_prefix).dead_letter_queue
            queue = await channel.declare_queue(name, passive=True)
            while (message := await queue.get(no_ack=False, fail=False)) is not None:
                reason = str((message.headers or {}).get(REASON_HEADER, "broker: delivery limit"))
                letters[f"{service} {message.message_id}"] = (
                    message.body.decode("utf-8", "replace"),
                    reason[:300],
                )
        await channel.close()
    finally:
        await connection.close()
    return letters


async def _burst(mesh: Mesh, fault: Callable[[], Coroutine[Any, Any, None]]) -> BurstOutcome:
    """Load STUDIES studies at PACE_SECONDS while `fault()` runs; wait for every result."""
    dead_before = set(await _dead_letters(mesh))
    loop = asyncio.get_running_loop()
    started = loop.time()
    names = list(SCENARIOS)
    loaded_at: dict[str, float] = {}

    async def load(index: int) -> tuple[str, LoadResult]:
        await asyncio.sleep(index * PACE_SECONDS)
        scenario = names[index % len(names)]
        result = await _load(scenario, random.randrange(10**7, 10**8))
        loaded_at[result.study_instance_uid] = loop.time()
        return scenario, result

    injected = asyncio.create_task(fault())
    studies = await asyncio.gather(*(load(index) for index in range(STUDIES)))
    await injected
    burst_end = loop.time()
    done_at: dict[str, float] = {}
    problems: list[str] = []
    deadline = burst_end + RESULTS_WITHIN_SECONDS
    while True:
        problems = []
        for scenario, result in studies:
            if result.study_instance_uid in done_at:
                continue
            missing = await _missing(mesh.direct_fhir, scenario, result)
            if missing:
                problems += missing
            else:
                done_at[result.study_instance_uid] = loop.time()
        if not problems or loop.time() > deadline:
            break
        await asyncio.sleep(2)
    # Once every study is complete, a duplicate would have been written already; look again.
    for scenario, result in studies:
        problems += await _missing(mesh.direct_fhir, scenario, result)
    # Dead letters of the burst's studies are problems; others (the shared FHIR server's other
    # studies reach this mesh's Subscription too) are printed, not counted.
    uids = {result.study_instance_uid for _, result in studies}
    for key, (body, reason) in (await _dead_letters(mesh)).items():
        if key in dead_before:
            continue
        if any(uid in body for uid in uids):
            problems.append(f"dead letter {key}: {reason}")
        else:
            print(f"[chaos] a dead letter of no study of the burst: {key}: {reason}")
    for uid in sorted(uids - set(done_at)):  # what the services logged of an incomplete study
        print(f"[chaos] study {uid} incomplete; its log lines:\n{_trace(mesh, uid)}")
    outcome = BurstOutcome(
        studies=len(studies),
        burst_seconds=round(burst_end - started, 1),
        settle_seconds=round(max(done_at.values(), default=burst_end) - burst_end, 1),
        slowest_seconds=round(
            max((done_at[uid] - loaded_at[uid] for uid in done_at), default=0.0), 1
        ),
        problems=problems,
    )
    print(f"\n[chaos] {fault.__name__}: {outcome}")
    return outcome


def _trace(mesh: Mesh, study_instance_uid: str) -> str:
    """The mesh's log lines bound to the study, every service's, in time order."""
    lines = [
        (str(record.get("timestamp", "")), service, str(record.get("event", "")))
        for service in SERVICES
        for record in mesh.log_events(service, study_instance_uid, bound_to="study_instance_uid")
    ]
    return "\n".join(f"  {stamp} {service}: {event}" for stamp, service, event in sorted(lines))


async def _waiting_for_retry(mesh: Mesh) -> int:
    statuses = await queue_status(
        mesh.settings.broker.url,
        CONSUMERS,
        mesh.settings.broker.retry_delays_seconds,
        prefix=mesh.settings.broker.queue_prefix,
    )
    return sum(status.messages or 0 for status in statuses if ".delay." in status.queue)


def _serving_pid(component: str) -> int:
    """The process that answers for `component`: the one `make infra-up` started, or for the
    model server the `tritonserver` under its PyTriton launcher. (Freezing the launcher and
    Triton's Python-backend stubs as well makes Triton exit on resume: the stubs' health check
    fails, deploy/model-server/README.md. That is Triton's, not radmesh's, to survive.)"""
    pid_file = RUN_DIR / component / "pid"
    if not pid_file.exists():
        pytest.fail(f"{component} was not started by `make infra-up` ({pid_file} missing)")
    pid = int(pid_file.read_text().strip())
    if component != "model-server":
        return pid
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and command.endswith(b"/tritonserver"):
            return int(entry.name)
    pytest.fail(f"no tritonserver process under the model server (PID {pid})")


async def test_sigkill_of_each_service_in_turn_loses_and_duplicates_nothing(mesh: Mesh) -> None:
    async def kill_each_service() -> None:
        for service in SERVICES:
            await asyncio.sleep(STUDIES * PACE_SECONDS / (len(SERVICES) + 1))
            process = mesh.processes[service]
            process.send_signal(signal.SIGKILL)
            print(f"\n[chaos] {service} SIGKILLed at {datetime.now(UTC).isoformat()}")
            await process.wait()
            await mesh.restart(service)

    outcome = await _burst(mesh, kill_each_service)
    assert outcome.problems == []


async def test_a_rolling_restart_of_every_service_under_load_loses_and_duplicates_nothing(
    mesh: Mesh,
) -> None:
    """What an orchestrator's rolling update does: each service in turn gets SIGTERM mid-burst,
    stops taking messages, finishes what it holds, exits 0, and is started again."""
    stopped: dict[str, tuple[int | None, float]] = {}

    async def terminate_each_service() -> None:
        for service in SERVICES:
            await asyncio.sleep(STUDIES * PACE_SECONDS / (len(SERVICES) + 1))
            process = mesh.processes[service]
            began = time.monotonic()
            process.send_signal(signal.SIGTERM)
            code = await process.wait()
            stopped[service] = (code, round(time.monotonic() - began, 1))
            print(f"\n[chaos] {service} stopped on SIGTERM: exit {code} in {stopped[service][1]} s")
            await mesh.restart(service)

    outcome = await _burst(mesh, terminate_each_service)
    assert outcome.problems == []
    assert {service: code for service, (code, _) in stopped.items()} == dict.fromkeys(SERVICES, 0)
    graceful = mesh.settings.broker.graceful_stop_seconds
    assert all(seconds <= graceful + 15 for _, seconds in stopped.values()), stopped


async def test_a_broker_restart_while_messages_wait_in_retry_delays_loses_nothing(
    mesh: Mesh,
) -> None:
    marker = RUN_DIR / "rabbitmq" / "started-by-radmesh"
    if not marker.exists():
        pytest.fail(
            f"the broker was not started by `make infra-up` ({marker} missing): the chaos suite "
            "restarts only its own node"
        )

    async def restart_the_broker_with_retries_waiting() -> None:
        await asyncio.sleep(STUDIES * PACE_SECONDS / 3)
        await mesh.proxy.down()  # the writers' FHIR calls fail: their messages wait in delays
        waiting = 0
        deadline = time.monotonic() + 30
        while waiting == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            waiting = await _waiting_for_retry(mesh)
        assert waiting > 0, "no message was waiting in a retry delay: the restart tests nothing"
        print(f"\n[chaos] broker restarted while {waiting} messages wait in retry delays")
        started = time.monotonic()
        await asyncio.to_thread(
            subprocess.run, ["rabbitmqctl", "-q", "shutdown"], check=True, timeout=120
        )
        await mesh.proxy.up()
        await asyncio.to_thread(
            subprocess.run,
            ["bash", str(ROOT / "deploy" / "rabbitmq" / "up.sh")],
            check=True,
            timeout=180,
        )
        print(f"\n[chaos] broker down and back in {time.monotonic() - started:.1f} s")

    outcome = await _burst(mesh, restart_the_broker_with_retries_waiting)
    assert outcome.problems == []


async def test_freezing_the_fhir_server_the_pacs_and_the_model_server_only_delays_results(
    mesh: Mesh,
) -> None:
    async def freeze_each_server() -> None:
        for component in ("hapi-fhir", "orthanc", "model-server"):
            await asyncio.sleep(STUDIES * PACE_SECONDS / 6)
            pid = _serving_pid(component)
            os.kill(pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(FREEZE_SECONDS)
            finally:
                os.kill(pid, signal.SIGCONT)

    outcome = await _burst(mesh, freeze_each_server)
    assert outcome.problems == []
