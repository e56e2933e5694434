"""Hostile messages for a service's queue, publishing them, and reading what became of each.

A case is one AMQP message: a body (random bytes, any JSON, hostile JSON text, a valid event
truncated or mutated in one place), its type (the service's, another service's, garbage) and
headers (a garbage `x-radmesh-attempt`, junk trace context, random names and values). It
knows what it may come to: dead-lettered with a reason naming what was wrong (`expect`), or —
when its body is still a valid event — handled.

Service queue names are global (`radmesh.<service>`, shared/bus.py): every test instance of a
service is built with a service name of its own (`fuzz-<tag>-<service>`, each app's
`build_app(..., service)`), on an exchange and dead-letter exchange of its own, so nothing
here touches another run's queues.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import aio_pika
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from shared.bus import ATTEMPT_HEADER, REASON_HEADER, ServiceQueues
from shared.errors import InvalidMessage
from shared.messages import EVENT_TYPES, parse_event
from shared.settings import BrokerSettings
from tests.fuzz.hostile import dumps, hostile_bodies
from tests.fuzz.hostile_requests import mutation_expectations
from tests.fuzz.mutations import Mutation, mutations

__all__ = [
    "DeadLetterWatch",
    "Message",
    "delete_topology",
    "finished",
    "hostile_messages",
    "outcome_problems",
    "publish_all",
    "settled",
    "wait_until_finished",
]

ATTEMPT_VALUES: tuple[Any, ...] = (
    "abc",
    "",
    " ",
    "-1",
    -1,
    10_001,
    2**40,
    1.5,
    "1.5",
    "1e3",
    True,
    None,
    bytearray(b"x"),  # AMQP byte arrays
    bytearray(),
    [1],
    {"attempt": 1},
    Decimal("1.5"),
    "²",  # str.isdigit() holds for it, int() refuses it
    "①",
    "٣",
    "9" * 5000,  # more digits than int() reads
    "0x10",
)
_HEADER_TEXT = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=60
)
header_values: st.SearchStrategy[Any] = st.one_of(
    _HEADER_TEXT,
    st.binary(max_size=40).map(bytearray),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    # what pamqp writes (AMQP `f`); RabbitMQ 3.10 closes the connection of a publisher sending a
    # NaN or Infinity header (Erlang has no such floats), so no queue ever holds one
    st.floats(width=32, allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.lists(st.integers(min_value=-(2**31), max_value=2**31 - 1), max_size=3),
    st.dictionaries(st.text("abc", max_size=5), st.integers(0, 9), max_size=2),
)
# Headers radmesh reads or passes on. Not `x-death`: RabbitMQ owns it, and one that is not its
# array of tables, dead-lettered by a quorum queue, crashes RabbitMQ 3.10's dead-letter worker
# until its supervisor gives up — on the broker every developer's tests share. The bus no
# longer carries it into its delay queues (shared.bus.without_broker_headers, unit-tested).
_TRACE_HEADERS = ("traceparent", "tracestate", "x-radmesh-schema-version")


@dataclass(frozen=True)
class Message:
    """One hostile message, and what it may come to."""

    label: str
    body: bytes
    type: str | None
    headers: Mapping[str, Any] = field(default_factory=dict)
    expect: tuple[str, ...] = ()  # its dead-letter reason names one of these
    may_be_handled: bool = False  # the body is a valid event: handling it is no failure
    message_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def __repr__(self) -> str:
        return (
            f"<{self.label}: type={self.type!r} headers={dict(self.headers)!r:.200} "
            f"body={self.body[:200]!r}{'...' if len(self.body) > 200 else ''}>"
        )


def _validates(event_type: str, body: bytes) -> bool:
    try:
        parse_event(EVENT_TYPES[event_type], body)
    except InvalidMessage:
        return False
    return True


def _mutated(event_type: str, mutation: Mutation) -> Message:
    valid = _validates(event_type, mutation.body)
    expect = (*mutation_expectations(mutation, fhir=False), "Invalid JSON")
    return Message(
        f"{event_type} mutation:{mutation.kind}",
        mutation.body,
        event_type,
        expect=() if valid else expect,
        may_be_handled=valid,
    )


# So many of each kind, of the 1,000 messages a service gets (split among the event types it
# consumes); valid events that are handled do real work (a fetch, a FHIR transaction), so the
# junk headers ride on a valid event one time in eight only.
MIX = {"mutated": 400, "whole": 250, "attempt": 100, "junk": 150, "wrong-type": 100}


def _kinds(event_type: str, base: dict[str, Any]) -> dict[str, st.SearchStrategy[Message]]:
    """The hostile messages of one event type, by kind (see MIX)."""
    valid = dumps(base)
    # every event names its study: without it, it is refused as soon as it is read
    invalid = dumps({name: value for name, value in base.items() if name != "study"})

    def mutated(mutation: Mutation) -> Message:
        return _mutated(event_type, mutation)

    def whole(case: tuple[str, bytes]) -> Message:
        valid_event = _validates(event_type, case[1])
        return Message(
            f"{event_type} body:{case[0]}",
            case[1],
            event_type,
            expect=() if valid_event else ("message is invalid",),
            may_be_handled=valid_event,
        )

    def attempt(value: Any) -> Message:
        return Message(
            f"{event_type} attempt-header",
            valid,
            event_type,
            {ATTEMPT_HEADER: value},
            expect=(ATTEMPT_HEADER,),
        )

    def junk(case: tuple[dict[str, Any], int]) -> Message:
        # on the valid event (handled regardless) one time in eight, else on one that is
        # refused (the junk goes into the dead-letter queue with it)
        on_valid = case[1] == 0
        return Message(
            f"{event_type} junk-headers",
            valid if on_valid else invalid,
            event_type,
            case[0],
            expect=() if on_valid else ("study",),
            may_be_handled=on_valid,
        )

    headers = st.dictionaries(
        st.one_of(st.sampled_from(_TRACE_HEADERS), st.text("abcxyz-", min_size=1, max_size=20)),
        header_values,
        min_size=1,
        max_size=4,
    )
    return {
        "mutated": mutations(base).map(mutated),
        "whole": hostile_bodies(base).map(whole),
        "attempt": st.one_of(st.sampled_from(ATTEMPT_VALUES), header_values).map(attempt),
        "junk": st.tuples(headers, st.integers(0, 7)).map(junk),
    }


def hostile_messages(
    bases: Mapping[str, dict[str, Any]], other_types: Sequence[str]
) -> list[tuple[st.SearchStrategy[Message], int]]:
    """Hostile messages for a service that consumes the event types of `bases` (a valid event
    of each, as JSON), with how many of each to draw (`MIX`): bodies mutated from a base or
    hostile as a whole, a base under a garbage attempt header or junk headers, a base labelled
    as a type the service does not consume."""
    parts: list[tuple[st.SearchStrategy[Message], int]] = []
    for event_type, base in bases.items():
        for kind, strategy in _kinds(event_type, base).items():
            parts.append((strategy, -(-MIX[kind] // len(bases))))  # rounded up: 1,000 at least
    some_base = dumps(next(iter(bases.values())))

    def wrong(event_type: str) -> Message:
        return Message("wrong-type", some_base, event_type, expect=("does not consume",))

    # Hypothesis also draws text from the literals of the code under test: a consumed type is
    # one of them, and is no wrong type.
    wrong_type = (
        st.one_of(
            st.sampled_from(tuple(other_types)),
            st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40),
        )
        .filter(lambda event_type: event_type not in bases)
        .map(wrong)
    )
    parts.append((wrong_type, MIX["wrong-type"]))
    return parts


def _attempt_header_is_whole_number(value: Any) -> bool:
    """Whether a case's attempt header is one the bus takes (then the valid body is handled)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return 0 <= value <= 10_000
    if isinstance(value, str | bytes | bytearray):
        text = value if isinstance(value, str) else bytes(value).decode(errors="replace")
        stripped = text.strip()
        return (
            0 < len(stripped) <= 5
            and stripped.isascii()
            and stripped.isdigit()
            and int(stripped) <= 10_000
        )
    return False


def settled(message: Message) -> Message:
    """An attempt-header case whose header is a valid count is a valid message: handled."""
    if message.label.endswith("attempt-header") and _attempt_header_is_whole_number(
        message.headers[ATTEMPT_HEADER]
    ):
        return Message(
            message.label, message.body, message.type, message.headers, (), True, message.message_id
        )
    return message


async def publish_all(
    connection: aio_pika.abc.AbstractConnection, queue: str, messages: Iterable[Message]
) -> None:
    """Publish each message straight to the service's queue (the default exchange), confirmed,
    with its own message id."""
    channel = await connection.channel(publisher_confirms=True)
    try:
        for message in messages:
            await channel.default_exchange.publish(
                aio_pika.Message(
                    body=message.body,
                    headers=dict(message.headers),
                    content_type="application/json",
                    message_id=message.message_id,
                    correlation_id=str(uuid.uuid4()),
                    type=message.type,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=queue,
            )
    finally:
        await channel.close()


@dataclass
class DeadLetterWatch:
    """A queue of our own bound beside the service's dead-letter queue: a copy of every dead
    letter, by message id (the dead-letter queue itself keeps them, for `radmesh dlq list`)."""

    letters: dict[str, dict[str, Any]] = field(default_factory=dict)
    _queue: aio_pika.abc.AbstractQueue | None = None

    async def holds(self, count: float, seconds: float = 10) -> bool:
        """Whether the copies of `count` dead letters arrive within `seconds`."""
        deadline = asyncio.get_running_loop().time() + seconds
        while len(self.letters) < count:
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def start(
        self, connection: aio_pika.abc.AbstractConnection, broker: BrokerSettings, service: str
    ) -> None:
        channel = await connection.channel()
        exchange = await channel.get_exchange(broker.dead_letter_exchange)
        self._queue = await channel.declare_queue(exclusive=True)
        await self._queue.bind(exchange, routing_key=ServiceQueues(service).dead_letter_queue)

        async def keep(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                self.letters[str(message.message_id)] = dict(message.headers or {})

        await self._queue.consume(keep)


def finished(service: str, outcomes: tuple[str, ...] = ("handled", "dead_lettered")) -> float:
    """Messages the service's bus is done with, by its counters (every event type): handled or
    dead-lettered, or the `outcomes` given."""
    total = 0.0
    for metric in REGISTRY.collect():
        if metric.name != "radmesh_messages":
            continue
        for sample in metric.samples:
            labels = sample.labels
            if (
                sample.name == "radmesh_messages_total"
                and labels.get("service") == service
                and labels.get("outcome") in outcomes
            ):
                total += sample.value
    return total


async def wait_until_finished(service: str, target: float, seconds: float) -> bool:
    """Whether the service is done with `target` messages in all within `seconds`."""
    deadline = asyncio.get_running_loop().time() + seconds
    while finished(service) < target:
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def outcome_problems(
    messages: Sequence[Message], letters: Mapping[str, dict[str, Any]]
) -> list[str]:
    """What is wrong with what became of each message (empty: nothing): a dead letter without a
    reason, dead-lettered as a bug, by the broker (its consumer crashed on it until the delivery
    limit), or whose reason names none of what its case expects; a message the service handled
    although its body is no valid event."""
    found = []
    for message in messages:
        headers = letters.get(message.message_id)
        if headers is None:
            if not message.may_be_handled:
                found.append(f"not dead-lettered: {message!r}")
            continue
        reason = str(headers.get(REASON_HEADER, ""))
        error_type = str(headers.get("x-radmesh-error-type", ""))
        if not reason:
            death = headers.get("x-first-death-reason")
            found.append(f"dead-lettered without a reason (broker: {death!r}): {message!r}")
        elif error_type.startswith("bug:"):
            found.append(f"dead-lettered as a bug, {error_type}: {reason[:300]!r}: {message!r}")
        elif message.expect and not any(part in reason for part in message.expect):
            found.append(f"reason {reason[:300]!r} names none of {message.expect}: {message!r}")
    return found


async def delete_topology(
    amqp_url: str,
    services: Iterable[str],
    broker: BrokerSettings,
    timer_delays_seconds: Iterable[float] = (),
) -> None:
    """Delete the services' queues (their own, dead-letter, delay and timer queues) and the
    exchanges of `broker`."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        for service in services:
            queues = ServiceQueues(service)
            delays = {*broker.retry_delays_seconds, *timer_delays_seconds}
            for name in (
                queues.queue,
                queues.dead_letter_queue,
                *(queues.retry_queue(delay) for delay in delays),
            ):
                await channel.queue_delete(name)
        for name in (broker.exchange, broker.dead_letter_exchange):
            await channel.exchange_delete(name)
    finally:
        await connection.close()
