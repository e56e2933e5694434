"""Signed acknowledgement links (shared.alert_links), pure."""

from __future__ import annotations

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
