"""The whole mesh, six processes: studies arrive as a hospital would send them; preliminary
results, alerts and verification Tasks come out; duplicates create nothing; an outage of the
FHIR server delays results but loses none; one trace spans all six services."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import highdicom as hd
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from prometheus_client.parser import text_string_to_metric_families
from pydicom import Dataset

from samples.demo import run_demo
from samples.load import LoadResult, Settings, load_study
from samples.mesh_watch import MeshWatcher, StudyProgress
from services.mapper.key_images import key_images_uids
from services.mapper.structured_report import sr_uids
from shared.bus import Bus, ServiceQueues
from shared.codes import OF_INTEREST, PRESENT
from shared.dead_letters import list_dead_letters
from shared.identifiers import DICOM_IMAGE_EXTENSION
from shared.iocm import RADMESH_MANUFACTURER
from shared.messages import InferenceCompleted, ResultsPosted, StudyDetected
from shared.registry import load_registry
from shared.settings import RadmeshSettings
from tests.conftest import Infrastructure
from tests.dicom_validators import dciodvfy_errors, pixelmed_sr_errors
from tests.e2e.conftest import SERVICES, Mesh
from tests.fhir_validators import fhir_js, fhir_resources, hapi_validate
from tests.hl7_receiver import Hl7Receiver
from tests.identity import access_token
from tests.waiting import until

pytestmark = pytest.mark.integration

SNOMED_ICH = "1386000"
SNOMED_NODULE = "427359005"
SNOMED_DIAMETER = "81827009"
# What the notifier logs once it has decided about a results.posted (services/notifier/handlers.py),
# or the bus when it gave up on the message.
NOTIFIER_DECISIONS = (
    "no_critical_finding",
    "critical_alerts_raised",
    "alert_skipped",
    "message_dead_lettered",
)
# The bus's last word on a consumed message: handled, or dead-lettered (shared/bus.py).
MESSAGE_OUTCOMES = ("message_handled", "message_dead_lettered")


@pytest.fixture(scope="module")
async def ehr() -> AsyncIterator[Hl7Receiver]:
    """The EHR's HL7 v2 interface: an MLLP listener the notifier sends results to."""
    receiver = await Hl7Receiver().start()
    yield receiver
    await receiver.stop()


@pytest.fixture(scope="module")
def mesh_overrides(ehr: Hl7Receiver) -> dict[str, str]:
    return {
        "RADMESH_NOTIFIER_HL7_RESULTS_HOST": "127.0.0.1",
        "RADMESH_NOTIFIER_HL7_RESULTS_PORT": str(ehr.port),
    }


@pytest.fixture(scope="module")
async def demo_run(mesh: Mesh) -> tuple[list[LoadResult], dict[str, StudyProgress]]:
    """The three demo studies through the mesh (the same code `make demo` runs)."""
    loaded, progress, incomplete = await run_demo(
        mesh.settings, seed=None, slices=32, size=256, timeout_seconds=180
    )
    assert not incomplete, (
        "\n".join(f"{p.study_instance_uid}: {p.missing()}" for p in incomplete)
        + "\n"
        + "\n".join(mesh.log_tail(s, 10) for s in mesh.processes)
    )
    return loaded, progress


def _codes(concept: dict[str, Any]) -> set[str]:
    return {str(coding.get("code")) for coding in concept.get("coding", [])}


async def _observations(mesh: Mesh, posted: ResultsPosted) -> list[dict[str, Any]]:
    return [await mesh.direct_fhir.read_resource(f.observation) for f in posted.findings]


async def _notifier_decision(mesh: Mesh, posted: ResultsPosted) -> str:
    """What the notifier decided about the run's results.posted, once it has (from its log): the
    watcher calls a run complete when its Task exists, which can be before the notifier is done."""
    lines = await mesh.wait_for_log(
        "notifier",
        posted.correlation_id,
        lambda lines: any(line.get("event") in NOTIFIER_DECISIONS for line in lines),
    )
    return str(next(line["event"] for line in lines if line.get("event") in NOTIFIER_DECISIONS))


async def _alerts_about(mesh: Mesh, posted: ResultsPosted) -> list[str]:
    """Communications and CommunicationRequests of the patient about the report or its findings."""
    about = {posted.diagnostic_report, *(finding.observation for finding in posted.findings)}
    found = []
    for kind in ("Communication", "CommunicationRequest"):
        resources = (
            await mesh.direct_fhir.resources(kind)
            .search(subject=posted.study.patient or "")
            .fetch_all()
        )
        found += [
            f"{kind}/{resource['id']}"
            for resource in resources
            if about & {item.get("reference") for item in dict(resource).get("about", [])}
        ]
    return found


def _by_scenario(
    demo_run: tuple[list[LoadResult], dict[str, StudyProgress]], scenario: str
) -> tuple[LoadResult, StudyProgress]:
    loaded, progress = demo_run
    result = next(item for item in loaded if item.scenario == scenario)
    return result, progress[result.study_instance_uid]


async def test_head_ct_with_bleed_gives_preliminary_results_an_alert_and_a_task(
    mesh: Mesh, demo_run: tuple[list[LoadResult], dict[str, StudyProgress]]
) -> None:
    """Hemorrhage Observation (preliminary, SNOMED 1386000, linked to the study, the order and the
    patient), a preliminary DiagnosticReport, Device and Provenance, a Communication and a
    CommunicationRequest to the ordering Practitioner, a consult ServiceRequest, a verification
    Task, and the run's analysis claim completed with the report."""
    loaded, progress = _by_scenario(demo_run, "head-bleed")
    (posted,) = progress.of_type("results.posted")
    observations = await _observations(mesh, posted)
    hemorrhage = next(o for o in observations if SNOMED_ICH in _codes(o["code"]))
    assert hemorrhage["status"] == "preliminary"
    assert hemorrhage["subject"]["reference"] == posted.study.patient
    assert {r["reference"] for r in hemorrhage.get("basedOn", [])} == {posted.study.service_request}
    assert loaded.imaging_study_id in {
        r.get("reference") for r in hemorrhage.get("derivedFrom", [])
    }
    assert hemorrhage["device"]["reference"] == posted.device
    report = await mesh.direct_fhir.read_resource(posted.diagnostic_report)
    assert report["status"] == "preliminary"
    assert {r["reference"] for r in report["result"]} == {f.observation for f in posted.findings}
    provenance = await mesh.direct_fhir.read_resource(posted.provenance)
    # the AI's Provenance names the report at the version the AI wrote
    assert f"{posted.diagnostic_report}/_history/1" in {
        t["reference"] for t in provenance["target"]
    }

    order = await mesh.direct_fhir.read_resource(posted.study.service_request or "")
    (alert,) = progress.of_type("alert.raised")
    communication = await mesh.direct_fhir.read_resource(alert.communication)
    request = await mesh.direct_fhir.read_resource(alert.communication_request)
    assert communication["priority"] == "stat"
    assert [r["reference"] for r in communication["recipient"]] == [order["requester"]["reference"]]
    assert [r["reference"] for r in request["recipient"]] == [order["requester"]["reference"]]
    assert set(await _alerts_about(mesh, posted)) == {
        alert.communication,
        alert.communication_request,
    }
    assert alert.consult_service_request is not None
    consult = await mesh.direct_fhir.read_resource(alert.consult_service_request)
    assert consult["status"] == "active" and consult["priority"] == "stat"
    task = await mesh.direct_fhir.read_resource(progress.tasks[posted.diagnostic_report])
    assert task["status"] == "requested" and task["priority"] == "stat"
    assert task["focus"]["reference"] == posted.diagnostic_report
    # the subscriber's analysis claim, completed by the mapper with the report as its output
    (claim,) = (
        await mesh.direct_fhir.resources("Task")
        .search(
            identifier=f"urn:radmesh:analysis-claim|{loaded.study_instance_uid}/ich-reference/1"
        )
        .fetch_all()
    )
    assert claim["status"] == "completed"
    assert claim["focus"]["reference"] == loaded.imaging_study_id
    assert claim["output"][0]["valueReference"]["reference"] == posted.diagnostic_report


async def test_chest_ct_gives_nodule_observations_with_diameters(
    mesh: Mesh, demo_run: tuple[list[LoadResult], dict[str, StudyProgress]]
) -> None:
    """Each detected nodule is an Observation; each has a diameter in mm; no alert."""
    _, progress = _by_scenario(demo_run, "chest-nodules")
    (posted,) = progress.of_type("results.posted")
    observations = await _observations(mesh, posted)
    nodules = [o for o in observations if SNOMED_NODULE in _codes(o["code"])]
    diameters = [o for o in observations if SNOMED_DIAMETER in _codes(o["code"])]
    # Three nodules are seeded; the reference detector finds ~90-100 % of them on a random seed
    # (its sensitivity is measured in tests/integration/test_reference_models.py).
    assert len(nodules) >= 1
    assert len(diameters) == len(nodules)
    assert all(
        d["valueQuantity"]["unit"] in ("mm", "millimeter") or d["valueQuantity"]["code"] == "mm"
        for d in diameters
    )
    assert await _notifier_decision(mesh, posted) == "no_critical_finding"
    assert progress.of_type("alert.raised") == []
    assert await _alerts_about(mesh, posted) == []


async def test_normal_head_ct_gives_a_negative_result_and_no_alert(
    mesh: Mesh, demo_run: tuple[list[LoadResult], dict[str, StudyProgress]]
) -> None:
    """A clean head: one hemorrhage Observation valued absent, a report, a routine Task, no alert."""
    _, progress = _by_scenario(demo_run, "head-normal")
    (posted,) = progress.of_type("results.posted")
    assert [f.present for f in posted.findings] == [False]
    assert not any(f.critical for f in posted.findings)
    assert await _notifier_decision(mesh, posted) == "no_critical_finding"
    assert progress.of_type("alert.raised") == []
    assert await _alerts_about(mesh, posted) == []
    task = await mesh.direct_fhir.read_resource(progress.tasks[posted.diagnostic_report])
    assert task["priority"] == "routine"


async def _verify(
    token: str, task: str, verdict: str, body: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        response = await http.post(
            f"http://127.0.0.1:8095/tasks/{task.split('/')[1]}/{verdict}",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        )
        return response.status, await response.json(content_type=None)


async def test_accepting_a_task_makes_results_final_and_rejecting_cancels_them(
    mesh: Mesh,
    demo_run: tuple[list[LoadResult], dict[str, StudyProgress]],
    infra: Infrastructure,
) -> None:
    """rad1 accepts the bleed's Task: report and Observations final. Rejects the chest's for
    poor image quality: cancelled."""
    loaded, _ = demo_run
    _, bleed = _by_scenario(demo_run, "head-bleed")
    _, chest = _by_scenario(demo_run, "chest-nodules")
    token = await access_token(infra, "rad1")
    for progress, verdict, status in ((bleed, "accept", "final"), (chest, "reject", "cancelled")):
        (posted,) = progress.of_type("results.posted")
        body = {}
        if verdict == "reject":
            body = {"reason": "poor-image-quality", "note": "motion artefact mimics nodules"}
        code, answer = await _verify(token, progress.tasks[posted.diagnostic_report], verdict, body)
        assert code == 200, answer
        report = await mesh.direct_fhir.read_resource(posted.diagnostic_report)
        assert report["status"] == status
        for observation in await _observations(mesh, posted):
            assert observation["status"] == status
        task = await mesh.direct_fhir.read_resource(progress.tasks[posted.diagnostic_report])
        assert task["status"] == "completed"
    del loaded


async def test_the_ehr_gets_each_report_over_hl7_preliminary_then_as_the_verdict_left_it(
    mesh: Mesh, demo_run: tuple[list[LoadResult], dict[str, StudyProgress]], ehr: Hl7Receiver
) -> None:
    """The notifier sent every demo report to the EHR's MLLP listener as ORU^R01: first
    preliminary (OBR-25 P); after the verdicts above, the accepted bleed again as final (F) and
    the rejected chest as withdrawn (X, its findings D); each acknowledged (the notifier logged
    each ACK)."""
    expected = {"head-bleed": "F", "chest-nodules": "X", "head-normal": "P"}
    for scenario, last in expected.items():
        _, study = _by_scenario(demo_run, scenario)
        (posted,) = study.of_type("results.posted")
        report_id = posted.diagnostic_report.removeprefix("DiagnosticReport/")

        async def arrived(report_id: str = report_id, last: str = last) -> bool:
            sent = ehr.of_report(report_id)
            return bool(sent) and str(sent[-1].segment("OBR")[25]) == last

        await until(arrived, f"the {scenario} report's ORU^R01 ending {last}", seconds=60)
        statuses = [str(m.segment("OBR")[25]) for m in ehr.of_report(report_id)]
        assert statuses[0] == "P", statuses
        if last == "X":
            (withdrawn,) = [m for m in ehr.of_report(report_id) if str(m.segment("OBR")[25]) == "X"]
            assert {str(s[11]) for s in withdrawn.segments("OBX")} == {"D"}
    acknowledged = [
        json.loads(line)
        for line in (mesh.logs / "notifier.log").read_text(errors="replace").splitlines()
        if line.startswith("{") and '"hl7_result_sent"' in line
    ]
    assert {line["ack"] for line in acknowledged} == {"AA"}
    assert len(acknowledged) >= len(ehr.messages)


async def _count(mesh: Mesh, resource_type: str, **params: str) -> int:
    return len(await mesh.direct_fhir.resources(resource_type).search(**params).fetch_all())


async def _resource_counts(mesh: Mesh, posted: ResultsPosted) -> dict[str, int]:
    """How many of each resource type the run wrote are on the server: per patient, and the
    Device and Provenance by the business identifier they were written with."""
    patient = posted.study.patient or ""
    counts = {
        kind: await _count(mesh, kind, subject=patient)
        for kind in (
            "Observation",
            "DiagnosticReport",
            "Communication",
            "CommunicationRequest",
            "ServiceRequest",  # the order and the consult
            "Task",
        )
    }
    device = await mesh.direct_fhir.read_resource(posted.device)
    (identifier,) = [
        i for i in device["identifier"] if str(i.get("system", "")).startswith("urn:radmesh:")
    ]
    counts["Device"] = await _count(
        mesh, "Device", identifier=f"{identifier['system']}|{identifier['value']}"
    )
    provenance = await mesh.direct_fhir.read_resource(posted.provenance)
    (tag,) = [
        t
        for t in provenance["meta"].get("tag", [])
        if str(t.get("system", "")).startswith("urn:radmesh:")
    ]
    counts["Provenance"] = await _count(mesh, "Provenance", _tag=f"{tag['system']}|{tag['code']}")
    return counts


def _replay_outstanding(
    replay: StudyProgress,
    detected: StudyDetected,
    completed: InferenceCompleted,
    posted: ResultsPosted,
) -> list[str]:
    """What the mesh has not yet published in answer to the three redeliveries: the redelivered
    messages themselves, the whole pipeline again for study.detected (one study.fetched per
    model, an inference.completed for each) and a new results.posted for every
    inference.completed, the redelivered one included."""
    outstanding = [
        f"the redelivered {event.event_type}"
        for event in (detected, completed, posted)
        if not any(e.message_id == event.message_id for e in replay.of_type(event.event_type))
    ]
    mapper_inputs: list[InferenceCompleted] = [completed]
    fetched = replay.caused_by(detected, "study.fetched")
    if len(fetched) < len(detected.models):
        outstanding.append(f"study.fetched: {len(fetched)} of {len(detected.models)}")
    for event in fetched:
        inferred = replay.caused_by(event, "inference.completed")
        if not inferred:
            outstanding.append(f"inference.completed of study.fetched {event.message_id}")
        mapper_inputs += inferred
    for event in mapper_inputs:
        mapped = [
            e
            for e in replay.caused_by(event, "results.posted")
            if e.message_id != posted.message_id
        ]
        if not mapped:
            outstanding.append(f"results.posted of inference.completed {event.message_id}")
    return outstanding


async def _dead_letters_of_run(mesh: Mesh, correlation_id: uuid.UUID) -> list[str]:
    """The writing services' dead letters of one study run (the broker's queues are shared with
    earlier runs and the demo, whose letters are not this test's business)."""
    found = []
    for service in ("mapper", "notifier", "verification"):
        for letter in await list_dead_letters(
            mesh.settings.broker.url, service, prefix=mesh.settings.broker.queue_prefix
        ):
            if letter.correlation_id == str(correlation_id):
                found.append(f"{service}: {letter.reason}")
    return found


async def test_repeated_hook_and_redelivered_messages_create_no_second_resource(
    mesh: Mesh, demo_run: tuple[list[LoadResult], dict[str, StudyProgress]]
) -> None:
    """The same rest-hook sent again is recognised as done; study.detected, inference.completed
    and results.posted delivered again create no second resource of any type the run wrote
    (Observation, report, Device, Provenance, alert, consult or Task)."""
    loaded, progress = _by_scenario(demo_run, "head-bleed")
    (posted,) = progress.of_type("results.posted")
    (completed,) = progress.of_type("inference.completed")
    (detected,) = progress.of_type("study.detected")
    counts = await _resource_counts(mesh, posted)
    assert all(counts.values()), f"a search finds nothing of the run: {counts}"
    study = await mesh.direct_fhir.read_resource(loaded.imaging_study_id or "")
    async with aiohttp.ClientSession() as http:
        response = await http.put(
            f"http://127.0.0.1:8090/fhir/{loaded.imaging_study_id}",
            data=json.dumps(study),
            headers={"Authorization": "Bearer radmesh-dev-hook-secret"},
        )
        assert response.status == 200
        assert (
            "0 study.detected"
            in (await response.json(content_type=None))["issue"][0]["diagnostics"]
        )
    watcher = MeshWatcher(mesh.settings.broker.url, mesh.settings.broker.exchange, mesh.direct_fhir)
    await watcher.start()
    try:
        replay = watcher.track(loaded.study_instance_uid)
        bus = Bus(mesh.settings.broker, "e2e-replayer")
        await bus.start()
        try:
            # The same message ids: redeliveries of every stage's input (study.detected runs the
            # whole pipeline again, fetch, inference, mapping, alert and Task included).
            await bus.publish(detected)
            await bus.publish(completed)
            await bus.publish(posted)
        finally:
            await bus.stop()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while outstanding := _replay_outstanding(replay, detected, completed, posted):
            assert loop.time() < deadline, (
                f"not published after the redeliveries: {outstanding}\n"
                + "\n".join(mesh.log_tail(s, 10) for s in ("fetcher", "inference", "mapper"))
            )
            await asyncio.sleep(0.1)
            await watcher.poll()
    finally:
        await watcher.stop()
    # Every results.posted of the run (the first one and those seen since) must have been dealt
    # with by both of its consumers before the counts mean anything.
    deliveries = 1 + len(replay.of_type("results.posted"))
    for service in ("notifier", "verification"):
        await mesh.wait_for_log(
            service,
            posted.correlation_id,
            lambda lines: (
                sum(line.get("event") in MESSAGE_OUTCOMES for line in lines) >= deliveries
            ),
        )
    assert await _resource_counts(mesh, posted) == counts
    assert await _dead_letters_of_run(mesh, posted.correlation_id) == []


async def test_fhir_server_outage_delays_results_but_loses_none(mesh: Mesh) -> None:
    """With the FHIR server unreachable for the writing services, the mapper's message is retried
    with backoff; once the server is back the results arrive and nothing is dead-lettered."""
    watcher = MeshWatcher(mesh.settings.broker.url, mesh.settings.broker.exchange, mesh.direct_fhir)
    await watcher.start()
    await mesh.proxy.down()
    try:
        loaded = await asyncio.to_thread(
            load_study,
            "head-bleed",
            settings=Settings.from_env(),
            seed=random.randrange(10**7, 10**8),
        )
        progress = watcher.track(loaded.study_instance_uid)
        for _ in range(300):
            await watcher.wait(0.1)
            if progress.of_type("inference.completed"):
                break
        assert progress.of_type("inference.completed"), "the study never reached the mapper"
        await asyncio.sleep(3)
        await watcher.wait(0.1)
        assert not progress.of_type("results.posted"), "results posted while the server was down"
    finally:
        await mesh.proxy.up()
    try:
        incomplete = await watcher.wait(60)
    finally:
        await watcher.stop()
    assert not incomplete, f"{progress.missing()}\n{mesh.log_tail('mapper')}"
    # This run's retries (an earlier test's would not count): its lines carry its correlation id.
    (detected, *_) = progress.of_type("study.detected")
    assert mesh.log_events("mapper", detected.correlation_id, "message_retry_scheduled"), (
        mesh.log_tail("mapper")
    )
    assert await _dead_letters_of_run(mesh, detected.correlation_id) == []


async def test_one_trace_spans_all_six_services(
    mesh: Mesh, demo_run: tuple[list[LoadResult], dict[str, StudyProgress]]
) -> None:
    """The head CT's run (its correlation id is on every consumer span) has one OpenTelemetry
    trace with spans from all six services, from the subscriber's hook to the Task. (A later
    test replays the run's messages from outside any trace; those deliveries start traces of
    their own.)"""
    _, progress = _by_scenario(demo_run, "head-bleed")
    detected = progress.first("study.detected")
    assert detected is not None
    run = str(detected.correlation_id)
    expected = {
        f"radmesh-{s}"
        for s in ("subscriber", "fetcher", "inference", "mapper", "notifier", "verification")
    }
    by_trace: dict[str, set[str]] = {}
    for _ in range(100):  # the services export every 200 ms
        traces = mesh.spans.runs.get(run, set())
        by_trace = {
            trace: {service for trace_id, service, _ in mesh.spans.spans if trace_id == trace}
            for trace in traces
        }
        if any(services >= expected for services in by_trace.values()):
            break
        await asyncio.sleep(0.1)
    assert any(services >= expected for services in by_trace.values()), (
        f"no trace of the run covers all six services: {by_trace}"
    )
    # ... and in it, every call to the FHIR server, the PACS and the model server as a client
    # span of the service that made it (OpenTelemetry's aiohttp-client instrumentation).
    (whole,) = [trace for trace, services in by_trace.items() if services >= expected]
    calls = {(service, name) for trace_id, service, name in mesh.spans.spans if trace_id == whole}
    for service, name in (
        ("radmesh-subscriber", "fhir GET"),  # the ImagingStudy and the claim search
        ("radmesh-subscriber", "fhir POST"),  # the run's claim
        ("radmesh-fetcher", "dicomweb GET"),  # QIDO-RS and WADO-RS
        ("radmesh-inference", "model-server POST"),  # the OIP inference request
        ("radmesh-mapper", "fhir POST"),  # the results transaction, the verification Task in it
        ("radmesh-mapper", "dicomweb POST"),  # the SR's STOW-RS
        ("radmesh-notifier", "fhir POST"),
        # the Task is written already: the verification service takes the event, writes nothing
        ("radmesh-verification", "verification consume results.posted"),
    ):
        assert (service, name) in calls, (service, name, sorted(calls))
    # ... and the server span of the hook that started the run: the FHIR server's rest-hook or
    # the PACS's stable-study event, whichever reached the subscriber first (both are sent)
    hooks = {
        "fhir-rest-hook": {"PUT /fhir/ImagingStudy/{id}", "POST /fhir"},
        "pacs-stable-study": {"POST /pacs/stable-study"},
    }[detected.source]
    assert any(service == "radmesh-subscriber" and name in hooks for service, name in calls), (
        detected.source,
        sorted(calls),
    )


async def test_message_failing_validation_lands_in_the_dead_letter_queue_with_its_reason(
    mesh: Mesh,
) -> None:
    """A study.detected without its study goes to the fetcher's dead-letter queue, saying why."""
    message_id = f"e2e-invalid-{random.randrange(10**9)}"
    connection = await aio_pika.connect(mesh.settings.broker.url)
    try:
        channel = await connection.channel()
        exchange = await channel.get_exchange(mesh.settings.broker.exchange)
        await exchange.publish(
            aio_pika.Message(
                b'{"schema_version": 1, "models": [], "source": "manual"}',
                message_id=message_id,
                content_type="application/json",
            ),
            routing_key="study.detected",
        )
        letter = None
        for _ in range(100):
            letters = await list_dead_letters(
                mesh.settings.broker.url, "fetcher", prefix=mesh.settings.broker.queue_prefix
            )
            letter = next((item for item in letters if item.message_id == message_id), None)
            if letter is not None:
                break
            await asyncio.sleep(0.1)
        assert letter is not None, mesh.log_tail("fetcher")
        assert "study: Field required" in letter.reason
        assert letter.error_type.startswith("permanent:InvalidMessage")
        # Take our own dead letter off the queue again; closing the channel returns any
        # others, unacknowledged, to the queue.
        queue = await channel.get_queue(
            ServiceQueues("fetcher", mesh.settings.broker.queue_prefix).dead_letter_queue
        )
        while (message := await queue.get(no_ack=False, fail=False)) is not None:
            if message.message_id == message_id:
                await message.ack()
                break
        await channel.close()
    finally:
        await connection.close()


RADMESH_WRITES = (
    "Device",
    "Observation",
    "DiagnosticReport",
    "Provenance",
    "Communication",
    "CommunicationRequest",
    "ServiceRequest",
    "Task",
)


def _written_by_radmesh(resource: dict[str, Any]) -> bool:
    """radmesh marks everything it writes with its business identifier (Provenance: a tag);
    the sample hospital's own records (`urn:radmesh:samples:…`: the order, the patient) are not
    radmesh's writes."""
    marks = [*resource.get("identifier", []), *resource.get("meta", {}).get("tag", [])]
    systems = [str(mark.get("system", "")) for mark in marks]
    return any(
        system.startswith("urn:radmesh:") and not system.startswith("urn:radmesh:samples:")
        for system in systems
    )


async def _radmesh_resources(mesh: Mesh, posted: ResultsPosted) -> dict[str, dict[str, Any]]:
    """Every resource radmesh wrote for one study: the patient's results, alerts, consult and
    Task, the model's Device and every Provenance of the report (the AI's and a verdict's)."""
    found: dict[str, dict[str, Any]] = {}
    patient = posted.study.patient or ""
    searches = [(kind, {"subject": patient}) for kind in RADMESH_WRITES[1:3] + RADMESH_WRITES[4:]]
    searches.append(("Provenance", {"target": posted.diagnostic_report}))
    for kind, params in searches:
        for resource in await mesh.direct_fhir.resources(kind).search(**params).fetch_all():
            if _written_by_radmesh(dict(resource)):
                found[f"{kind}/{resource['id']}"] = dict(resource)
    found[posted.device] = dict(await mesh.direct_fhir.read_resource(posted.device))
    return found


async def test_every_resource_radmesh_wrote_passes_three_fhir_validators(
    mesh: Mesh, demo_run: tuple[list[LoadResult], dict[str, StudyProgress]]
) -> None:
    """Each resource radmesh wrote for the demo's three studies (after the accept and reject
    above: final and cancelled results and the verifiers' Provenance included), as the FHIR
    server holds it, passes three independent R4 validators with zero errors: HAPI's $validate,
    fhir.resources and FHIR.js (tests/fhir_validators.py). The errors are the failure message;
    the warnings are listed as test warnings, but for dom-6: every resource has a narrative."""
    loaded, progress = demo_run
    written: dict[str, dict[str, Any]] = {}
    for result in loaded:
        for posted in progress[result.study_instance_uid].of_type("results.posted"):
            written.update(await _radmesh_resources(mesh, posted))
    kinds = {reference.split("/")[0] for reference in written}
    assert kinds == set(RADMESH_WRITES), (
        f"not found among radmesh's writes: {set(RADMESH_WRITES) - kinds}"
    )
    verdicts = {
        "$validate": await hapi_validate(str(mesh.direct_fhir.url), written),
        "fhir.resources": fhir_resources(written),
        "FHIR.js": fhir_js(written),
    }
    errors: list[str] = []
    for validator, findings in verdicts.items():
        errors += [f"{validator}: {line}" for line in findings.error_lines()]
        seen: dict[str, int] = {}
        for label, texts in findings.warnings.items():
            for text in texts:
                key = f"{label.split('/')[0]}: {text}"
                seen[key] = seen.get(key, 0) + 1
        for text, count in sorted(seen.items()):
            warnings.warn(f"{validator} warning ×{count}: {text}", stacklevel=1)
    assert not errors, f"{len(errors)} error(s) in {len(written)} resources:\n" + "\n".join(errors)
    # A Device is created once per model version: one an older radmesh created on this server
    # before this run (older than all else written here) is not rewritten, and not judged.
    run_started = min(
        str(r["meta"]["lastUpdated"]) for r in written.values() if r["resourceType"] != "Device"
    )
    unnarrated = sorted(
        label
        for label, texts in verdicts["$validate"].warnings.items()
        if any("dom-6" in text for text in texts)
        and str(written[label]["meta"]["lastUpdated"]) >= run_started
    )
    assert not unnarrated, f"without a narrative (dom-6): {unnarrated}"


async def test_the_mapper_publishes_the_extension_definition_its_observations_use(
    mesh: Mesh,
) -> None:
    """At start the mapper made sure the FHIR server holds the StructureDefinition of the image
    reference extension (it logged the reference), and the server holds exactly one."""
    lines = (mesh.logs / "mapper.log").read_text(errors="replace").splitlines()
    published = [
        json.loads(line)
        for line in lines
        if line.startswith("{") and '"extension_definitions_published"' in line
    ]
    assert published, mesh.log_tail("mapper")
    found = (
        await mesh.direct_fhir.resources("StructureDefinition")
        .search(url=DICOM_IMAGE_EXTENSION)
        .fetch_all()
    )
    assert [f"StructureDefinition/{d['id']}" for d in found] == published[-1]["definitions"]


def _radmesh_dicom_objects(
    settings: RadmeshSettings, study_instance_uid: str
) -> tuple[list[Dataset], list[dict[str, Any]]]:
    """The SRs, KOSs and SEGs radmesh stored in a study (its Manufacturer), and the metadata of the
    study's CT instances, from the PACS (dicomweb-client: not radmesh's own reader)."""
    session = requests.Session()
    password = settings.dicomweb.password
    session.auth = (
        settings.dicomweb.username or "",
        password.get_secret_value() if password else "",
    )
    client = DICOMwebClient(url=settings.dicomweb.base_url, session=session)
    objects: list[Dataset] = []
    images: list[dict[str, Any]] = []
    for series in client.search_for_series(study_instance_uid):
        series_uid = series["0020000E"]["Value"][0]
        modality = series.get("00080060", {}).get("Value", [""])[0]
        if modality == "CT":
            images += client.retrieve_series_metadata(study_instance_uid, series_uid)
        elif modality in ("SR", "KO", "SEG"):
            for dataset in client.retrieve_series(study_instance_uid, series_uid):
                if dataset.get("Manufacturer") == RADMESH_MANUFACTURER:
                    objects.append(dataset)
    return objects, images


def _validator_errors(objects: list[Dataset], scenario: str, folder: Path) -> list[str]:
    """dciodvfy's errors for each object, and PixelMed DicomSRValidator's for each SR and KOS."""
    errors = []
    for dataset in objects:
        path = folder / f"{dataset.SOPInstanceUID}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        found = dciodvfy_errors(path)
        if dataset.Modality != "SEG":
            found += pixelmed_sr_errors(path)
        errors += [f"{scenario} {dataset.Modality} {line}" for line in found]
    return errors


def _cited(group: Any) -> set[str]:
    """The slices a group's measurements cite (IMAGE items under them)."""
    return {
        str(image.referenced_sop_instance_uid)
        for measurement in group.get_measurements()
        for image in measurement.referenced_images
    }


def _assert_segmented(
    group: hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations,
    objects: list[Dataset],
    image_uids: set[str],
    observations: list[dict[str, Any]],
) -> None:
    """The group references segment 1 of a SEG radmesh stored: one segment, frames on the
    study's images, some voxels set; the finding's Observation names that SEG."""
    segment = group.referenced_segment
    assert segment is not None
    (seg,) = [d for d in objects if d.SOPInstanceUID == segment.referenced_sop_instance_uid]
    segmentation = hd.seg.Segmentation.from_dataset(seg)
    assert len(segmentation.SegmentSequence) == 1
    assert {str(uid) for _, _, uid in segmentation.get_source_image_uids()} <= image_uids
    assert segmentation.get_volume(combine_segments=True).array.any()
    assert any(_segmentation_uid(o) == seg.SOPInstanceUID for o in observations)


def _segmentation_uid(observation: dict[str, Any]) -> str | None:
    """The SOP Instance UID of the SEG the Observation's image reference names, if any."""
    for extension in observation.get("extension", []):
        for part in extension.get("extension", []):
            if part.get("url") == "segmentationSopInstanceUid":
                return str(part["valueOid"]).removeprefix("urn:oid:")
    return None


def _tracking_uids(observation: dict[str, Any]) -> set[str]:
    return {
        str(identifier["value"]).removeprefix("urn:oid:")
        for identifier in observation.get("identifier", [])
        if any(c.get("code") == "112040" for c in identifier.get("type", {}).get("coding", []))
    }


async def test_every_dicom_object_radmesh_stored_passes_two_validators_and_matches_fhir(
    mesh: Mesh, demo_run: tuple[list[LoadResult], dict[str, StudyProgress]], tmp_path: Path
) -> None:
    """Each SR, KOS and SEG radmesh stored in the demo's three studies (after the accept and
    reject above: the verified SR included) has 0 errors in dciodvfy, and each SR and KOS 0 in
    PixelMed's DicomSRValidator. Read back with highdicom, each run's preliminary SR has a
    measurement group per presence finding whose tracking UIDs are exactly those its
    Observations carry; each nodule is a TID 1410 group with an SCOORD3D POINT in the series'
    frame of reference, inside the volume's slab; the bleed, which the model segmented, is a
    TID 1411 group referencing segment 1 of the run's SEG, whose frames lie on the study's
    images and which its Observation names; each located finding's probability cites the
    slice it lies on; a run with a located present finding has one key-image selection ("Of
    Interest") listing exactly the slices its present groups cite, and a run with none has no
    selection."""
    registry = load_registry(mesh.settings.registry_path)
    loaded, progress = demo_run
    errors: list[str] = []
    located = segmented = 0
    for result in loaded:
        objects, images = await asyncio.to_thread(
            _radmesh_dicom_objects, mesh.settings, result.study_instance_uid
        )
        assert objects, f"radmesh stored no SR in the {result.scenario} study"
        errors += _validator_errors(objects, result.scenario, tmp_path)
        frames = {image["00200052"]["Value"][0] for image in images}
        heights = [float(image["00200032"]["Value"][2]) for image in images]
        uids = {image["00080018"]["Value"][0] for image in images}
        for posted in progress[result.study_instance_uid].of_type("results.posted"):
            model = registry.get(posted.model.id, posted.model.version)
            _, sop_uid = sr_uids(result.study_instance_uid, model, posted.model.generation)
            (report,) = [d for d in objects if d.SOPInstanceUID == sop_uid]
            content = hd.sr.Comprehensive3DSR.from_dataset(report).content
            assert isinstance(content, hd.sr.MeasurementReport)
            planar = content.get_planar_roi_measurement_groups()
            volumetric = content.get_volumetric_roi_measurement_groups()
            groups = [*planar, *volumetric, *content.get_image_measurement_groups()]
            observations = await _observations(mesh, posted)
            observed = set().union(*[_tracking_uids(o) for o in observations])
            assert {str(g.tracking_uid) for g in groups} == observed, result.scenario
            for segmented_group in volumetric:
                _assert_segmented(segmented_group, objects, uids, observations)
                segmented += 1
            for located_group in [*planar, *volumetric]:
                cited = _cited(located_group)
                assert cited and cited <= uids
            for group in planar:
                region = group.roi
                assert isinstance(region, hd.sr.Scoord3DContentItem)
                assert region.graphic_type == hd.sr.GraphicTypeValues3D.POINT
                assert region.frame_of_reference_uid in frames
                assert min(heights) - 1 <= float(region.value[0][2]) <= max(heights) + 1
            if result.scenario in ("head-bleed", "chest-nodules"):
                located_groups = [*planar, *volumetric]
                assert located_groups, f"the {result.scenario} findings were not located"
                located += len(located_groups)
            _, key_images_uid = key_images_uids(
                result.study_instance_uid, model, posted.model.generation
            )
            selections = [d for d in objects if d.SOPInstanceUID == key_images_uid]
            present = [
                g
                for g in [*planar, *volumetric]
                if any(e.value == PRESENT.dicom() for e in g.get_qualitative_evaluations())
            ]
            assert len(selections) == (1 if present else 0), result.scenario
            if present:
                selection = hd.ko.KeyObjectSelectionDocument.from_dataset(selections[0])
                assert selection.ConceptNameCodeSequence[0].CodeValue == OF_INTEREST.code
                listed = {
                    item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                    for item in selection.ContentSequence
                    if item.ValueType == "IMAGE"
                }
                # the key images are the slices the located present findings lie on
                cited_present = set().union(*[_cited(group) for group in present])
                assert listed == cited_present, result.scenario
    assert not errors, f"{len(errors)} validator error(s):\n" + "\n".join(errors)
    assert located >= 2
    assert segmented >= 1, "the bleed's SEG was not referenced"


async def _metrics(service: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The service's /metrics, parsed: sample name → (labels, value) of each sample."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{SERVICES[service]}/metrics") as response,
    ):
        assert response.status == 200
        text = await response.text()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def _total(
    samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str
) -> float:
    return sum(
        value
        for found, value in samples.get(name, [])
        if all(found.get(key) == wanted for key, wanted in labels.items())
    )


async def test_every_service_exposes_the_metrics_a_dashboard_needs_after_the_demo(
    mesh: Mesh, demo_run: tuple[list[LoadResult], dict[str, StudyProgress]]
) -> None:
    """After the demo (and the tests above): each service's /metrics has its messages handled
    and published, handler latency, the depth of its queues, its calls to the FHIR server, the
    PACS or the model server timed, and the model's inference time, the alerts raised, the
    dead letters by class of reason and the verification backlog."""
    metrics = {service: await _metrics(service) for service in SERVICES}
    published = "radmesh_messages_published_total"
    assert _total(metrics["subscriber"], published, event_type="study.detected") >= 3
    assert _total(metrics["subscriber"], "radmesh_remote_call_seconds_count", remote="fhir") > 0
    for service in ("fetcher", "inference", "mapper", "notifier", "verification"):
        samples = metrics[service]
        assert _total(samples, "radmesh_messages_total", outcome="handled") > 0, service
        assert _total(samples, "radmesh_message_seconds_count") > 0, service
        depths = {labels["queue"] for labels, _ in samples.get("radmesh_queue_depth", [])}
        assert depths == {"work", "retry-delay", "dead-letter"}, service
    for service, remote in (
        ("fetcher", "dicomweb"),
        ("inference", "model-server"),
        ("mapper", "fhir"),
        ("mapper", "dicomweb"),  # the SR's STOW-RS
        ("notifier", "fhir"),
        ("verification", "fhir"),
    ):
        count = _total(metrics[service], "radmesh_remote_call_seconds_count", remote=remote)
        assert count > 0, (service, remote)
    for service in ("fetcher", "inference", "mapper"):
        assert _total(metrics[service], published) > 0, service
    inference = metrics["inference"]
    timed = "radmesh_model_inference_seconds_count"
    assert _total(inference, timed, model="ich-reference", outcome="ok") >= 2
    assert _total(inference, timed, model="lung-nodule-reference", outcome="ok") >= 1
    assert _total(metrics["notifier"], "radmesh_alerts_raised_total") >= 1
    dead = _total(metrics["fetcher"], "radmesh_dead_letters_total", reason="invalid-message")
    assert dead >= 1  # the invalid study.detected above
    backlog = {
        labels["priority"] for labels, _ in metrics["verification"]["radmesh_verification_backlog"]
    }
    assert backlog == {"stat", "asap", "urgent", "routine"}
