"""What every service needs to know about radmesh's critical-finding alerts: their FHIR
categories, how an alert's resources are found from its finding, and how an alert is closed.

An alert is a Communication (as sent), a CommunicationRequest (the open loop), maybe a consult
ServiceRequest and, when the study has a patient, a Flag on the patient; all carry the
identifier value of the finding's Observation (`<study UID>/<model>/<version>/<finding
key>/<index>`) under their own type's system. The notifier writes and withdraws alerts; the
verification service records their acknowledgement.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from shared.codes import COMMUNICATION_CATEGORY_ALERT, FLAG_CATEGORY_CLINICAL
from shared.fhir import conditional_create_entry, versioned_update_entry
from shared.identifiers import business_identifier, radmesh_identifier_value

__all__ = [
    "ALERT_CATEGORY",
    "FLAG_CATEGORY",
    "alert_key",
    "closed_flag_entry",
    "follow_up_entry",
]

ALERT_CATEGORY = COMMUNICATION_CATEGORY_ALERT.concept()
FLAG_CATEGORY = FLAG_CATEGORY_CLINICAL.concept()


def alert_key(resource: dict[str, Any]) -> str | None:
    """The identifier value an alert shares with its finding's Observation, read from any of
    them (the Observation, the Communication, the CommunicationRequest, ...)."""
    return radmesh_identifier_value(resource)


def closed_flag_entry(flag: dict[str, Any], when: str, base_url: str) -> dict[str, Any] | None:
    """The PUT making an active Flag inactive (its period ends now); None when it is closed."""
    if flag.get("status") != "active":
        return None
    period = {**(flag.get("period") or {}), "end": when}
    return versioned_update_entry({**flag, "status": "inactive", "period": period}, base_url)


def follow_up_entry(
    key: str,
    kind: str | tuple[str, int],
    *,
    alert: dict[str, Any],
    communication_id: str | None,
    sender: dict[str, Any] | None,
    text: str,
    label: dict[str, str],
    now: datetime,
    recipients: list[dict[str, Any]] | None = None,
    about: list[dict[str, Any]] | None = None,
    **more: Any,
) -> dict[str, Any]:
    """The conditional-create entry of a Communication that follows an alert up (withdrawal,
    confirmation, escalation step, acknowledgement): identifier `<key>/<kind>`, stat, category
    alert, about what the alert was about (plus `about`), in response to the alert's
    Communication, to the alert's recipients unless `recipients` says otherwise; `alert` is
    the alert's Communication or CommunicationRequest. A repeat writes it once."""
    parts = kind if isinstance(kind, tuple) else (kind,)
    identifier = business_identifier("Communication", key, *parts)
    communication: dict[str, Any] = {
        "resourceType": "Communication",
        "meta": {"security": [label]},
        "identifier": [identifier],
        "status": "completed",
        "category": [ALERT_CATEGORY],
        "priority": "stat",
        "sent": now.isoformat(),
        "about": [*alert.get("about", []), *(about or [])],
        "payload": [{"contentString": text}],
        **more,
    }
    if sender:
        communication["sender"] = sender
    recipient = alert.get("recipient") if recipients is None else recipients
    if recipient:
        communication["recipient"] = recipient
    for field in ("subject", "encounter"):
        if alert.get(field):
            communication[field] = alert[field]
    if communication_id is not None:
        communication["inResponseTo"] = [{"reference": f"Communication/{communication_id}"}]
    return conditional_create_entry(
        communication, f"urn:uuid:{uuid.uuid4()}", identifier["system"], identifier["value"]
    )
