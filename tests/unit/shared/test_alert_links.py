"""Signed acknowledgement links (shared.alert_links), pure."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from shared.alert_links import (
    AlertLink,
    InvalidAlertLink,
    acknowledgement_url,
    read_token,
    sign_token,
)
from shared.settings import AlertLinkSettings

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
KEY = "1.2.3/ich-reference/1/intracranial-hemorrhage/0"


def test_a_link_reads_back_what_it_was_signed_for() -> None:
    settings = AlertLinkSettings(base_url="http://desk/", secret=SecretStr("k"), valid_hours=2)
    url = acknowledgement_url(settings, KEY, "Practitioner/p", NOW)
    assert url is not None and url.startswith("http://desk/alert-links/")
    link = read_token(url.rsplit("/", 1)[1], "k", NOW + timedelta(hours=1))
    assert link == AlertLink(KEY, "Practitioner/p", NOW + timedelta(hours=2))


def test_no_link_without_a_base_url_or_a_recipient() -> None:
    assert acknowledgement_url(AlertLinkSettings(base_url=None), KEY, "Practitioner/p", NOW) is None
    assert acknowledgement_url(AlertLinkSettings(), KEY, None, NOW) is None


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (
            sign_token(AlertLink(KEY, "Practitioner/p", NOW + timedelta(hours=1)), "other"),
            "signature",
        ),
        (sign_token(AlertLink(KEY, "Practitioner/p", NOW), "k"), "expired"),
        (
            sign_token(AlertLink("not/a/key", "Practitioner/p", NOW + timedelta(hours=1)), "k"),
            "malformed",
        ),
        (sign_token(AlertLink(KEY, "Patient/p", NOW + timedelta(hours=1)), "k"), "no recipient"),
        ("a.b.c", "not a radmesh alert link"),
        ("x" * 3000 + ".y", "not a radmesh alert link"),
    ],
)
def test_a_forged_expired_or_malformed_link_is_refused_saying_why(token: str, reason: str) -> None:
    with pytest.raises(InvalidAlertLink, match=reason):
        read_token(token, "k", NOW)


def _signed_payload(payload: bytes, secret: str = "k") -> str:
    """A token around any payload, signed with the right key (its content is what is read)."""
    encoded = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    signature = hmac.new(secret.encode(), encoded.encode(), hashlib.sha256).digest()
    return f"{encoded}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        pytest.param("payload.signatureé", "not a radmesh alert link", id="non-ascii-signature"),
        pytest.param("päyload.signature", "not a radmesh alert link", id="non-ascii-payload"),
        pytest.param(
            _signed_payload(f'{{"a": "{KEY}", "r": "Practitioner/p", "e": 1e300}}'.encode()),
            "malformed",
            id="expiry-beyond-any-date",
        ),
        pytest.param(
            _signed_payload(f'{{"a": "{KEY}", "r": "Practitioner/p", "e": Infinity}}'.encode()),
            "malformed",
            id="infinite-expiry",
        ),
        pytest.param(
            sign_token(AlertLink(KEY, "Practitioner/p\n", NOW + timedelta(hours=1)), "k"),
            "no recipient",
            id="recipient-with-a-newline",
        ),
    ],
)
def test_a_hostile_token_is_refused_not_raised_on(token: str, reason: str) -> None:
    """Tokens the link page once answered with 500: a non-ASCII signature (hmac refuses to
    compare it), an expiry no datetime holds; and a recipient a trailing newline made pass."""
    with pytest.raises(InvalidAlertLink, match=reason):
        read_token(token, "k", NOW)
