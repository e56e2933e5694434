"""Makes sure the FHIR server has radmesh's rest-hook Subscription (created once, by endpoint)."""

from __future__ import annotations

from typing import Any

import structlog

from services.subscriber.settings import SubscriberSettings
from shared.fhir import FhirClient

log = structlog.get_logger(__name__)


def hook_endpoint(settings: SubscriberSettings) -> str:
    """The channel.endpoint the FHIR server calls: `{public_url}/fhir`."""
    return f"{settings.public_url.rstrip('/')}/fhir"


async def ensure_subscription(fhir: FhirClient, settings: SubscriberSettings) -> str:
    """Create the Subscription unless one with our endpoint exists; returns its reference."""
    endpoint = hook_endpoint(settings)
    subscription: dict[str, Any] = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "radmesh: run the AI models that apply to each available imaging study",
        "criteria": settings.subscription_criteria,
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "header": [f"Authorization: Bearer {settings.hook_secret.get_secret_value()}"],
        },
    }
    created = await fhir.create_resource(subscription, if_none_exist=f"url={endpoint}")
    reference = f"Subscription/{created['id']}"
    channel = created.get("channel") or {}
    if (
        created.get("criteria") != subscription["criteria"]
        or channel.get("header") != subscription["channel"]["header"]
        or channel.get("payload") != subscription["channel"]["payload"]
        or created.get("status") == "off"
    ):
        # An existing Subscription from before a secret rotation or a criteria change: bring it
        # up to date, or every hook would be refused (401) or miss studies.
        updated = {**created, "criteria": subscription["criteria"], "status": "requested"}
        updated["channel"] = {**channel, **subscription["channel"]}
        await fhir.update_resource(updated)
        log.info("subscription_updated", subscription=reference)
    log.info("subscription_ready", subscription=reference, criteria=settings.subscription_criteria)
    return reference
