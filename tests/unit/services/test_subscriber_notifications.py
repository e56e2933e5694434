"""services.subscriber.notifications: what each Subscriptions Backport notification (R4, R4B),
another Bundle or a bare ImagingStudy POSTed to the endpoint asks the subscriber to do."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from services.subscriber.notifications import parse_posted_body
from shared.errors import InvalidMessage
from tests.subscriptions_backport import r4_notification, r4b_notification

Builder = Callable[..., dict[str, Any]]
BOTH = pytest.mark.parametrize("build", [r4_notification, r4b_notification], ids=["R4", "R4B"])


def _study(study_id: str = "is-1") -> dict[str, Any]:
    return {
        "resourceType": "ImagingStudy",
        "id": study_id,
        "status": "available",
        "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.3"}],
        "subject": {"reference": "Patient/p"},
    }


def _body(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


@BOTH
def test_handshake_and_heartbeat_name_their_subscription_and_carry_no_event(
    build: Builder,
) -> None:
    """A handshake or heartbeat is read with its Subscription and counter, and asks for nothing."""
    for kind, since in (("handshake", 0), ("heartbeat", 7)):
        notification = parse_posted_body(_body(build(kind, since)))
        assert (notification.kind, notification.events_since_start) == (kind, since)
        assert notification.subscription is not None
        assert notification.subscription.startswith("Subscription/")
        assert not notification.carries_events
        assert notification.imaging_studies == () and notification.focus_references == ()


@BOTH
def test_full_resource_event_carries_the_imaging_study(build: Builder) -> None:
    """A full-resource event-notification hands over the ImagingStudy itself (nothing to read)."""
    body = _body(build("event-notification", 3, ["ImagingStudy/is-1"], [_study()]))
    notification = parse_posted_body(body)
    assert notification.carries_events and notification.event_count == 1
    assert [study["id"] for study in notification.imaging_studies] == ["is-1"]
    assert notification.focus_references == ()


@BOTH
def test_id_only_event_names_the_focus_to_read(build: Builder) -> None:
    """An id-only event-notification names ImagingStudy focuses (absolute or with _history
    reduced to ImagingStudy/<id>); a focus of another type is not radmesh's."""
    focuses = [
        "http://127.0.0.1/fhir/ImagingStudy/is-2/_history/3",
        "ImagingStudy/is-3",
        "Patient/p",
    ]
    notification = parse_posted_body(_body(build("event-notification", 5, focuses)))
    assert notification.focus_references == ("ImagingStudy/is-2", "ImagingStudy/is-3")
    assert notification.imaging_studies == ()
    assert notification.event_count == 3


@BOTH
def test_empty_event_names_nothing(build: Builder) -> None:
    """An empty-payload event-notification names no study: the subscriber searches instead."""
    notification = parse_posted_body(_body(build("event-notification", 2)))
    assert notification.carries_events
    assert notification.imaging_studies == () and notification.focus_references == ()


def test_a_bare_imaging_study_is_taken_like_a_put() -> None:
    """A server that POSTs the changed ImagingStudy itself gets it announced, as with a PUT."""
    notification = parse_posted_body(_body(_study("is-9")))
    assert notification.kind == "resources"
    assert [study["id"] for study in notification.imaging_studies] == ["is-9"]


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"resourceType": "Patient", "id": "p"}, "notification Bundle or an ImagingStudy"),
        ([1, 2], "must be a FHIR resource"),
        (r4_notification("made-up", 1), "notification type 'made-up'"),
        (
            r4b_notification("heartbeat", 1)
            | {
                "entry": [
                    {
                        "resource": {
                            "resourceType": "SubscriptionStatus",
                            "type": "heartbeat",
                            "eventsSinceSubscriptionStart": "many",
                        }
                    }
                ]
            },
            "eventsSinceSubscriptionStart is not a whole number",
        ),
        ({"resourceType": "Bundle", "entry": [{"resource": _study() | {"status": 5}}]}, "status"),
    ],
)
def test_what_is_not_a_notification_is_refused_saying_why(document: Any, expected: str) -> None:
    """Another resource, a non-object, an unknown notification type, a counter that is not a
    number or an invalid ImagingStudy inside: InvalidMessage (a 400) saying what is wrong."""
    with pytest.raises(InvalidMessage) as raised:
        parse_posted_body(json.dumps(document).encode())
    assert expected in str(raised.value)
