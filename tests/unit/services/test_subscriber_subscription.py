"""services.subscriber.subscription: which Subscription radmesh asks a FHIR server for, read
from its CapabilityStatement, and what it looks like."""

from __future__ import annotations

from typing import Any

from services.subscriber.settings import SubscriberSettings
from services.subscriber.subscription import (
    BACKPORT_SUBSCRIPTION_PROFILE,
    TOPIC_CANONICAL_EXTENSION,
    choose_subscription_kind,
    subscription_resource,
)

TOPIC = "http://radmesh.org/fhir/SubscriptionTopic/imaging-study-available"
R4_SERVER = (
    "http://hl7.org/fhir/uv/subscriptions-backport/CapabilityStatement/backport-subscription-server-r4"
)


def _capability(
    *, instantiates: list[str] | None = None, profiles: list[str] | None = None, topics: list[str]
) -> dict[str, Any]:
    subscription: dict[str, Any] = {
        "type": "Subscription",
        "supportedProfile": profiles or [],
        "extension": [{"url": TOPIC_CANONICAL_EXTENSION, "valueCanonical": t} for t in topics],
    }
    return {
        "resourceType": "CapabilityStatement",
        "instantiates": instantiates or [],
        "rest": [{"resource": [{"type": "Patient"}, subscription]}],
    }


def test_a_server_advertising_the_backport_ig_and_the_topic_gets_a_topic_subscription() -> None:
    settings = SubscriberSettings()
    for capability in (
        _capability(instantiates=[R4_SERVER], topics=[TOPIC]),
        _capability(profiles=[BACKPORT_SUBSCRIPTION_PROFILE], topics=["other", TOPIC]),
    ):
        assert choose_subscription_kind(capability, settings)[0] == "topic"


def test_without_the_ig_or_without_the_topic_a_criteria_subscription_says_why() -> None:
    settings = SubscriberSettings()
    kind, why = choose_subscription_kind(_capability(topics=[TOPIC]), settings)
    assert (kind, why) == ("criteria", "the server does not advertise the Subscriptions Backport IG")
    kind, why = choose_subscription_kind(_capability(instantiates=[R4_SERVER], topics=[]), settings)
    assert kind == "criteria" and TOPIC in why
    assert choose_subscription_kind({"resourceType": "CapabilityStatement"}, settings)[0] == (
        "criteria"
    )


def test_the_setting_overrides_what_the_server_advertises() -> None:
    forced = SubscriberSettings(subscription_kind="topic")
    assert choose_subscription_kind(_capability(topics=[]), forced)[0] == "topic"
    plain = SubscriberSettings(subscription_kind="criteria")
    capability = _capability(instantiates=[R4_SERVER], topics=[TOPIC])
    assert choose_subscription_kind(capability, plain)[0] == "criteria"


def test_the_topic_subscription_is_the_backport_profile_with_filter_and_id_only_payload() -> None:
    settings = SubscriberSettings(public_url="http://127.0.0.1:9999")
    topic = subscription_resource("topic", settings)
    assert topic["meta"]["profile"] == [BACKPORT_SUBSCRIPTION_PROFILE]
    assert topic["criteria"] == TOPIC
    (criteria,) = topic["_criteria"]["extension"]
    assert criteria["valueString"] == "ImagingStudy?status=available"
    (payload,) = topic["channel"]["_payload"]["extension"]
    assert payload["valueCode"] == "id-only"
    assert topic["channel"]["endpoint"] == "http://127.0.0.1:9999/fhir"
    plain = subscription_resource("criteria", settings)
    assert "meta" not in plain and plain["criteria"] == "ImagingStudy?status=available"
    assert plain["channel"]["header"] == topic["channel"]["header"]
