"""Subscriptions Backport IG notification Bundles, R4 (status as Parameters) and R4B (status as
SubscriptionStatus), shaped as the IG's examples: handshake, heartbeat and event-notification
with full-resource, id-only and empty payloads. Used by the unit and integration tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

__all__ = ["r4_notification", "r4b_notification"]

TOPIC = "http://example.org/fhir/SubscriptionTopic/imaging-study-available"


def _focus_entry(reference: str, resource: dict[str, Any] | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"fullUrl": f"http://127.0.0.1/fhir/{reference}"}
    if resource is not None:
        entry["resource"] = resource
        entry["request"] = {"method": "PUT", "url": reference}
        entry["response"] = {"status": "200"}
    return entry


def r4_notification(
    kind: str,
    since: int,
    focuses: list[str] = [],  # noqa: B006 - read only
    resources: list[dict[str, Any]] | None = None,
    subscription: str = "Subscription/backport-r4",
) -> dict[str, Any]:
    """An R4 notification Bundle; `resources` (full-resource) aligned with `focuses`."""
    parameters: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": subscription}},
        {"name": "topic", "valueCanonical": TOPIC},
        {"name": "status", "valueCode": "active"},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(since)},
    ]
    for number, focus in enumerate(focuses, start=since - len(focuses) + 1):
        parameters.append(
            {
                "name": "notification-event",
                "part": [
                    {"name": "event-number", "valueString": str(number)},
                    {"name": "timestamp", "valueInstant": datetime.now(UTC).isoformat()},
                    {"name": "focus", "valueReference": {"reference": focus}},
                ],
            }
        )
    status = {"resourceType": "Parameters", "id": str(uuid.uuid4()), "parameter": parameters}
    return _bundle(status, focuses, resources)


def r4b_notification(
    kind: str,
    since: int,
    focuses: list[str] = [],  # noqa: B006 - read only
    resources: list[dict[str, Any]] | None = None,
    subscription: str = "Subscription/backport-r4b",
) -> dict[str, Any]:
    """An R4B notification Bundle (SubscriptionStatus first)."""
    status: dict[str, Any] = {
        "resourceType": "SubscriptionStatus",
        "id": str(uuid.uuid4()),
        "status": "active",
        "type": kind,
        "eventsSinceSubscriptionStart": str(since),
        "subscription": {"reference": subscription},
        "topic": TOPIC,
        "notificationEvent": [
            {"eventNumber": str(number), "focus": {"reference": focus}}
            for number, focus in enumerate(focuses, start=since - len(focuses) + 1)
        ],
    }
    return _bundle(status, focuses, resources)


def _bundle(
    status: dict[str, Any], focuses: list[str], resources: list[dict[str, Any]] | None
) -> dict[str, Any]:
    entries = [{"fullUrl": f"urn:uuid:{status['id']}", "resource": status}]
    for index, focus in enumerate(focuses):
        entries.append(_focus_entry(focus, resources[index] if resources else None))
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "history",
        "timestamp": datetime.now(UTC).isoformat(),
        "entry": entries,
    }
