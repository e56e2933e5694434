"""Wiring of the notifier: bus, FHIR client, registry; it raises alerts and follows them up
after the radiologist's verdict."""

from __future__ import annotations

from services.notifier.handlers import EscalateAlerts, FollowUpAlerts, RaiseAlerts
from services.notifier.settings import NotifierSettings
from shared.bus import Bus
from shared.fhir import FhirClient
from shared.messages import (
    AlertEscalationDue,
    FindingRejected,
    FindingVerified,
    ResultsPosted,
    ResultsRetracted,
)
from shared.readiness import fhir_server
from shared.registry import load_registry
from shared.runtime import ServiceApp, bus_service
from shared.settings import RadmeshSettings

SERVICE = "notifier"


def build_app(
    settings: RadmeshSettings, own: NotifierSettings, service: str = SERVICE
) -> ServiceApp:
    """The notifier; `service` names its queues (and timers): another name gives an instance
    queues of its own, as the tests do."""
    registry = load_registry(settings.registry_path)
    bus = Bus(settings.broker, service)
    fhir = FhirClient(settings.fhir)
    escalate = EscalateAlerts(registry, fhir, bus.publish_delayed, own.fallback_recipient)
    bus.consume(
        ResultsPosted,
        RaiseAlerts(registry, fhir, own.fallback_recipient, escalate, settings.alert_links),
    )
    bus.consume(AlertEscalationDue, escalate)
    follow_up = FollowUpAlerts(fhir, settings.fhir.base_url)
    bus.consume(FindingRejected, follow_up.withdraw)
    bus.consume(ResultsRetracted, follow_up.withdraw)
    bus.consume(FindingVerified, follow_up.confirm)

    return bus_service(service, bus, close=[fhir.close], requires=[fhir_server(settings)])
