"""shared.bus's pure parts: what a retry publishes of the headers it was given."""

from __future__ import annotations

from shared.bus import ATTEMPT_HEADER, without_broker_headers


def test_a_retry_leaves_the_brokers_dead_letter_history_to_the_broker() -> None:
    """`x-death` and the `x-first-death-*` / `x-last-death-*` headers are RabbitMQ's: a
    publisher's forged `x-death` (an integer) carried into a delay queue crashed RabbitMQ's
    dead-lettering there and left the message in it. Every other header is kept."""
    headers = {
        "x-death": -300,
        "x-first-death-reason": "expired",
        "x-last-death-queue": "radmesh.fetcher.delay.1000ms",
        ATTEMPT_HEADER: 1,
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "x-deathly": "a header of its own",
    }
    assert without_broker_headers(headers) == {
        ATTEMPT_HEADER: 1,
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "x-deathly": "a header of its own",
    }
