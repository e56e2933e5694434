"""Signed acknowledgement links in critical alerts, for integrations (pagers, SMS, secure
messaging) whose users do not sign in to the review desk.

The notifier puts a link into each critical alert's payload (an Attachment beside the text):
`<base_url>/alert-links/<token>`. The token names the alert (its identifier value, shared with
the finding's Observation), the recipient it was sent to, and when it expires, and is signed with
HMAC-SHA256 under `RADMESH_ALERT_LINKS__SECRET`, which the notifier and the verification service
share. Opening the link shows the alert and a button; pressing it (a POST: a link scanner that
fetches URLs acknowledges nothing) records the acknowledgement in the recipient's name, as the
review desk's button does. No patient data is in the token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.identifiers import FindingValue, fhir_reference_pattern
from shared.settings import AlertLinkSettings

__all__ = ["AlertLink", "InvalidAlertLink", "acknowledgement_url", "read_token", "sign_token"]

_RECIPIENT = re.compile(
    fhir_reference_pattern(
        "Practitioner", "PractitionerRole", "Organization", "CareTeam", "HealthcareService"
    )
)
MAX_TOKEN_LENGTH = 2048


class InvalidAlertLink(ValueError):
    """A link that is malformed, forged or expired (answered with 403 saying which)."""


@dataclass(frozen=True)
class AlertLink:
    alert: str  # the alert's identifier value (<run>/<finding>/<index>)
    recipient: str  # who it was sent to, e.g. "Practitioner/<id>"
    expires: datetime


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(payload: str, secret: str) -> str:
    return _b64(hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest())


def sign_token(link: AlertLink, secret: str) -> str:
    body = {"a": link.alert, "r": link.recipient, "e": int(link.expires.timestamp())}
    payload = _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
    return f"{payload}.{_signature(payload, secret)}"


def read_token(token: str, secret: str, now: datetime) -> AlertLink:
    """The link a token names, once its signature and expiry are checked."""
    # base64url and one dot: anything else (non-ASCII above all, which hmac cannot compare)
    # is no token of ours
    if len(token) > MAX_TOKEN_LENGTH or not token.isascii() or token.count(".") != 1:
        raise InvalidAlertLink("the link is not a radmesh alert link")
    payload, signature = token.split(".")
    if not hmac.compare_digest(signature, _signature(payload, secret)):
        raise InvalidAlertLink("the link's signature is wrong (forged, or signed with another key)")
    try:
        body = json.loads(_unb64(payload))
        link = AlertLink(
            alert=str(body["a"]),
            recipient=str(body["r"]),
            expires=datetime.fromtimestamp(int(body["e"]), UTC),
        )
        FindingValue.parse(link.alert)
    except (binascii.Error, ValueError, KeyError, TypeError, OverflowError, OSError) as error:
        # OverflowError, OSError: an expiry no datetime holds (1e300, Infinity)
        raise InvalidAlertLink("the link's content is malformed") from error
    if not _RECIPIENT.fullmatch(link.recipient):
        raise InvalidAlertLink("the link names no recipient")
    if now >= link.expires:
        raise InvalidAlertLink(
            f"the link expired at {link.expires.isoformat()}; acknowledge on the review desk"
        )
    return link


def acknowledgement_url(
    settings: AlertLinkSettings, alert: str, recipient: str | None, now: datetime
) -> str | None:
    """The signed link acknowledging `alert` in the name of `recipient`; None when links are
    off (no base URL) or the alert has no recipient to act in the name of."""
    if settings.base_url is None or recipient is None:
        return None
    link = AlertLink(alert, recipient, now + timedelta(hours=settings.valid_hours))
    token = sign_token(link, settings.secret.get_secret_value())
    return f"{settings.base_url.rstrip('/')}/alert-links/{token}"
