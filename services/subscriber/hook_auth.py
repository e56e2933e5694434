"""Authentication of inbound hooks, in constant time: a bearer secret (FHIR rest-hook, from the
Subscription's channel.header) and an HMAC-SHA256 body signature (PACS webhook); and replay
protection of the signed PACS events: the signature covers `emitted_at` and `event_id`, an event
older than the window is refused (401), one whose id was already taken is refused (409)."""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import UTC, datetime, timedelta

from shared.errors import InvalidMessage

__all__ = [
    "SIGNATURE_HEADER",
    "HookRefused",
    "ReplayGuard",
    "bearer_matches",
    "sign",
    "signature_matches",
]

SIGNATURE_HEADER = "X-Radmesh-Signature"


def bearer_matches(authorization: str | None, secret: str) -> bool:
    """True when the Authorization header is exactly `Bearer <secret>`."""
    expected = f"Bearer {secret}".encode()
    return hmac.compare_digest((authorization or "").encode(), expected)


def sign(body: bytes, secret: str) -> str:
    """The signature header value of a body: `sha256=<hex HMAC-SHA256>`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_matches(body: bytes, signature: str | None, secret: str) -> bool:
    """True when the signature header is the body's HMAC under the shared secret."""
    return hmac.compare_digest((signature or "").encode(), sign(body, secret).encode())


class HookRefused(InvalidMessage):
    """A hook refused with its own status (401 stale, 409 replayed) and OperationOutcome code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class ReplayGuard:
    """Event ids of the PACS events taken within the window (one subscriber replica's memory;
    across replicas an event inside the window can be taken twice, which every idempotent
    write absorbs)."""

    def __init__(self, max_age_seconds: float, future_skew_seconds: float = 60.0) -> None:
        self.max_age = timedelta(seconds=max_age_seconds)
        self.future_skew = timedelta(seconds=future_skew_seconds)
        self._taken: dict[str, float] = {}

    def check(self, event_id: str, emitted_at: datetime, now: datetime | None = None) -> None:
        """Refuse an event emitted outside the window, or one whose id was taken already."""
        now = now or datetime.now(UTC)
        if emitted_at.tzinfo is None:
            raise HookRefused(401, "security", "emitted_at must carry a time zone")
        age = now - emitted_at
        if age > self.max_age:
            raise HookRefused(
                401,
                "security",
                f"event emitted {age.total_seconds():.0f} s ago, older than the "
                f"{self.max_age.total_seconds():.0f} s replay window: refused",
            )
        if -age > self.future_skew:
            raise HookRefused(401, "security", "event emitted in the future (clock skew?): refused")
        self._forget_old()
        if event_id in self._taken:
            raise HookRefused(409, "duplicate", f"event {event_id} was already received")

    def remember(self, event_id: str) -> None:
        """Record an event as taken (after it was handled: a failed one may be retried)."""
        self._taken[event_id] = time.monotonic()

    def _forget_old(self) -> None:
        horizon = time.monotonic() - (self.max_age + self.future_skew).total_seconds()
        for event_id, when in list(self._taken.items()):
            if when < horizon:
                del self._taken[event_id]
