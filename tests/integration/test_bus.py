"""shared.bus against the real RabbitMQ: delivery, retry with backoff, dead letters with reasons."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.bus import ATTEMPT_HEADER, REASON_HEADER, Bus, Handler
from shared.dead_letters import DeadLetter, list_dead_letters, queue_status, replay
from shared.errors import BrokerUnavailable, PermanentError, RemoteUnavailable, TransientError
from shared.messages import Event, ModelRef, StudyDetected, StudyFetched, StudyRef
from shared.settings import BrokerSettings
from tests.conftest import Infrastructure
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RETRY_DELAYS = (0.1, 0.2)


@dataclass
class BusUnderTest:
    """A bus on its own exchanges and queues, with a raw aio-pika connection to inspect them."""

    bus: Bus
    connection: aio_pika.abc.AbstractRobustConnection
    received: list[Event] = field(default_factory=list)

    async def serve(self, handler: Handler[StudyDetected]) -> None:
        """Start the bus consuming study.detected with `handler`, its queues declared and bound."""
        self.bus.consume(StudyDetected, handler)
        await self.bus.start()
        await self.bus.declare([StudyDetected.event_type])

    async def messages_in(
        self, queue_name: str, expected: int, wait_seconds: float = 10.0
    ) -> list[aio_pika.abc.AbstractIncomingMessage]:
        """Wait until `expected` messages can be taken from `queue_name` (fails on timeout)."""
        channel = await self.connection.channel()
        queue = await channel.get_queue(queue_name, ensure=True)
        taken: list[aio_pika.abc.AbstractIncomingMessage] = []
        deadline = asyncio.get_running_loop().time() + wait_seconds
        while len(taken) < expected:
            message = await queue.get(no_ack=True, fail=False)
            if message is not None:
                taken.append(message)
                continue
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.05)
        await channel.close()
        return taken


@pytest.fixture
async def bus_under_test(infra: Infrastructure) -> AsyncIterator[BusUnderTest]:
    tag = uuid.uuid4().hex[:8]
    settings = BrokerSettings(
        url=infra.amqp_url,
        exchange=f"radmesh.test-{tag}",
        dead_letter_exchange=f"radmesh.test-{tag}.dead-letter",
        retry_delays_seconds=RETRY_DELAYS,
        prefetch_count=2,
    )
    bus = Bus(settings, service=f"test-{tag}")
    connection = await aio_pika.connect_robust(infra.amqp_url)
    under_test = BusUnderTest(bus=bus, connection=connection)
    yield under_test
    await bus.stop()
    channel = await connection.channel()
    queue_names = [
        bus.queues.queue,
        bus.queues.dead_letter_queue,
        *(bus.queues.retry_queue(delay) for delay in RETRY_DELAYS),
        f"{bus.queues.queue}.observer",
    ]
    for name in queue_names:
        await channel.queue_delete(name)
    for name in (settings.exchange, settings.dead_letter_exchange):
        await channel.exchange_delete(name)
    await connection.close()


def _study_detected() -> StudyDetected:
    return StudyDetected(
        study=StudyRef(study_instance_uid="1.2.826.0.1.3680043.10.1"),
        models=(ModelRef(id="ich-reference", version="1"),),
        source="manual",
    )


async def _observe(under_test: BusUnderTest, routing_key: str) -> str:
    """Bind a plain queue to the test exchange, to see what the bus publishes."""
    channel = await under_test.connection.channel()
    exchange = await channel.get_exchange(under_test.bus.settings.exchange)
    name = f"{under_test.bus.queues.queue}.observer"
    queue = await channel.declare_queue(name, durable=True)
    await queue.bind(exchange, routing_key=routing_key)
    await channel.close()
    return name


async def test_handled_event_publishes_caused_events_in_the_same_run(
    bus_under_test: BusUnderTest, span_exporter: InMemorySpanExporter
) -> None:
    """A consumed event reaches its handler; what the handler returns is published with the
    same correlation id, the consumed message as cause, and a W3C traceparent header."""
    under_test = bus_under_test
    bus = under_test.bus

    async def handler(event: StudyDetected) -> Sequence[Event]:
        under_test.received.append(event)
        return [
            event.follow(
                StudyFetched,
                study=event.study,
                model=event.models[0],
                series=(),
                fetch_duration_ms=1.0,
            )
        ]

    await under_test.serve(handler)
    observer = await _observe(under_test, StudyFetched.event_type)
    sent = _study_detected()
    await bus.publish(sent)

    published = await under_test.messages_in(observer, expected=1)
    assert [event.message_id for event in under_test.received] == [sent.message_id]
    assert len(published) == 1
    caused = StudyFetched.model_validate_json(published[0].body)
    assert caused.correlation_id == sent.correlation_id
    assert caused.causation_id == sent.message_id
    assert published[0].delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    consumer_spans = [
        span
        for span in span_exporter.get_finished_spans()
        if span.name == f"{bus.service} consume {StudyDetected.event_type}"
    ]
    assert len(consumer_spans) == 1
    trace_id = format(consumer_spans[0].context.trace_id, "032x")
    assert str((published[0].headers or {})["traceparent"]).split("-")[1] == trace_id


async def test_invalid_message_is_dead_lettered_with_the_reason(
    bus_under_test: BusUnderTest,
) -> None:
    """A body that fails validation never reaches the handler; it lands in the service's
    dead-letter queue, unchanged, with a reason naming the missing field."""
    under_test = bus_under_test
    bus = under_test.bus

    async def handler(event: StudyDetected) -> Sequence[Event]:
        under_test.received.append(event)
        return []

    await under_test.serve(handler)
    body = b'{"schema_version": 1, "source": "manual"}'
    await bus.broker.publish(
        body,
        exchange=bus.settings.exchange,
        routing_key=StudyDetected.event_type,
        content_type="application/json",
    )

    dead = await under_test.messages_in(bus.queues.dead_letter_queue, expected=1)
    assert len(dead) == 1
    assert dead[0].body == body
    headers = dead[0].headers or {}
    assert "study: Field required" in str(headers[REASON_HEADER])
    assert str(headers["x-radmesh-error-type"]).startswith("permanent:InvalidMessage")
    assert under_test.received == []


async def test_forged_attempt_header_and_bad_identifiers_are_dead_lettered_once(
    bus_under_test: BusUnderTest,
) -> None:
    """A message whose x-radmesh-attempt header is not a number, and study.detected messages
    whose study UID is `%00` or whose ImagingStudy reference is `../Patient`, never reach the
    handler: each is dead-lettered at once (not redelivered until the delivery limit), with a
    reason naming what is wrong."""
    under_test = bus_under_test
    bus = under_test.bus

    async def handler(event: StudyDetected) -> Sequence[Event]:
        under_test.received.append(event)
        return []

    await under_test.serve(handler)
    good = _study_detected()
    bad_uid = json.loads(good.to_json())
    bad_uid["study"]["study_instance_uid"] = "%00"
    bad_reference = json.loads(good.to_json())
    bad_reference["study"]["imaging_study"] = "../Patient"
    cases: list[tuple[bytes, dict[str, Any], str]] = [
        (good.to_json(), {ATTEMPT_HEADER: "abc"}, ATTEMPT_HEADER),
        (json.dumps(bad_uid).encode(), {}, "study.study_instance_uid"),
        (json.dumps(bad_reference).encode(), {}, "study.imaging_study"),
    ]
    for body, headers, _ in cases:
        await bus.broker.publish(
            body,
            exchange=bus.settings.exchange,
            routing_key=StudyDetected.event_type,
            headers=headers,
            content_type="application/json",
        )
    dead = await under_test.messages_in(bus.queues.dead_letter_queue, expected=len(cases))
    reasons = [str((message.headers or {})[REASON_HEADER]) for message in dead]
    assert len(dead) == len(cases), reasons
    for (_, _, named), reason in zip(cases, reasons, strict=True):
        assert named in reason, reason
    assert all((message.headers or {}).get("x-radmesh-attempts") == 1 for message in dead)
    assert under_test.received == []


async def test_transient_error_is_retried_with_backoff_until_it_succeeds(
    bus_under_test: BusUnderTest,
) -> None:
    """A handler failing with a transient error is called again through the delay queues and
    its success on the third attempt leaves nothing in the dead-letter queue."""
    under_test = bus_under_test
    bus = under_test.bus
    done = asyncio.Event()

    async def handler(event: StudyDetected) -> Sequence[Event]:
        under_test.received.append(event)
        if len(under_test.received) < 3:
            raise RemoteUnavailable("FHIR server down", url="http://127.0.0.1:1/fhir", status=503)
        done.set()
        return []

    await under_test.serve(handler)
    await bus.publish(_study_detected())

    await asyncio.wait_for(done.wait(), timeout=10)
    assert len(under_test.received) == 3
    assert (
        await under_test.messages_in(bus.queues.dead_letter_queue, expected=1, wait_seconds=0.5)
        == []
    )


async def test_transient_error_is_dead_lettered_when_the_delays_run_out(
    bus_under_test: BusUnderTest,
) -> None:
    """A handler that keeps failing transiently is tried once per delay plus once, then the
    message lands in the dead-letter queue saying it gave up and why."""
    under_test = bus_under_test
    bus = under_test.bus

    async def handler(event: StudyDetected) -> Sequence[Event]:
        under_test.received.append(event)
        raise RemoteUnavailable("FHIR server down", url="http://127.0.0.1:1/fhir", status=503)

    await under_test.serve(handler)
    await bus.publish(_study_detected())

    dead = await under_test.messages_in(bus.queues.dead_letter_queue, expected=1)
    assert len(dead) == 1
    headers = dead[0].headers or {}
    assert len(under_test.received) == len(RETRY_DELAYS) + 1
    assert str(headers[REASON_HEADER]).startswith("gave up after 3 attempts: FHIR server down")
    assert headers[ATTEMPT_HEADER] == len(RETRY_DELAYS)


async def test_permanent_error_is_dead_lettered_at_once(bus_under_test: BusUnderTest) -> None:
    """A permanent error (e.g. a 4xx the FHIR server will always give) is not retried."""
    under_test = bus_under_test
    bus = under_test.bus

    async def handler(event: StudyDetected) -> Sequence[Event]:
        under_test.received.append(event)
        raise PermanentError("ImagingStudy/42 is gone (410)")

    await under_test.serve(handler)
    await bus.publish(_study_detected())

    dead = await under_test.messages_in(bus.queues.dead_letter_queue, expected=1)
    assert len(dead) == 1
    assert (dead[0].headers or {})[REASON_HEADER] == "ImagingStudy/42 is gone (410)"
    assert len(under_test.received) == 1


async def test_dead_letter_is_listed_with_its_reason_and_replayed_to_its_service(
    bus_under_test: BusUnderTest,
) -> None:
    """`radmesh dlq list` shows a dead letter's reason without consuming it; `replay` sends it
    back to the same service's queue, where the (now fixed) handler processes it."""
    under_test = bus_under_test
    bus = under_test.bus
    broken = True

    async def handler(event: StudyDetected) -> Sequence[Event]:
        under_test.received.append(event)
        if broken:
            raise PermanentError("model ich-reference 9 is not in the registry")
        return []

    await under_test.serve(handler)
    sent = _study_detected()
    await bus.publish(sent)
    url = bus.settings.url

    letters: list[DeadLetter] = []
    for _ in range(100):
        letters = await list_dead_letters(url, bus.service)
        if letters:
            break
        await asyncio.sleep(0.05)
    assert [letter.message_id for letter in letters] == [str(sent.message_id)]
    assert letters[0].reason == "model ich-reference 9 is not in the registry"
    assert letters[0].routing_key == "study.detected"
    assert len(await list_dead_letters(url, bus.service)) == 1, "listing must not consume"

    broken = False
    assert await replay(url, bus.service) == 1
    for _ in range(100):
        if len(under_test.received) == 2:
            break
        await asyncio.sleep(0.05)
    assert [event.message_id for event in under_test.received] == [sent.message_id] * 2
    assert await list_dead_letters(url, bus.service) == []


def _restart_broker(down_seconds: float) -> None:
    """Stop the RabbitMQ application (its Erlang node stays), keep it down, start it again."""
    for action in ("stop_app", "start_app"):
        done = subprocess.run(
            ["rabbitmqctl", "-q", action], check=False, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"rabbitmqctl {action}: {done.stderr or done.stdout}"
        if action == "stop_app":
            time.sleep(down_seconds)
    subprocess.run(["rabbitmqctl", "-q", "await_startup"], check=True, timeout=120)


def _require_a_broker_to_restart_with_quick_dead_letter_retries() -> None:
    """Skip unless radmesh started this RabbitMQ (no restart of someone else's broker); fail
    unless it was started with deploy/rabbitmq/advanced.config (a failed dead-letter move is
    tried again after 5 s), saying how to start it."""
    marker = Path(os.environ.get("RADMESH_RUN_DIR", ROOT / ".run")) / "rabbitmq/started-by-radmesh"
    if not marker.exists():
        pytest.skip(
            "RabbitMQ here is not one radmesh started (no restart of someone else's broker)"
        )
    timeout = subprocess.run(
        [
            "rabbitmqctl",
            "-q",
            "eval",
            "application:get_env(rabbit, dead_letter_worker_publisher_confirm_timeout).",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    assert timeout == "{ok,5000}", (
        f"the broker's dead-letter worker retries after {timeout} ms: start it with "
        "deploy/rabbitmq/advanced.config (deploy/rabbitmq/up.sh does)"
    )


async def _declare_quorum_queues(amqp_url: str, names: Sequence[str]) -> None:
    connection = await aio_pika.connect_robust(amqp_url)
    channel = await connection.channel()
    for name in names:
        await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
    await connection.close()


async def test_messages_waiting_for_their_retry_survive_a_broker_restart(
    infra: Infrastructure,
) -> None:
    """Messages in their delay queue when RabbitMQ stops, whose delay runs out while it is down,
    all come back to their service once it is up again, within seconds: the delay queues are
    quorum queues that dead-letter at-least-once (classic TTL queues dropped such messages at
    boot), and the broker retries a move that failed during boot after 5 s, not 180 s
    (deploy/rabbitmq/advanced.config). Bystander quorum queues make the node's boot as slow
    as a long-used broker's, where the service queue elects its leader after the delays ran
    out (on a bare node the race is won by luck)."""
    await asyncio.to_thread(_require_a_broker_to_restart_with_quick_dead_letter_retries)
    tag = uuid.uuid4().hex[:8]
    bystanders = [f"radmesh.test-{tag}.bystander.{number}" for number in range(200)]
    delay = 2.0
    settings = BrokerSettings(
        url=infra.amqp_url,
        exchange=f"radmesh.test-{tag}",
        dead_letter_exchange=f"radmesh.test-{tag}.dead-letter",
        retry_delays_seconds=(delay,),
    )
    service = f"test-{tag}"
    sent = [_study_detected() for _ in range(20)]
    failed: set[uuid.UUID] = set()

    async def fail_once(event: StudyDetected) -> Sequence[Event]:
        failed.add(event.message_id)
        raise RemoteUnavailable(
            "the FHIR server is down", url="http://127.0.0.1:9/fhir", status=503
        )

    first = Bus(settings, service=service)
    first.consume(StudyDetected, fail_once)
    await first.start()
    await first.declare([StudyDetected.event_type])
    handled: set[uuid.UUID] = set()
    second: Bus | None = None
    try:
        await _declare_quorum_queues(infra.amqp_url, bystanders)
        for event in sent:
            await first.publish(event)
        for _ in range(200):
            if len(failed) == len(sent):
                break
            await asyncio.sleep(0.05)
        assert len(failed) == len(sent), "not every first delivery reached the handler"
        await first.stop()  # stops consuming at once: the retries sit in the delay queue
        waiting = {
            status.queue: status
            for status in await queue_status(infra.amqp_url, (service,), (delay,))
        }[first.queues.retry_queue(delay)]
        # as `radmesh status` shows it: how many wait, and how long the oldest has
        assert waiting.messages == len(sent) and 0 <= (waiting.oldest_seconds or -1) < 60, waiting
        await asyncio.to_thread(_restart_broker, 2.5 * delay)  # the delay runs out while down

        async def succeed(event: StudyDetected) -> Sequence[Event]:
            handled.add(event.message_id)
            return []

        second = Bus(settings, service=service)
        second.consume(StudyDetected, succeed)
        await second.start()
        # Leaders elected, expired retries moved (a failed move tried again after 5 s): 30 s.
        for _ in range(600):
            if len(handled) == len(sent):
                break
            await asyncio.sleep(0.05)
    finally:
        if second is not None:
            # a stop after the restart once waited for ever on the queue-depth watch
            async with asyncio.timeout(30):
                await second.stop()
        connection = await aio_pika.connect_robust(infra.amqp_url)
        channel = await connection.channel()
        queues = first.queues
        for name in (
            queues.queue,
            queues.dead_letter_queue,
            queues.retry_queue(delay),
            *bystanders,
        ):
            await channel.queue_delete(name)
        for name in (settings.exchange, settings.dead_letter_exchange):
            await channel.exchange_delete(name)
        await connection.close()
    lost = len(sent) - len(handled)
    assert lost == 0, (
        f"{lost} of {len(sent)} messages waiting for their retry were lost in the restart"
    )


async def test_publish_while_the_broker_is_unreachable_is_a_transient_error(
    infra: Infrastructure,
) -> None:
    """With the broker cut off (a TCP proxy between the bus and RabbitMQ taken down) a publish
    raises BrokerUnavailable, a TransientError (a hook answers 503 and is retried, a consumer
    retries its message), never a bug; once the broker is reachable again publishing works."""
    proxy = TcpProxy(int(infra.amqp_url.rsplit(":", 1)[1].strip("/")))
    await proxy.up()
    tag = uuid.uuid4().hex[:8]
    settings = BrokerSettings(
        url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/",
        exchange=f"radmesh.test-{tag}",
        publish_timeout_seconds=3,
    )
    bus = Bus(settings, service=f"test-{tag}")
    await bus.start()
    await bus.declare([])
    errors: list[BaseException] = []
    try:
        await bus.publish(_study_detected())
        await proxy.down()
        for _ in range(2):  # the lost connection, then the closed channel
            with pytest.raises(BrokerUnavailable) as raised:
                await bus.publish(_study_detected())
            errors.append(raised.value)
        await proxy.up()
        deadline = asyncio.get_running_loop().time() + 30
        while True:  # the robust connection comes back by itself
            try:
                await bus.publish(_study_detected())
                break
            except BrokerUnavailable:
                assert asyncio.get_running_loop().time() < deadline, "never reconnected"
                await asyncio.sleep(0.2)
    finally:
        await bus.stop()
        await proxy.down()
        connection = await aio_pika.connect_robust(infra.amqp_url)
        channel = await connection.channel()
        await channel.exchange_delete(settings.exchange)
        await connection.close()
    assert all(isinstance(error, TransientError) for error in errors)
    assert "study.detected not published" in str(errors[0])


async def test_a_service_consuming_two_event_types_hands_each_to_its_own_handler(
    bus_under_test: BusUnderTest,
) -> None:
    """One queue, two event types: 10 of each, interleaved, each reach the handler of their
    type and no other (also after a retry through the delay queue, which keeps the type);
    none is dead-lettered."""
    under_test = bus_under_test
    bus = under_test.bus
    detected: list[StudyDetected] = []
    fetched: list[StudyFetched] = []
    failed_once: set[uuid.UUID] = set()
    all_handled = asyncio.Event()

    def check() -> None:
        if len(detected) >= 10 and len(fetched) >= 10:
            all_handled.set()

    async def on_detected(event: StudyDetected) -> Sequence[Event]:
        detected.append(event)
        check()
        return []

    async def on_fetched(event: StudyFetched) -> Sequence[Event]:
        if event.message_id not in failed_once:
            failed_once.add(event.message_id)
            raise TransientError("first try fails")
        fetched.append(event)
        check()
        return []

    bus.consume(StudyDetected, on_detected)
    bus.consume(StudyFetched, on_fetched)
    await bus.start()
    await bus.declare()
    sent_fetched = []
    for _ in range(10):
        first = _study_detected()
        await bus.publish(first)
        second = first.follow(
            StudyFetched, study=first.study, model=first.models[0], series=(), fetch_duration_ms=1
        )
        sent_fetched.append(second.message_id)
        await bus.publish(second)

    async with asyncio.timeout(15):
        await all_handled.wait()
    assert all(isinstance(event, StudyDetected) for event in detected) and len(detected) == 10
    assert sorted(event.message_id for event in fetched) == sorted(sent_fetched)
    assert await under_test.messages_in(bus.queues.dead_letter_queue, 1, wait_seconds=0.5) == []


async def test_a_stop_waits_for_the_message_in_hand_and_takes_no_new_one(
    bus_under_test: BusUnderTest,
) -> None:
    """SIGTERM's path (`Bus.stop`) while a handler is busy: the handler finishes and its message
    is acknowledged (a new consumer gets nothing twice), and the messages still queued stay in
    the queue for the next consumer, none taken by the stopping one."""
    under_test = bus_under_test
    bus = under_test.bus
    busy = asyncio.Event()
    release = asyncio.Event()
    handled: list[uuid.UUID] = []

    async def slow(event: StudyDetected) -> Sequence[Event]:
        busy.set()
        await release.wait()  # the work in hand when the stop comes
        handled.append(event.message_id)
        return []

    await under_test.serve(slow)
    sent = [_study_detected() for _ in range(5)]
    for event in sent:
        await bus.publish(event)
    async with asyncio.timeout(10):
        await busy.wait()
    stopping = asyncio.create_task(bus.stop())
    await asyncio.sleep(0.3)  # the stop has begun: it must be waiting for the handler
    assert not stopping.done()
    release.set()
    async with asyncio.timeout(bus.settings.graceful_stop_seconds):
        await stopping
    in_hand = len(handled)
    assert 1 <= in_hand <= bus.settings.prefetch_count
    left = await under_test.messages_in(bus.queues.queue, expected=len(sent), wait_seconds=3)
    left_ids = {StudyDetected.model_validate_json(message.body).message_id for message in left}
    assert left_ids.isdisjoint(handled)
    assert left_ids | set(handled) == {event.message_id for event in sent}
