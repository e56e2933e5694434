"""Removing what a test's services declared on the shared broker."""

from __future__ import annotations

import asyncio
import subprocess

import aio_pika

__all__ = ["delete_broker_objects"]


async def delete_broker_objects(amqp_url: str, prefix: str) -> None:
    """The exchange and every queue (main, delays, dead letters) the service declared."""
    listed = await asyncio.to_thread(
        subprocess.run,
        ["rabbitmqctl", "-q", "list_queues", "name"],
        capture_output=True,
        text=True,
        check=True,
    )
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        for name in listed.stdout.split():
            if name.startswith(f"{prefix}."):
                await channel.queue_delete(name)
        await channel.exchange_delete(prefix)
    finally:
        await connection.close()
