"""services.subscriber.hook_auth: only the exact secret and the exact signature pass."""

from __future__ import annotations

from services.subscriber.hook_auth import bearer_matches, sign, signature_matches


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
