"""RabbitMQ topology, publishing and consuming with radmesh's retry and dead-letter policy.

Topology (declared by every service for its own queue, idempotently):

    exchange  radmesh                 topic, durable: routing key = event type (`study.detected`, …)
    queue     radmesh.<service>       quorum, bound to the event types the service consumes;
                                      x-delivery-limit → the broker dead-letters a message that
                                      keeps crashing its consumers
    exchange  radmesh.dead-letter     direct, durable
    queue     radmesh.<service>.dead-letter     what the service gave up on, with the reason
    queues    radmesh.<service>.delay.<ms>ms    one delay queue per backoff step, quorum: TTL, then
                                      the default exchange routes the message back to
                                      radmesh.<service>, dead-lettered at-least-once (a broker
                                      restart while a message waits loses nothing; classic
                                      queues dead-letter at-most-once and did lose messages)

A handler takes the validated event and returns the events it causes; they are published (with
publisher confirms) before the incoming message is acknowledged, so at-least-once holds end to
end. What a handler raises decides the message's fate (see `shared.errors`): a transient error
goes to the next delay queue until the delays run out, then to the dead-letter queue; a permanent
error or a bug goes to the dead-letter queue at once. Dead letters carry these headers:
`x-radmesh-dead-letter-reason`, `x-radmesh-error-type`, `x-radmesh-attempts`,
`x-radmesh-routing-key`, `x-radmesh-service`, `x-radmesh-dead-lettered-at`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiohttp
import structlog
from faststream import AckPolicy
from faststream.rabbit import ExchangeType, RabbitBroker, RabbitExchange, RabbitQueue
from faststream.rabbit.annotations import RabbitMessage
from faststream.rabbit.schemas import Channel, QueueType
from opentelemetry import trace

from shared.errors import BrokerUnavailable, InvalidMessage, PermanentError, TransientError
from shared.messages import Event, EventT, parse_event
from shared.metrics import (
    DEAD_LETTERS,
    MESSAGE_SECONDS,
    MESSAGES,
    MESSAGES_PUBLISHED,
    QUEUE_DEPTH,
)
from shared.settings import BrokerSettings
from shared.telemetry import bind_message_context, extract_trace_context, inject_trace_context

__all__ = [
    "ATTEMPT_HEADER",
    "REASON_HEADER",
    "Bus",
    "Handler",
    "ServiceQueues",
    "classify_error",
    "header_count",
    "without_broker_headers",
]

ATTEMPT_HEADER = "x-radmesh-attempt"
REASON_HEADER = "x-radmesh-dead-letter-reason"
# When a message was put in a delay queue or the dead-letter queue (ISO 8601, UTC): the age
# `radmesh status` shows for the oldest message waiting there.
WAITING_SINCE_HEADER = "x-radmesh-waiting-since"
_TRANSIENT_LIBRARY_ERRORS = (
    TimeoutError,
    ConnectionError,
    aiohttp.ClientConnectionError,
    aiohttp.ServerTimeoutError,
)

Handler = Callable[[EventT], Awaitable[Sequence[Event]]]
log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ServiceQueues:
    """The names of one service's queues (`<prefix>.<service>…`; BrokerSettings.queue_prefix)."""

    service: str
    prefix: str = "radmesh"

    @property
    def queue(self) -> str:
        return f"{self.prefix}.{self.service}"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.prefix}.{self.service}.dead-letter"

    def retry_queue(self, delay_seconds: float) -> str:
        # `.delay.`, not the earlier `.retry.`: those were classic queues, and RabbitMQ refuses to
        # redeclare a queue with other arguments; what is left in an old one still drains back.
        return f"{self.prefix}.{self.service}.delay.{round(delay_seconds * 1000)}ms"


_MAX_ATTEMPTS_HEADER = 10_000
_MAX_ATTEMPTS_DIGITS = len(str(_MAX_ATTEMPTS_HEADER))


def header_count(value: Any) -> int | None:
    """A count radmesh keeps in a header (attempts): a whole number 0–10,000, else None (a
    header that was tampered with or corrupted)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, str | bytes):
        digits = value.strip()
        # ASCII digits only: str.isdigit() also holds for "²" and "٣", which int() refuses or
        # reads; and no more of them than the largest count has (int() refuses 4301 digits)
        if not (digits.isascii() and digits.isdigit()) or len(digits) > _MAX_ATTEMPTS_DIGITS:
            return None
        number = int(digits)
    else:
        return None
    return number if 0 <= number <= _MAX_ATTEMPTS_HEADER else None


# Headers the broker owns: RabbitMQ writes them when it dead-letters a message (a delay queue's
# expiry sends it back) and reads them again the next time. A publisher's own `x-death` that is
# not RabbitMQ's array of tables, carried into a delay queue, made RabbitMQ 3.10's
# dead-lettering there crash (rabbit_dead_letter function_clause): the message stayed in the
# delay queue and the broker closed connections with INTERNAL_ERROR. The attempts are counted
# in radmesh's own header; the broker writes its own history afresh.
_BROKER_PREFIXES = ("x-first-death-", "x-last-death-")


def without_broker_headers(headers: dict[str, Any]) -> dict[str, Any]:
    """`headers` less the broker's dead-letter history (what a retry publishes)."""
    return {
        name: value
        for name, value in headers.items()
        if name != "x-death" and not name.startswith(_BROKER_PREFIXES)
    }


def classify_error(error: BaseException) -> str:
    """`transient` (retry with backoff), `permanent` (dead letter now) or `bug` (dead letter now)."""
    if isinstance(error, (TransientError, *_TRANSIENT_LIBRARY_ERRORS)):
        return "transient"
    if isinstance(error, PermanentError):
        return "permanent"
    return "bug"


class Bus:
    """One service's connection to the radmesh exchange: declare, publish, consume."""

    def __init__(
        self,
        settings: BrokerSettings,
        service: str,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        self.settings = settings
        self.service = service
        self.queues = ServiceQueues(service, settings.queue_prefix)
        self.broker = RabbitBroker(
            settings.url,
            default_channel=Channel(prefetch_count=settings.prefetch_count),
            graceful_timeout=settings.graceful_stop_seconds,
            logger=None,
        )
        self._tracer = trace.get_tracer("radmesh.bus", tracer_provider=tracer_provider)
        self._exchange = RabbitExchange(settings.exchange, type=ExchangeType.TOPIC, durable=True)
        self._dead_letter_exchange = RabbitExchange(
            settings.dead_letter_exchange, type=ExchangeType.DIRECT, durable=True
        )
        self.consumed: list[str] = []  # the event types registered with `consume`
        # event type → (its class, its handler): one queue per service, one consumer on it that
        # dispatches each message by its type (a queue shared by several subscribers would hand
        # each message to whichever is next, whatever its type).
        self._handlers: dict[str, tuple[type[Event], Handler[Any]]] = {}
        self._depth_watch: asyncio.Task[None] | None = None
        self._watch_stopping = asyncio.Event()

    # -- topology ---------------------------------------------------------------------------

    def _service_queue(self, routing_key: str = "") -> RabbitQueue:
        return RabbitQueue(
            self.queues.queue,
            queue_type=QueueType.QUORUM,
            durable=True,
            routing_key=routing_key,
            arguments={
                "x-delivery-limit": self.settings.delivery_limit,
                "x-dead-letter-exchange": self.settings.dead_letter_exchange,
                "x-dead-letter-routing-key": self.queues.dead_letter_queue,
            },
        )

    async def declare(self, routing_keys: Sequence[str] | None = None) -> None:
        """Declare the exchanges, this service's queue bound to `routing_keys`, its DLQ and delays."""
        if routing_keys is None:
            routing_keys = self.consumed
        exchange = await self.broker.declare_exchange(self._exchange)
        if not routing_keys:  # a publisher only (the subscriber): no queue of its own
            return
        dead_letter_exchange = await self.broker.declare_exchange(self._dead_letter_exchange)
        queue = await self.broker.declare_queue(self._service_queue())
        for routing_key in routing_keys:
            await queue.bind(exchange, routing_key=routing_key)
        dead_letter_queue = await self.broker.declare_queue(
            RabbitQueue(self.queues.dead_letter_queue, queue_type=QueueType.QUORUM, durable=True)
        )
        await dead_letter_queue.bind(
            dead_letter_exchange, routing_key=self.queues.dead_letter_queue
        )
        for delay in self.settings.retry_delays_seconds:
            await self._declare_delay_queue(delay)

    async def _declare_delay_queue(self, delay_seconds: float) -> str:
        """The quorum queue holding messages `delay_seconds` before they go back to this
        service's queue (retries, and timers such as an alert's escalation)."""
        name = self.queues.retry_queue(delay_seconds)
        await self.broker.declare_queue(
            RabbitQueue(
                name,
                queue_type=QueueType.QUORUM,
                durable=True,
                arguments={
                    "x-message-ttl": round(delay_seconds * 1000),
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": self.queues.queue,
                    # at-least-once dead-lettering needs reject-publish overflow (RabbitMQ
                    # 3.10+): the message leaves the delay queue only once its own queue
                    # has confirmed it
                    "x-dead-letter-strategy": "at-least-once",
                    "x-overflow": "reject-publish",
                },
            )
        )
        return name

    # -- publishing -------------------------------------------------------------------------

    async def publish(self, event: Event) -> None:
        """Publish an event (persistent, confirmed) with the current trace context in its headers."""
        await self._send(
            event, exchange=self._exchange, routing_key=event.event_type, verb="published"
        )

    async def publish_delayed(self, event: Event, delay_seconds: float) -> None:
        """A durable timer: `event` reaches this service's own handler of its type after
        `delay_seconds` (a delay queue on the broker: it survives restarts of the service and of
        the broker). Timers should come in a few fixed delays (one queue each)."""
        queue = await self._declare_delay_queue(delay_seconds)
        await self._send(event, exchange=None, routing_key=queue, verb="scheduled")

    async def _send(
        self, event: Event, *, exchange: RabbitExchange | None, routing_key: str, verb: str
    ) -> None:
        headers = inject_trace_context({"x-radmesh-schema-version": event.schema_version})
        try:
            async with asyncio.timeout(self.settings.publish_timeout_seconds):
                await self.broker.publish(
                    event.to_json(),
                    exchange=exchange,
                    routing_key=routing_key,
                    persist=True,
                    headers=headers,
                    content_type="application/json",
                    message_id=str(event.message_id),
                    correlation_id=str(event.correlation_id),
                    message_type=event.event_type,
                    timestamp=event.created_at,
                )
            MESSAGES_PUBLISHED.labels(self.service, event.event_type).inc()
        except (
            aio_pika.exceptions.AMQPError,  # connection lost, channel closed, nack
            aio_pika.exceptions.ChannelInvalidStateError,  # the channel is being re-opened
            aio_pika.exceptions.AMQPException,
            ConnectionError,
            TimeoutError,
        ) as error:
            # The robust connection re-establishes itself (every few seconds); until then a
            # publish fails, and the caller retries rather than treating it as a bug.
            raise BrokerUnavailable(
                f"{event.event_type} not {verb}, the broker is unavailable: "
                f"{type(error).__name__}: {str(error)[:200]}"
            ) from error

    # -- consuming --------------------------------------------------------------------------

    def consume(self, event_class: type[EventT], handler: Handler[EventT]) -> None:
        """Register `handler` for `event_class` on this service's queue (before `start`)."""
        if event_class.event_type in self._handlers:
            raise ValueError(f"{self.service} already consumes {event_class.event_type}")
        self.consumed.append(event_class.event_type)
        self._handlers[event_class.event_type] = (event_class, handler)
        if len(self._handlers) > 1:
            return

        async def on_message(message: RabbitMessage) -> None:
            raw = message.raw_message
            try:
                await self._dispatch(raw)
            except Exception:
                # Retry/dead-letter publishing itself failed (broker trouble): give the message back
                # to the queue; the quorum queue's delivery limit stops an endless loop.
                log.exception("message_requeued", reason="could not publish its outcome")
                await message.nack(requeue=True)
            else:
                await message.ack()

        self.broker.subscriber(
            self._service_queue(event_class.event_type),
            self._exchange,
            ack_policy=AckPolicy.MANUAL,
            decoder=_raw_body,
            no_reply=True,
        )(on_message)

    async def _dispatch(self, raw: aio_pika.abc.AbstractIncomingMessage) -> None:
        """Hand the message to the handler of its type (the AMQP `type` property, which retries
        keep; the routing key of a first delivery otherwise); a type this service does not
        consume is dead-lettered saying so."""
        event_type = raw.type or raw.routing_key or ""
        registered = self._handlers.get(event_type)
        if registered is None:
            headers = dict(raw.headers or {})
            error = InvalidMessage(
                f"{self.service} does not consume {event_type!r} messages "
                f"(it consumes {sorted(self._handlers)})"
            )
            await self._route_failure(raw, headers, 0, error)
            return
        event_class, handler = registered
        await self._handle(event_class, handler, raw)

    async def _handle(
        self,
        event_class: type[EventT],
        handler: Handler[EventT],
        raw: aio_pika.abc.AbstractIncomingMessage,
    ) -> None:
        headers = dict(raw.headers or {})
        attempt = header_count(headers.get(ATTEMPT_HEADER, 0))
        bind_message_context(service=self.service, correlation_id=raw.correlation_id)
        with self._tracer.start_as_current_span(
            f"{self.service} consume {raw.routing_key}",
            context=extract_trace_context(headers),
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "rabbitmq",
                "messaging.destination.name": raw.routing_key or "",
                "messaging.message.id": raw.message_id or "",
                "messaging.message.conversation_id": raw.correlation_id or "",
            },
        ) as span:
            started = asyncio.get_running_loop().time()
            try:
                if attempt is None:
                    raise InvalidMessage(
                        f"{ATTEMPT_HEADER} header is not a whole number from 0 to "
                        f"{_MAX_ATTEMPTS_HEADER}: {str(headers.get(ATTEMPT_HEADER))[:40]!r}"
                    )
                event = parse_event(event_class, raw.body)
                study = getattr(event, "study", None)
                if study is not None:
                    structlog.contextvars.bind_contextvars(
                        study_instance_uid=study.study_instance_uid
                    )
                caused = await handler(event)
                for next_event in caused:
                    await self.publish(next_event)
            except Exception as error:  # every outcome is routed below; nothing is dropped
                span.record_exception(error)
                await self._route_failure(raw, headers, attempt or 0, error)
                return
            duration = asyncio.get_running_loop().time() - started
            MESSAGES.labels(self.service, event_class.event_type, "handled").inc()
            MESSAGE_SECONDS.labels(self.service, event_class.event_type).observe(duration)
            log.info(
                "message_handled",
                event_type=event_class.event_type,
                published=[next_event.event_type for next_event in caused],
                duration_ms=round(duration * 1000, 1),
            )

    async def _route_failure(
        self,
        raw: aio_pika.abc.AbstractIncomingMessage,
        headers: dict[str, Any],
        attempt: int,
        error: Exception,
    ) -> None:
        kind = classify_error(error)
        delays = self.settings.retry_delays_seconds
        event_type = raw.type or raw.routing_key or "unknown"
        if kind == "transient" and attempt < len(delays):
            delay = delays[attempt]
            MESSAGES.labels(self.service, event_type, "retried").inc()
            log.warning(
                "message_retry_scheduled",
                error=str(error),
                attempt=attempt + 1,
                delay_seconds=delay,
            )
            await self.broker.publish(
                raw.body,
                routing_key=self.queues.retry_queue(delay),
                persist=True,
                headers={
                    **without_broker_headers(headers),
                    ATTEMPT_HEADER: attempt + 1,
                    "x-radmesh-last-error": str(error)[:1000],
                    WAITING_SINCE_HEADER: datetime.now(UTC).isoformat(),
                },
                content_type=raw.content_type,
                message_id=raw.message_id,
                correlation_id=raw.correlation_id,
                message_type=raw.type,
            )
            return
        reason = (
            str(error) if kind != "transient" else f"gave up after {attempt + 1} attempts: {error}"
        )
        MESSAGES.labels(self.service, event_type, "dead_lettered").inc()
        DEAD_LETTERS.labels(self.service, event_type, _reason_class(kind, error)).inc()
        if kind == "bug":
            log.error(
                "message_dead_lettered",
                reason=reason,
                error_type=type(error).__name__,
                exc_info=error,
            )
        else:
            log.warning("message_dead_lettered", reason=reason, error_type=type(error).__name__)
        await self.broker.publish(
            raw.body,
            exchange=self._dead_letter_exchange,
            routing_key=self.queues.dead_letter_queue,
            persist=True,
            headers={
                **headers,
                REASON_HEADER: reason[:4000],
                "x-radmesh-error-type": f"{kind}:{type(error).__name__}",
                "x-radmesh-attempts": attempt + 1,
                "x-radmesh-routing-key": raw.routing_key or "",
                "x-radmesh-service": self.service,
                "x-radmesh-dead-lettered-at": datetime.now(UTC).isoformat(),
            },
            content_type=raw.content_type,
            message_id=raw.message_id,
            correlation_id=raw.correlation_id,
            message_type=raw.type,
        )

    # -- lifetime ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self.broker.start()
        if self.consumed and self.settings.depth_interval_seconds > 0:
            self._watch_stopping.clear()
            self._depth_watch = asyncio.create_task(self._watch_depth())

    async def stop(self) -> None:
        if self._depth_watch is not None:
            # Told to stop, and cancelled: a cancellation that lands inside aio-pika while it
            # re-opens a channel can be absorbed there, and the watch went on reading every
            # 15 s while stop() waited on it (a test hung for minutes after a broker restart).
            # asyncio.wait, not `await task` under suppress(CancelledError), which would also
            # swallow a cancellation of stop() itself.
            self._watch_stopping.set()
            self._depth_watch.cancel()
            _, pending = await asyncio.wait([self._depth_watch], timeout=_WATCH_STOP_SECONDS)
            if pending:
                log.warning("queue_depth_watch_not_stopped", waited_seconds=_WATCH_STOP_SECONDS)
        await self.broker.stop()

    async def _watch_depth(self) -> None:
        """Every `depth_interval_seconds`, the depth of this service's queues into
        radmesh_queue_depth{queue=work|retry-delay|dead-letter} (a connection of its own; a
        queue not declared yet reads as nothing waiting). Failures are logged; it tries again."""
        kinds = {
            self.queues.queue: "work",
            self.queues.dead_letter_queue: "dead-letter",
            **{self.queues.retry_queue(d): "retry-delay" for d in self.settings.retry_delays_seconds},
        }
        interval = self.settings.depth_interval_seconds
        connection: aio_pika.abc.AbstractRobustConnection | None = None
        try:
            while not self._watch_stopping.is_set():
                try:
                    if connection is None:
                        connection = await aio_pika.connect_robust(self.settings.url)
                    depths = dict.fromkeys(kinds.values(), 0)
                    channel = await connection.channel()
                    for name, kind in kinds.items():
                        if channel.is_closed:  # the broker closes it on a queue not declared
                            channel = await connection.channel()
                        try:
                            queue = await channel.declare_queue(name, passive=True)
                            depths[kind] += queue.declaration_result.message_count or 0
                        except aio_pika.exceptions.ChannelClosed:
                            continue  # not declared (yet): nothing waits in it
                    if not channel.is_closed:
                        await channel.close()
                    for kind, depth in depths.items():
                        QUEUE_DEPTH.labels(self.service, kind).set(depth)
                except (aio_pika.exceptions.AMQPError, ConnectionError, OSError) as error:
                    log.warning("queue_depth_unreadable", error=str(error)[:200])
                with contextlib.suppress(TimeoutError):  # the interval, or stop() first
                    await asyncio.wait_for(self._watch_stopping.wait(), interval)
        finally:
            if connection is not None:
                try:
                    # a robust connection that lived through a broker restart has been seen
                    # to wait for ever in close()
                    async with asyncio.timeout(_WATCH_STOP_SECONDS / 2):
                        await connection.close()
                except (TimeoutError, aio_pika.exceptions.AMQPError, ConnectionError) as error:
                    log.warning("queue_depth_connection_not_closed", error=repr(error)[:200])


# How long a stop waits for the queue-depth watch to close its connection.
_WATCH_STOP_SECONDS = 10.0


def _reason_class(kind: str, error: Exception) -> str:
    """The dead letter's class of reason for the metric (the message's header has the reason)."""
    if kind == "transient":
        return "retries-exhausted"
    if isinstance(error, InvalidMessage):
        return "invalid-message"
    return "permanent-error" if kind == "permanent" else "bug"


async def _raw_body(message: Any) -> bytes:
    """FastStream decoder: hand the body over undecoded; `parse_event` validates it."""
    body: bytes = message.body
    return body
