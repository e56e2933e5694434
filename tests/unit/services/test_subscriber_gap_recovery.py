"""services.subscriber.handlers: a gap in a Subscription's event counter is recovered through
the server's `$events` (the Backport IG's operation) when its CapabilityStatement offers it,
else (or when `$events` fails) by a search of what changed. The FHIR server is a stub here: the
HAPI radmesh is tested against does not offer `$events` (the search path runs against it in
tests/integration/test_subscriber.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from services.subscriber.handlers import StudyAnnouncer
from services.subscriber.notifications import (
    EVENTS_OPERATION,
    offers_events_operation,
    parse_posted_body,
)
from services.subscriber.settings import SubscriberSettings
from shared.errors import RemoteRejected
from tests.subscriptions_backport import r4_notification

SUBSCRIPTION = "Subscription/backport-r4"


def _capability(*operations: dict[str, str]) -> dict[str, Any]:
    return {
        "resourceType": "CapabilityStatement",
        "rest": [{"resource": [{"type": "Subscription", "operation": list(operations)}]}],
    }


class StubFhir:
    """The calls the recovery makes, answered from fixed documents and recorded."""

    def __init__(self, capability: dict[str, Any], events: dict[str, Any] | Exception) -> None:
        self.capability = capability
        self.events = events
        self.calls: list[tuple[str, dict[str, Any] | None]] = []

    async def execute(
        self, path: str, method: str = "post", params: dict[str, Any] | None = None
    ) -> Any:
        self.calls.append((path, params))
        if path == "metadata":
            return self.capability
        if isinstance(self.events, Exception):
            raise self.events
        return self.events

    async def read_resource(self, reference: str) -> dict[str, Any]:
        self.calls.append((reference, None))
        return {
            "resourceType": "ImagingStudy",
            "id": reference.split("/")[1],
            "status": "available",
            "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.3"}],
            "subject": {"reference": "Patient/p"},
        }


def _announcer(
    fhir: StubFhir, monkeypatch: pytest.MonkeyPatch
) -> tuple[StudyAnnouncer, list[str]]:
    """An announcer on the stub whose announcing and searching only record what they got."""
    announced: list[str] = []
    bus = SimpleNamespace(publish=None)  # nothing is published here: announce is recorded
    announcer = StudyAnnouncer(SubscriberSettings(), None, fhir, None, bus)  # type: ignore[arg-type]

    async def announce(study: dict[str, Any], source: str, notes: Any = None) -> int:
        announced.append(f"ImagingStudy/{study['id']}")
        return 1

    async def poll_updated(source: str, since: str | None = None) -> int:
        announced.append("search")
        return 0

    monkeypatch.setattr(announcer, "announce", announce)
    monkeypatch.setattr(announcer, "poll_updated", poll_updated)
    return announcer, announced


async def _notify_with_gap(announcer: StudyAnnouncer) -> None:
    first = r4_notification("event-notification", 1, ["ImagingStudy/seen"])
    await announcer.announce_notification(parse_posted_body(_json(first)))
    # events 2 and 3 never came; this heartbeat says 3 happened
    await announcer.announce_notification(parse_posted_body(_json(r4_notification("heartbeat", 3))))


def _json(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


def test_the_events_operation_is_recognised_by_name_or_definition() -> None:
    assert offers_events_operation(_capability({"name": "events"}))
    assert offers_events_operation(_capability({"name": "x", "definition": EVENTS_OPERATION}))
    assert not offers_events_operation(_capability({"name": "status"}))
    assert not offers_events_operation({"resourceType": "CapabilityStatement"})
    assert not offers_events_operation("not a capability")


async def test_a_gap_is_recovered_through_events_asking_for_exactly_the_missed_numbers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server offers `$events`: the subscriber asks it for events 2..3 (id-only) and
    announces the ImagingStudies they name; no search."""
    replay = r4_notification("query-event", 3, ["ImagingStudy/missed-2", "ImagingStudy/missed-3"])
    fhir = StubFhir(_capability({"name": "events", "definition": EVENTS_OPERATION}), replay)
    announcer, announced = _announcer(fhir, monkeypatch)
    await _notify_with_gap(announcer)
    assert (
        f"{SUBSCRIPTION}/$events",
        {"eventsSinceNumber": 2, "eventsUntilNumber": 3, "content": "id-only"},
    ) in fhir.calls
    assert announced == ["ImagingStudy/seen", "ImagingStudy/missed-2", "ImagingStudy/missed-3"]


async def test_a_server_without_events_or_a_failing_events_falls_back_to_the_search(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No `$events` in the CapabilityStatement: a search, and `$events` is never called; a
    `$events` the server then refuses: a search too."""
    fhir = StubFhir(_capability({"name": "status"}), r4_notification("query-event", 3))
    announcer, announced = _announcer(fhir, monkeypatch)
    await _notify_with_gap(announcer)
    assert announced == ["ImagingStudy/seen", "search"]
    assert not [path for path, _ in fhir.calls if path.endswith("$events")]

    refusing = StubFhir(
        _capability({"name": "events"}),
        RemoteRejected("FHIR GET $events: not supported", url="x", status=501),
    )
    announcer, announced = _announcer(refusing, monkeypatch)
    await _notify_with_gap(announcer)
    assert announced == ["ImagingStudy/seen", "search"]
