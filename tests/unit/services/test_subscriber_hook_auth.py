"""services.subscriber.hook_auth: only the exact secret and the exact signature pass, and a
signed PACS event only once, within its replay window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.subscriber.hook_auth import (
    HookRefused,
    ReplayGuard,
    bearer_matches,
    sign,
    signature_matches,
)


def test_bearer_secret_must_match_exactly() -> None:
    """`Bearer <secret>` passes; a missing header, another secret or another scheme do not."""
    assert bearer_matches("Bearer s3cret", "s3cret")
    assert not bearer_matches(None, "s3cret")
    assert not bearer_matches("Bearer s3cret2", "s3cret")
    assert not bearer_matches("Basic s3cret", "s3cret")


def test_signature_covers_the_exact_body() -> None:
    """The HMAC of the body under the shared secret passes; a changed body or key does not."""
    body = b'{"study_instance_uid": "1.2.3"}'
    signature = sign(body, "key")
    assert signature.startswith("sha256=")
    assert signature_matches(body, signature, "key")
    assert not signature_matches(body + b" ", signature, "key")
    assert not signature_matches(body, sign(body, "other-key"), "key")
    assert not signature_matches(body, None, "key")


def test_replay_guard_refuses_old_future_and_repeated_events() -> None:
    """Within the window an event is taken once: older → 401, from the future beyond the skew
    → 401, an id already remembered → 409; an id only checked (not handled) may come again."""
    guard = ReplayGuard(max_age_seconds=300, future_skew_seconds=60)
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    guard.check("event-a", now - timedelta(seconds=299), now)
    guard.check("event-a", now - timedelta(seconds=299), now)  # not remembered yet: a retry
    guard.remember("event-a")
    refusals = []
    for event_id, emitted in (
        ("event-a", now),
        ("event-b", now - timedelta(seconds=301)),
        ("event-c", now + timedelta(seconds=61)),
        ("event-d", datetime(2026, 12, 1, 12, 0)),  # no time zone
    ):
        with pytest.raises(HookRefused) as raised:
            guard.check(event_id, emitted, now)
        refusals.append(raised.value.status)
    assert refusals == [409, 401, 401, 401]
