"""Makes sure the FHIR server has radmesh's rest-hook Subscription (one per endpoint) and that
the server has activated it.

Which kind of Subscription (`subscription_kind`, default `auto`):

- `topic` — a Subscriptions R5 Backport IG (R4) topic-based Subscription: criteria the topic's
  canonical URL (`subscription_topic`), filtered by `subscription_criteria`, `id-only` payloads
  (the subscriber reads each focus: no patient data in the notification itself), a heartbeat
  period. Its notifications carry event numbers, so a lost one is noticed and recovered;
- `criteria` — an R4 criteria Subscription on `subscription_criteria` (what every R4 server
  offers); the hook gets the resource (PUT) or an empty POST;
- `auto` — `topic` when the server's CapabilityStatement advertises the IG (it instantiates the
  IG's server statement, or lists the backport Subscription profile as supported) and names the
  topic among its topics; otherwise `criteria`, saying why.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import structlog

from services.subscriber.settings import SubscriberSettings
from shared.fhir import FhirClient, retried_at_start

__all__ = [
    "BACKPORT_SUBSCRIPTION_PROFILE",
    "choose_subscription_kind",
    "ensure_subscription",
    "ensure_subscription_at_start",
    "hook_endpoint",
    "subscription_resource",
]

log = structlog.get_logger(__name__)

_BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport"
BACKPORT_SERVER_STATEMENTS = (
    f"{_BACKPORT}/CapabilityStatement/backport-subscription-server-r4",
    f"{_BACKPORT}/CapabilityStatement/backport-subscription-server-r4b",
)
BACKPORT_SUBSCRIPTION_PROFILE = f"{_BACKPORT}/StructureDefinition/backport-subscription"
TOPIC_CANONICAL_EXTENSION = (
    f"{_BACKPORT}/StructureDefinition/capabilitystatement-subscriptiontopic-canonical"
)
_FILTER_CRITERIA = f"{_BACKPORT}/StructureDefinition/backport-filter-criteria"
_PAYLOAD_CONTENT = f"{_BACKPORT}/StructureDefinition/backport-payload-content"
_HEARTBEAT_PERIOD = f"{_BACKPORT}/StructureDefinition/backport-heartbeat-period"
_TIMEOUT = f"{_BACKPORT}/StructureDefinition/backport-timeout"
HEARTBEAT_SECONDS = 60
Kind = Literal["topic", "criteria"]


def hook_endpoint(settings: SubscriberSettings) -> str:
    """The channel.endpoint the FHIR server calls: `{public_url}/fhir`."""
    return f"{settings.public_url.rstrip('/')}/fhir"


def _advertised_topics(capability: dict[str, Any]) -> tuple[bool, set[str]]:
    """Whether a CapabilityStatement advertises the Backport IG, and the topics it names."""
    advertised = bool(set(capability.get("instantiates") or []) & set(BACKPORT_SERVER_STATEMENTS))
    topics: set[str] = set()
    for rest in capability.get("rest") or []:
        for resource in (rest or {}).get("resource") or []:
            if (resource or {}).get("type") != "Subscription":
                continue
            advertised = advertised or BACKPORT_SUBSCRIPTION_PROFILE in (
                resource.get("supportedProfile") or []
            )
            topics |= {
                str(extension.get("valueCanonical"))
                for extension in resource.get("extension") or []
                if extension.get("url") == TOPIC_CANONICAL_EXTENSION
            }
    return advertised, topics


def choose_subscription_kind(
    capability: dict[str, Any], settings: SubscriberSettings
) -> tuple[Kind, str]:
    """Which Subscription to ask the server for, and why (see the module docstring)."""
    if settings.subscription_kind != "auto":
        return settings.subscription_kind, "set by RADMESH_SUBSCRIBER_SUBSCRIPTION_KIND"
    advertised, topics = _advertised_topics(capability)
    if not advertised:
        return "criteria", "the server does not advertise the Subscriptions Backport IG"
    if settings.subscription_topic not in topics:
        return "criteria", (
            "the server advertises the Subscriptions Backport IG but not the topic "
            f"{settings.subscription_topic} (yet: a server may load a new topic within minutes)"
        )
    return "topic", "the server advertises the Subscriptions Backport IG and the topic"


def subscription_resource(kind: Kind, settings: SubscriberSettings) -> dict[str, Any]:
    """The Subscription radmesh asks for."""
    channel: dict[str, Any] = {
        "type": "rest-hook",
        "endpoint": hook_endpoint(settings),
        "payload": "application/fhir+json",
        "header": [f"Authorization: Bearer {settings.hook_secret.get_secret_value()}"],
    }
    subscription: dict[str, Any] = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "radmesh: run the AI models that apply to each available imaging study",
        "criteria": settings.subscription_criteria,
        "channel": channel,
    }
    if kind == "topic":
        subscription["meta"] = {"profile": [BACKPORT_SUBSCRIPTION_PROFILE]}
        subscription["criteria"] = settings.subscription_topic
        subscription["_criteria"] = {
            "extension": [{"url": _FILTER_CRITERIA, "valueString": settings.subscription_criteria}]
        }
        channel["extension"] = [
            {"url": _HEARTBEAT_PERIOD, "valueUnsignedInt": HEARTBEAT_SECONDS},
            {"url": _TIMEOUT, "valueUnsignedInt": 30},
        ]
        channel["_payload"] = {"extension": [{"url": _PAYLOAD_CONTENT, "valueCode": "id-only"}]}
    return subscription


def _kind_of(subscription: dict[str, Any]) -> Kind:
    profiles = (subscription.get("meta") or {}).get("profile") or []
    return "topic" if BACKPORT_SUBSCRIPTION_PROFILE in profiles else "criteria"


def _differs(existing: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether the server's Subscription is not the one wanted (a rotated secret, a changed
    criteria or topic, or switched off): hooks would be refused (401) or miss studies."""
    channel, wanted_channel = existing.get("channel") or {}, wanted["channel"]
    return (
        existing.get("criteria") != wanted["criteria"]
        or existing.get("_criteria") != wanted.get("_criteria")
        or any(channel.get(key) != value for key, value in wanted_channel.items())
        or existing.get("status") == "off"
    )


async def ensure_subscription_at_start(fhir: FhirClient, settings: SubscriberSettings) -> str:
    """`ensure_subscription`, tried again after a transient failure for up to
    `subscription_startup_seconds` (the conditional create makes a second try safe); then its
    error is raised and the subscriber exits."""
    return await retried_at_start(
        lambda: ensure_subscription(fhir, settings),
        seconds=settings.subscription_startup_seconds,
        retry_event="subscription_retry",
        failed_event="subscription_not_made",
    )


async def ensure_subscription(fhir: FhirClient, settings: SubscriberSettings) -> str:
    """Create the Subscription unless one with our endpoint exists (brought up to date when it
    differs); returns its reference once the server activated it, or gave up waiting."""
    endpoint = hook_endpoint(settings)
    kind, why = choose_subscription_kind(await fhir.execute("metadata", "get"), settings)
    log.info("subscription_kind", kind=kind, reason=why)
    wanted = subscription_resource(kind, settings)
    created = await fhir.create_resource(wanted, if_none_exist=f"url={endpoint}")
    if _kind_of(created) != kind:
        # A server decides how to match a Subscription when it is created (HAPI tags it): one of
        # the other kind is replaced, not edited.
        await fhir.execute(f"Subscription/{created['id']}", method="delete")
        log.info("subscription_replaced", subscription=f"Subscription/{created['id']}", kind=kind)
        created = await fhir.create_resource(wanted, if_none_exist=f"url={endpoint}")
    reference = f"Subscription/{created['id']}"
    if _differs(created, wanted):
        updated = {**created, **{k: v for k, v in wanted.items() if k != "meta"}}
        await fhir.update_resource(updated)
        log.info("subscription_updated", subscription=reference)
    await _wait_until_active(fhir, reference, settings.subscription_activation_seconds)
    log.info("subscription_ready", subscription=reference, kind=kind, criteria=wanted["criteria"])
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
