"""The five service queues under generated hostile messages, against the real broker, FHIR
server, PACS and model server: 1,000 messages each (printed with their run time and outcomes:
`pytest -s`) — random bodies, hostile JSON, valid events truncated or mutated in one place,
garbage `x-radmesh-attempt` and trace headers, types the service does not consume. Each is
dead-lettered with a reason naming what was wrong (or, when its body is still a valid event,
handled or dead-lettered for what the handler found: never as a bug, never by the broker
after the consumer crashed on it); none is lost; `radmesh dlq list` reads the dead-letter
queue; and the service, still consuming, handles a valid event afterwards.

Each service runs in this process as its app.py builds it, on queues named for this run
(`fuzz-<tag>-<service>`: the service queue names are global, shared/bus.py) and exchanges of
its own. The valid events come from one real run of the study through fetcher, inference
and mapper (the `valid_events` fixture)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import pytest
import structlog
from pydantic import SecretStr

from services.fetcher.app import build_app as fetcher_app
from services.fetcher.settings import FetcherSettings
from services.inference.app import build_app as inference_app
from services.inference.settings import InferenceSettings
from services.mapper.app import build_app as mapper_app
from services.mapper.settings import MapperSettings
from services.notifier.app import build_app as notifier_app
from services.notifier.settings import NotifierSettings
from services.verification.app import build_app as verification_app
from services.verification.settings import VerificationSettings
from shared.bus import ServiceQueues
from shared.cli import _dlq_list
from shared.dead_letters import list_dead_letters
from shared.fhir import FhirClient
from shared.iocm import SOURCE_CODES
from shared.messages import (
    EVENT_TYPES,
    AlertEscalationDue,
    Event,
    FindingRejected,
    FindingVerified,
    ModelRef,
    ResultsPosted,
    ResultsRetracted,
    StructuredReportDetected,
    StudyDetected,
    StudyFetched,
    StudyRef,
    StudyRetracted,
)
from shared.registry import load_registry
from shared.runtime import ServiceApp
from shared.settings import (
    AlertLinkSettings,
    BrokerSettings,
    DicomWebSettings,
    FhirSettings,
    RadmeshSettings,
    StorageSettings,
)
from tests.conftest import Infrastructure
from tests.fuzz.conftest import FuzzStudy
from tests.fuzz.drawing import in_background, mixed
from tests.fuzz.http import Stopwatch, logged
from tests.fuzz.queues import (
    DeadLetterWatch,
    Message,
    delete_topology,
    finished,
    hostile_messages,
    outcome_problems,
    publish_all,
    settled,
    wait_until_finished,
)
from tests.identity import oidc_settings
from tests.integration.fhir_seed import search_resources

pytestmark = [pytest.mark.integration, pytest.mark.fuzz]

CASES = 1000
REGISTRY_PATH = Path(__file__).resolve().parents[2] / "registry" / "models.yaml"
SERVICES = ("fetcher", "inference", "mapper", "notifier", "verification")
_SHOWN = 20


@dataclass
class FuzzMesh:
    """Settings and names of this run's services, and a connection to look at their queues."""

    settings: RadmeshSettings
    tag: str
    connection: aio_pika.abc.AbstractRobustConnection
    events: dict[str, Event]  # event type → a valid event of the fuzz study's run

    def service(self, name: str) -> str:
        return f"fuzz-{self.tag}-{name}"

    def build(self, name: str) -> ServiceApp:
        """The service as its app.py wires it, on this run's queues."""
        settings, service = self.settings, self.service(name)
        builders: dict[str, Callable[[], ServiceApp]] = {
            "fetcher": lambda: fetcher_app(settings, FetcherSettings(), service),
            # reading volumes is CPU work in this one process: four at a time, as deployed
            "inference": lambda: inference_app(
                settings.model_copy(
                    update={"broker": settings.broker.model_copy(update={"prefetch_count": 4})}
                ),
                InferenceSettings(),
                service,
            ),
            "mapper": lambda: mapper_app(
                settings, MapperSettings(redrive_interval_seconds=0), service
            ),
            "notifier": lambda: notifier_app(settings, NotifierSettings(), service),
            "verification": lambda: verification_app(
                settings, VerificationSettings(outbox_sweep_seconds=0), service
            ),
        }
        return builders[name]()


def _timer_delays() -> list[float]:
    """The notifier's escalation timers (delay queues of their own)."""
    registry = load_registry(REGISTRY_PATH)
    return [
        step.after_minutes * 60
        for model in registry.models
        for finding in model.findings
        for step in finding.escalation
    ]


async def _observe(mesh: FuzzMesh) -> aio_pika.abc.AbstractQueue:
    """A queue of our own on every event published on this run's exchange."""
    channel = await mesh.connection.channel()
    exchange = await channel.get_exchange(mesh.settings.broker.exchange)
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(exchange, routing_key="#")
    return queue


async def _next_event(queue: aio_pika.abc.AbstractQueue, event_type: str, seconds: float) -> Event:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        message = await queue.get(no_ack=True, fail=False)
        if message is not None and message.type == event_type:
            return EVENT_TYPES[event_type].model_validate_json(message.body)
        if message is None:
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"no {event_type} within {seconds} s")
            await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
async def fuzz_mesh(
    infra: Infrastructure, fuzz_study: FuzzStudy, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[FuzzMesh]:
    """This run's settings, and one valid event of each type the five services consume: the
    fuzz study's real run through fetcher, inference and mapper, and the verdict and
    retraction events about its report."""
    tag = uuid.uuid4().hex[:8]
    user, password = infra.orthanc_auth
    broker = BrokerSettings(
        url=infra.amqp_url,
        exchange=f"radmesh.fuzz-{tag}",
        dead_letter_exchange=f"radmesh.fuzz-{tag}.dead-letter",
        retry_delays_seconds=(0.05,),
        prefetch_count=16,  # the servers behind take more than 4 at a time
    )
    settings = RadmeshSettings(
        broker=broker,
        fhir=FhirSettings(base_url=infra.fhir_base_url),
        dicomweb=DicomWebSettings(
            base_url=infra.orthanc_dicomweb_url, username=user, password=SecretStr(password)
        ),
        storage=StorageSettings(blob_dir=tmp_path_factory.mktemp("blobs")),
        oidc=oidc_settings(infra),
        alert_links=AlertLinkSettings(base_url=None, secret=SecretStr("fuzz-alert-link-secret")),
        registry_path=REGISTRY_PATH,
    )
    connection = await aio_pika.connect_robust(infra.amqp_url)
    mesh = FuzzMesh(settings, tag, connection, {})
    loaded, study = fuzz_study.loaded, fuzz_study.imaging_study
    detected = StudyDetected(
        study=StudyRef(
            study_instance_uid=loaded.study_instance_uid,
            imaging_study=f"ImagingStudy/{study['id']}",
            patient=study["subject"]["reference"],
            service_request=loaded.fhir_ids["ServiceRequest"],
            dicomweb_base_url=infra.orthanc_dicomweb_url,
        ),
        models=(ModelRef(id="ich-reference", version="1"),),
        source="manual",
    )
    chain = [mesh.build(name) for name in ("fetcher", "inference", "mapper")]
    try:
        for app in chain:
            await app.start()
        observed = await _observe(mesh)
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(broker.exchange)
        await exchange.publish(
            aio_pika.Message(
                detected.to_json(), type=detected.event_type, message_id=str(detected.message_id)
            ),
            routing_key=detected.event_type,
        )
        for event_type in ("study.fetched", "inference.completed", "results.posted"):
            mesh.events[event_type] = await _next_event(observed, event_type, 60)
        await channel.close()
    finally:
        for app in chain:
            await app.stop()
    posted = mesh.events["results.posted"]
    assert isinstance(posted, ResultsPosted)
    verifier = loaded.fhir_ids["Practitioner"]
    mesh.events["study.detected"] = detected
    mesh.events["finding.verified"] = posted.follow(
        FindingVerified,
        study=posted.study,
        task="Task/fuzz-task",
        diagnostic_report=posted.diagnostic_report,
        verifier=verifier,
        provenance=posted.provenance,
    )
    mesh.events["finding.rejected"] = posted.follow(
        FindingRejected,
        study=posted.study,
        task="Task/fuzz-task",
        diagnostic_report=posted.diagnostic_report,
        verifier=verifier,
        reason="fuzz: not there",
        reason_code="false-positive",
        provenance=posted.provenance,
    )
    mesh.events["results.retracted"] = posted.follow(
        ResultsRetracted,
        study=posted.study,
        diagnostic_report=posted.diagnostic_report,
        source="pacs-deleted",
        reason_code=SOURCE_CODES["pacs-deleted"],
        reason="fuzz: the PACS deleted 1 series",
        sr_in_pacs=False,
    )
    mesh.events["alert.escalation-due"] = posted.follow(
        AlertEscalationDue,
        study=posted.study,
        model=posted.model,
        finding_key="intracranial-hemorrhage",
        communication="Communication/fuzz-alert",
        communication_request="CommunicationRequest/fuzz-alert",
        step=1,
    )
    fetched = mesh.events["study.fetched"]
    assert isinstance(fetched, StudyFetched)
    image = fetched.series[0].instances[0]
    # a CT image named as an SR: the mapper reads it and imports nothing (no product it knows)
    mesh.events["structured-report.detected"] = posted.follow(
        StructuredReportDetected,
        study=posted.study,
        series_instance_uid=fetched.series[0].series_instance_uid,
        sop_instance_uid=image.sop_instance_uid,
        sop_class_uid=image.sop_class_uid,
    )
    mesh.events["study.retracted"] = posted.follow(
        StudyRetracted,
        study=StudyRef(study_instance_uid=posted.study.study_instance_uid),
        series_instance_uids=(f"{posted.study.study_instance_uid}.999",),
        source="pacs-deleted",
        reason_code=SOURCE_CODES["pacs-deleted"],
        reason="fuzz: the PACS deleted 1 series (not one the model read)",
    )
    try:
        yield mesh
    finally:
        await _cancel_tasks_of(settings, posted)
        await connection.close()
        await delete_topology(
            infra.amqp_url, [mesh.service(name) for name in SERVICES], broker, _timer_delays()
        )


async def _cancel_tasks_of(settings: RadmeshSettings, posted: ResultsPosted) -> None:
    """Leave no verification Task of the fuzz run open on the shared FHIR server."""
    fhir = FhirClient(settings.fhir)
    try:
        for task in await search_resources(fhir, "Task", focus=posted.diagnostic_report):
            if task.get("status") == "requested":
                await fhir.execute(
                    f"Task/{task['id']}", "put", data={**task, "status": "cancelled"}
                )
    finally:
        await fhir.close()


# What each service consumes (its app.py), and the valid event it is given afterwards.
CONSUMED: dict[str, tuple[tuple[str, ...], str]] = {
    "fetcher": (("study.detected",), "study.detected"),
    "inference": (("study.fetched",), "study.fetched"),
    "mapper": (
        (
            "inference.completed",
            "structured-report.detected",
            "finding.verified",
            "finding.rejected",
            "results.retracted",
        ),
        "inference.completed",
    ),
    "notifier": (
        (
            "results.posted",
            "alert.escalation-due",
            "finding.verified",
            "finding.rejected",
            "results.retracted",
        ),
        "results.posted",
    ),
    "verification": (("results.posted", "study.retracted"), "results.posted"),
}


@pytest.fixture(scope="module")
def cases(fuzz_mesh: FuzzMesh) -> dict[str, Future[list[Message]]]:
    """Every queue's messages, drawn in the background in the order the tests send them."""
    return {
        name: in_background(_cases, dict(fuzz_mesh.events), consumed)
        for name, (consumed, _) in CONSUMED.items()
    }


async def _purge(mesh: FuzzMesh, service: str) -> None:
    """What earlier stages published to the service's queue (their events, while it was not
    running) is not this test's: emptied before the service starts."""
    queues = ServiceQueues(service)
    for name in (queues.queue, queues.dead_letter_queue):
        channel = await mesh.connection.channel()
        try:
            queue = await channel.declare_queue(name, passive=True)
        except aio_pika.exceptions.ChannelClosed:
            continue  # not declared yet: nothing in it
        await queue.purge()
        await channel.close()


def _cases(events: dict[str, Event], consumed: tuple[str, ...]) -> list[Message]:
    bases = {event_type: _plain(events[event_type]) for event_type in consumed}
    others = sorted(set(EVENT_TYPES) - set(consumed))
    return [settled(message) for message in mixed(*hostile_messages(bases, others))]


def _plain(event: Event) -> dict[str, Any]:
    return dict(event.model_dump(mode="json"))


async def _fuzz_queue(mesh: FuzzMesh, name: str, drawn: Future[list[Message]]) -> None:
    service = mesh.service(name)
    stopwatch = Stopwatch()
    messages = await asyncio.wrap_future(drawn)
    waited = stopwatch.seconds
    assert len(messages) >= CASES, f"{name}: hypothesis generated {len(messages)} cases only"
    await _purge(mesh, service)
    app = mesh.build(name)
    await app.start()
    try:
        watch = DeadLetterWatch()
        await watch.start(mesh.connection, mesh.settings.broker, service)
        stopwatch = Stopwatch()
        before = finished(service)
        dead_before = finished(service, ("dead_lettered",))
        with structlog.testing.capture_logs() as logs:
            await publish_all(mesh.connection, ServiceQueues(service).queue, messages)
            done = await wait_until_finished(service, before + len(messages), seconds=90)
        # the consumer put a message back: publishing its outcome failed (the broker refused)
        assert logged(logs, "message_requeued") == []
        assert done, (
            f"{name}: {finished(service) - before:.0f} of {len(messages)} messages finished "
            "(handled or dead-lettered) in 90 s: the others are lost or stuck"
        )
        dead = round(finished(service, ("dead_lettered",)) - dead_before)
        assert await watch.holds(dead), f"{name}: {dead} dead-lettered, {len(watch.letters)} seen"
        seconds = stopwatch.seconds
        found = outcome_problems(messages, watch.letters)
        kinds = Counter(
            str(headers.get("x-radmesh-error-type", "?")).split(":")[0]
            for headers in watch.letters.values()
        )
        print(
            f"radmesh.{name}: {len(messages)} messages in {seconds:.1f} s "
            f"(+{waited:.1f} s drawing them) "
            f"(dead-lettered: {dead} {dict(kinds)}, handled: {len(messages) - dead})"
        )
        shown = "\n".join(found[:_SHOWN])
        assert found == [], f"{name}: {len(found)} messages came to the wrong end:\n{shown}"

        # what `radmesh dlq list` reads: every dead letter, each with its reason
        listed = await list_dead_letters(
            mesh.settings.broker.url, service, limit=len(messages) + 10
        )
        unexplained = [letter for letter in listed if letter.message_id not in watch.letters]
        assert unexplained == [], f"{name}: dead letters radmesh did not write: {unexplained[:5]}"
        assert len(listed) == dead
        assert all(letter.reason and letter.error_type for letter in listed)
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            assert await asyncio.to_thread(_dlq_list, mesh.settings, service) == 0
        assert output.getvalue().count("    reason: ") == min(dead, 100)

        # and the consumer, still running, handles a valid event
        valid = mesh.events[CONSUMED[name][1]]
        handled_before = finished(service, ("handled",))
        before = finished(service)
        await publish_all(
            mesh.connection,
            ServiceQueues(service).queue,
            [Message("valid", valid.to_json(), valid.event_type, may_be_handled=True)],
        )
        assert await wait_until_finished(service, before + 1, seconds=60), (
            f"{name}: the valid {valid.event_type} after the fuzz was not consumed"
        )
        assert finished(service, ("handled",)) == handled_before + 1, (
            f"{name}: the valid {valid.event_type} after the fuzz was dead-lettered"
        )
    finally:
        await app.stop()


async def test_fetcher_queue_dead_letters_1000_hostile_messages(
    fuzz_mesh: FuzzMesh, cases: dict[str, Future[list[Message]]]
) -> None:
    """radmesh.fetcher (study.detected): 1,000 hostile messages (hostile_messages' MIX), then
    the study's valid study.detected is fetched."""
    await _fuzz_queue(fuzz_mesh, "fetcher", cases["fetcher"])


async def test_inference_queue_dead_letters_1000_hostile_messages(
    fuzz_mesh: FuzzMesh, cases: dict[str, Future[list[Message]]]
) -> None:
    """radmesh.inference (study.fetched): 1,000 hostile messages, then the study's valid
    study.fetched is run through the model."""
    await _fuzz_queue(fuzz_mesh, "inference", cases["inference"])


async def test_mapper_queue_dead_letters_1000_hostile_messages(
    fuzz_mesh: FuzzMesh, cases: dict[str, Future[list[Message]]]
) -> None:
    """radmesh.mapper (inference.completed, finding.verified, finding.rejected,
    results.retracted): 1,000 hostile messages, then the run's valid inference.completed is
    posted (again: the same resources)."""
    await _fuzz_queue(fuzz_mesh, "mapper", cases["mapper"])


async def test_notifier_queue_dead_letters_1000_hostile_messages(
    fuzz_mesh: FuzzMesh, cases: dict[str, Future[list[Message]]]
) -> None:
    """radmesh.notifier (results.posted, alert.escalation-due, finding.verified,
    finding.rejected, results.retracted): 1,000 hostile messages, then the run's valid
    results.posted raises its alert."""
    await _fuzz_queue(fuzz_mesh, "notifier", cases["notifier"])


async def test_verification_queue_dead_letters_1000_hostile_messages(
    fuzz_mesh: FuzzMesh, cases: dict[str, Future[list[Message]]]
) -> None:
    """radmesh.verification (results.posted, study.retracted): 1,000 hostile messages, then
    the run's valid results.posted gets its verification Task."""
    await _fuzz_queue(fuzz_mesh, "verification", cases["verification"])
