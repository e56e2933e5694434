"""What a FHIR server POSTs to the rest-hook endpoint, read into one `Notification`:

- a Subscriptions Backport IG notification Bundle (`type` history): R4 carries its status as a
  `Parameters` resource first, R4B as a `SubscriptionStatus`; its type is `handshake`,
  `heartbeat`, `event-notification`, `query-status` or `query-event`, and each event's `focus`
  names the resource that changed. With payload `full-resource` the ImagingStudies are entries
  too; with `id-only` only the focus references are there (radmesh reads them); with `empty`
  neither (radmesh searches what changed);
- any other Bundle with ImagingStudy entries (R5-style or a plain batch of them);
- a bare ImagingStudy (a server that POSTs the changed resource itself).

Anything else is an InvalidMessage saying what was expected (the caller gets a 400).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from services.subscriber.hook_bodies import imaging_study_of
from shared.errors import InvalidMessage
from shared.identifiers import FHIR_ID_PATTERN
from shared.json_input import read_json

__all__ = [
    "EVENTS_OPERATION",
    "NOTIFICATION_TYPES",
    "Notification",
    "offers_events_operation",
    "parse_notification",
    "parse_posted_body",
    "subscription_reference",
]

NOTIFICATION_TYPES = ("handshake", "heartbeat", "event-notification", "query-status", "query-event")
_STATUS_RESOURCES = ("Parameters", "SubscriptionStatus")
_FHIR_ID = re.compile(FHIR_ID_PATTERN)


@dataclass(frozen=True)
class Notification:
    """One POSTed body: what kind, of which Subscription, and the studies it names."""

    kind: str  # a NOTIFICATION_TYPES value, or "resources" (no status: a Bundle or a resource)
    subscription: str | None = None
    events_since_start: int | None = None  # the server's counter of this Subscription's events
    event_count: int = 0  # how many events this notification carries
    imaging_studies: tuple[dict[str, Any], ...] = ()  # full-resource (or a bare resource)
    focus_references: tuple[str, ...] = field(default=())  # id-only: ImagingStudy/<id> to read
    bundle: bool = True  # POSTed as a Bundle (not a bare resource)

    @property
    def carries_events(self) -> bool:
        return self.kind in ("event-notification", "query-event", "resources")


def _reference(value: Any) -> str | None:
    if isinstance(value, dict) and isinstance(value.get("reference"), str):
        return str(value["reference"])
    return None


def _counter(value: Any, where: str) -> int | None:
    if value is None:
        return None
    try:
        number = int(str(value))
    except ValueError as error:
        raise InvalidMessage(f"{where} is not a whole number: {str(value)[:40]!r}") from error
    if number < 0:
        raise InvalidMessage(f"{where} is negative")
    return number


def _objects(value: Any, where: str) -> list[dict[str, Any]]:
    """A FHIR list of elements (absent: empty); anything else is an InvalidMessage naming it."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise InvalidMessage(f"{where} must be a list of objects")
    return value


def _status_r4(parameters: dict[str, Any]) -> tuple[str | None, str | None, int | None, list[str]]:
    """type, subscription, eventsSinceSubscriptionStart and focus references of an R4 status."""
    kind = subscription = None
    since = None
    focuses: list[str] = []
    for parameter in _objects(parameters.get("parameter"), "Parameters.parameter"):
        name = parameter.get("name")
        if name == "type":
            kind = parameter.get("valueCode")
        elif name == "subscription":
            subscription = _reference(parameter.get("valueReference"))
        elif name == "events-since-subscription-start":
            since = _counter(
                parameter.get("valueString", parameter.get("valueInteger64")),
                "events-since-subscription-start",
            )
        elif name == "notification-event":
            for part in _objects(parameter.get("part"), "Parameters.parameter.part"):
                if part.get("name") == "focus":
                    focus = _reference(part.get("valueReference"))
                    if focus:
                        focuses.append(focus)
    return kind, subscription, since, focuses


def _status_r4b(status: dict[str, Any]) -> tuple[str | None, str | None, int | None, list[str]]:
    focuses = [
        focus
        for event in _objects(status.get("notificationEvent"), "SubscriptionStatus.notificationEvent")
        if (focus := _reference(event.get("focus")))
    ]
    since = _counter(status.get("eventsSinceSubscriptionStart"), "eventsSinceSubscriptionStart")
    return status.get("type"), _reference(status.get("subscription")), since, focuses


def _imaging_study_focus(reference: str) -> str | None:
    """`ImagingStudy/<id>` of a focus reference (relative or absolute, without _history)."""
    path = reference.split("/_history/", 1)[0].rstrip("/").split("/")
    if len(path) >= 2 and path[-2] == "ImagingStudy" and _FHIR_ID.fullmatch(path[-1]):
        return f"ImagingStudy/{path[-1]}"
    return None


EVENTS_OPERATION = (
    "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-events"
)


def offers_events_operation(capability: Any) -> bool:
    """Whether a CapabilityStatement offers the Backport IG's `$events` on Subscription (by the
    operation's name or its definition)."""
    if not isinstance(capability, dict) or not isinstance(capability.get("rest"), list):
        return False
    for rest in capability["rest"]:
        resources = rest.get("resource") if isinstance(rest, dict) else None
        for resource in resources if isinstance(resources, list) else []:
            if not isinstance(resource, dict) or resource.get("type") != "Subscription":
                continue
            operations = resource.get("operation")
            for operation in operations if isinstance(operations, list) else []:
                if not isinstance(operation, dict):
                    continue
                name = str(operation.get("name", "")).lstrip("$")
                definition = str(operation.get("definition", "")).split("|", 1)[0]
                if name == "events" or definition == EVENTS_OPERATION:
                    return True
    return False


def subscription_reference(reference: str) -> str | None:
    """`Subscription/<id>` of a notification's subscription reference (relative or absolute)."""
    path = reference.split("/_history/", 1)[0].rstrip("/").split("/")
    if len(path) >= 2 and path[-2] == "Subscription" and _FHIR_ID.fullmatch(path[-1]):
        return f"Subscription/{path[-1]}"
    return None


def parse_posted_body(body: bytes) -> Notification:
    """Read a non-empty POST to the rest-hook endpoint (see the module docstring)."""
    return parse_notification(read_json(body, fhir=True))


def parse_notification(document: Any) -> Notification:
    """Read a notification (or resource) already parsed from JSON: a POSTed body, or the
    Bundle a server's `$events` answers with."""
    if not isinstance(document, dict):
        raise InvalidMessage("the body must be a FHIR resource (a notification Bundle)")
    resource_type = document.get("resourceType")
    if resource_type == "ImagingStudy":
        return Notification(
            kind="resources", imaging_studies=(imaging_study_of(document),), bundle=False
        )
    if resource_type is None:
        raise InvalidMessage(
            "the body has no resourceType: a notification Bundle or an ImagingStudy is expected"
        )
    if resource_type != "Bundle":
        raise InvalidMessage(
            "the body must be a notification Bundle or an ImagingStudy, "
            f"not {str(resource_type)[:40]!r}"
        )
    entries = document.get("entry", [])
    if not isinstance(entries, list):
        raise InvalidMessage("Bundle.entry must be a list of objects")
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InvalidMessage(f"Bundle.entry.{index} must be an object")
        if entry.get("resource") is not None and not isinstance(entry["resource"], dict):
            raise InvalidMessage(f"Bundle.entry.{index}.resource must be an object")
    resources = [entry.get("resource") for entry in entries]
    studies = tuple(
        imaging_study_of(resource)
        for resource in resources
        if resource is not None and resource.get("resourceType") == "ImagingStudy"
    )
    status = next(
        (r for r in resources if r is not None and r.get("resourceType") in _STATUS_RESOURCES),
        None,
    )
    if status is None:
        return Notification(kind="resources", imaging_studies=studies, event_count=len(studies))
    reader = _status_r4 if status["resourceType"] == "Parameters" else _status_r4b
    kind, subscription, since, focuses = reader(status)
    if kind is None:
        raise InvalidMessage(
            f"the notification's status ({status['resourceType']}) names no type; expected one "
            f"of {', '.join(NOTIFICATION_TYPES)}"
        )
    if kind not in NOTIFICATION_TYPES:
        raise InvalidMessage(
            f"notification type {str(kind)[:40]!r} is not one of {', '.join(NOTIFICATION_TYPES)}"
        )
    carried = {f"ImagingStudy/{study.get('id')}" for study in studies}
    to_read = tuple(
        dict.fromkeys(
            focus
            for reference in focuses
            if (focus := _imaging_study_focus(reference)) is not None and focus not in carried
        )
    )
    return Notification(
        kind=kind,
        subscription=subscription,
        events_since_start=since,
        event_count=max(len(focuses), len(studies)),
        imaging_studies=studies,
        focus_references=to_read,
    )
