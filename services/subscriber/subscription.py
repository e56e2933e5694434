"""Makes sure the FHIR server has radmesh's rest-hook Subscription (created once, by endpoint)
and that the server has activated it."""

from __future__ import annotations

import asyncio
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
    await _wait_until_active(fhir, reference, settings.subscription_activation_seconds)
    log.info("subscription_ready", subscription=reference, criteria=settings.subscription_criteria)
    return reference


async def _wait_until_active(fhir: FhirClient, reference: str, wait_seconds: float) -> None:
    """Wait until the server has moved the Subscription from `requested` to `active`.

    HAPI activates a Subscription asynchronously and delivers nothing before; a study stored
    in between would reach radmesh only through the reconciliation. A server that refuses the
    Subscription sets `error` (with the reason in `Subscription.error`); one that keeps it
    `requested` is logged, not fatal: studies still arrive by the PACS hook and the sweep."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    status = "requested"
    while True:
        subscription = await fhir.read_resource(reference)
        status = str(subscription.get("status"))
        if status == "active":
            log.info(
                "subscription_active",
                subscription=reference,
                waited_seconds=round(loop.time() - started, 2),
            )
            return
        if status in ("error", "off"):
            log.error(
                "subscription_not_delivering",
                subscription=reference,
                status=status,
                reason=subscription.get("error"),
            )
            return
        if loop.time() - started >= wait_seconds:
            log.warning(
                "subscription_not_active_yet",
                subscription=reference,
                status=status,
                waited_seconds=wait_seconds,
            )
            return
        await asyncio.sleep(0.2)
