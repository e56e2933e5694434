"""Authentication of inbound hooks, in constant time: a bearer secret (FHIR rest-hook, from the
Subscription's channel.header) and an HMAC-SHA256 body signature (PACS webhook)."""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["SIGNATURE_HEADER", "bearer_matches", "sign", "signature_matches"]

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
