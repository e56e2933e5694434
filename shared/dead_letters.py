"""Operations on the service queues: depths, consumers, and the dead letters (list, replay).

A replayed dead letter goes back to its own service's queue only (through the default exchange),
not to the topic exchange, so services that already handled it do not see it twice. Its retry
count starts afresh. Idempotent FHIR writes make a replay safe.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import aio_pika
from aio_pika.exceptions import ChannelClosed

from shared.bus import (
    ATTEMPT_HEADER,
    REASON_HEADER,
    WAITING_SINCE_HEADER,
    ServiceQueues,
    header_count,
)

__all__ = ["SERVICES", "DeadLetter", "QueueStatus", "list_dead_letters", "queue_status", "replay"]

# The services that consume from a queue (the subscriber only publishes).
SERVICES = ("fetcher", "inference", "mapper", "notifier", "verification")


@dataclass(frozen=True)
class QueueStatus:
    queue: str
    messages: int | None  # None: the queue does not exist (the service never started)
    consumers: int | None
    # How long the message at the head has waited there (delay and dead-letter queues only:
    # browsing a service queue would count towards its delivery limit); None: not known.
    oldest_seconds: float | None = None


@dataclass(frozen=True)
class DeadLetter:
    message_id: str | None
    correlation_id: str | None
    routing_key: str
    reason: str
    error_type: str
    attempts: int | None
    dead_lettered_at: str | None


def _waiting_since(message: aio_pika.abc.AbstractIncomingMessage) -> datetime | None:
    """When the message was put where it waits: the bus's headers, else its timestamp (a timer)."""
    headers = message.headers or {}
    for header in ("x-radmesh-dead-lettered-at", WAITING_SINCE_HEADER):
        value = headers.get(header)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str):
            try:
                since = datetime.fromisoformat(value)
            except ValueError:
                continue  # a strange header says nothing about the age
            return since if since.tzinfo else since.replace(tzinfo=UTC)
    stamp = message.timestamp
    if stamp is None:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


async def _inspect(
    connection: aio_pika.abc.AbstractConnection, name: str, *, browse: bool = False
) -> QueueStatus:
    """A queue's depth and consumers, and (`browse`) the age of its head message, which goes
    back to the queue unacknowledged when the channel closes."""
    channel = await connection.channel()
    try:
        declared = await channel.declare_queue(name, passive=True)
    except ChannelClosed:
        return QueueStatus(name, None, None)
    result = declared.declaration_result
    oldest = None
    if browse and result.message_count:
        head = await declared.get(no_ack=False, fail=False)
        since = _waiting_since(head) if head is not None else None
        if since is not None:
            oldest = max(0.0, (datetime.now(UTC) - since).total_seconds())
    await channel.close()
    return QueueStatus(name, result.message_count, result.consumer_count, oldest)


async def queue_status(
    amqp_url: str,
    services: tuple[str, ...] = SERVICES,
    retry_delays_seconds: tuple[float, ...] = (),
    prefix: str = "radmesh",
) -> list[QueueStatus]:
    """Depth and consumers of each service's queue, its delay queues (messages waiting for a
    retry) and its dead-letter queue."""
    connection = await aio_pika.connect(amqp_url)
    try:
        statuses = []
        for service in services:
            queues = ServiceQueues(service, prefix)
            statuses.append(await _inspect(connection, queues.queue))
            for delay in retry_delays_seconds:
                statuses.append(
                    await _inspect(connection, queues.retry_queue(delay), browse=True)
                )
            statuses.append(await _inspect(connection, queues.dead_letter_queue, browse=True))
        return statuses
    finally:
        await connection.close()


def _describe(message: aio_pika.abc.AbstractIncomingMessage) -> DeadLetter:
    headers = message.headers or {}
    reason = headers.get(REASON_HEADER)
    if reason is None:  # dead-lettered by the broker itself (delivery limit reached)
        reason = "broker: " + str(headers.get("x-first-death-reason", "unknown"))
    attempts = headers.get("x-radmesh-attempts", headers.get(ATTEMPT_HEADER))
    return DeadLetter(
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        routing_key=str(headers.get("x-radmesh-routing-key", message.routing_key or "")),
        reason=str(reason),
        error_type=str(headers.get("x-radmesh-error-type", "")),
        attempts=header_count(attempts) if attempts is not None else None,
        dead_lettered_at=str(headers.get("x-radmesh-dead-lettered-at") or "") or None,
    )


async def list_dead_letters(
    amqp_url: str, service: str, limit: int = 100, prefix: str = "radmesh"
) -> list[DeadLetter]:
    """The dead letters of one service, left in place (browsed, then returned to the queue)."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(
            ServiceQueues(service, prefix).dead_letter_queue, passive=True
        )
        seen: list[DeadLetter] = []
        while len(seen) < limit:
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            seen.append(_describe(message))
        # Closing the channel without acknowledging returns every browsed message to the queue.
        await channel.close()
        return seen
    finally:
        await connection.close()


async def replay(
    amqp_url: str, service: str, limit: int | None = None, prefix: str = "radmesh"
) -> int:
    """Move dead letters back to their service's queue; returns how many were replayed."""
    queues = ServiceQueues(service, prefix)
    connection = await aio_pika.connect(amqp_url)
    replayed = 0
    try:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(queues.dead_letter_queue, passive=True)
        while limit is None or replayed < limit:
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            headers = {
                key: value
                for key, value in (message.headers or {}).items()
                if not key.startswith("x-radmesh-")
                and not key.startswith("x-death")
                and not key.startswith("x-first-death")
                and not key.startswith("x-last-death")
            }
            headers["x-radmesh-replayed"] = True
            await channel.default_exchange.publish(
                aio_pika.Message(
                    body=message.body,
                    headers=headers,
                    content_type=message.content_type,
                    message_id=message.message_id,
                    correlation_id=message.correlation_id,
                    type=message.type,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=queues.queue,
            )
            await message.ack()
            replayed += 1
        return replayed
    finally:
        await connection.close()
