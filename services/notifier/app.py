"""Wiring of the notifier: bus, FHIR client, registry; it raises alerts and follows them up
after the radiologist's verdict."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from services.notifier.handlers import EscalateAlerts, FollowUpAlerts, RaiseAlerts
from services.notifier.hl7_results import MllpSender, SendResults
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
from shared.readiness import Dependency, fhir_server
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
    requires = [fhir_server(settings)]
    on_start: list[Callable[[], Awaitable[None]]] = []
    close: list[Callable[[], Awaitable[None]]] = []
    if own.hl7_results_host:
        # Results out over HL7 v2 on queues of their own: a receiver that is down delays the
        # ORUs (retried, then dead-lettered), never the alerts.
        hl7_bus = Bus(settings.broker, f"{service}-hl7")
        sender = MllpSender(
            own.hl7_results_host, own.hl7_results_port, own.hl7_results_timeout_seconds
        )
        results = SendResults(
            fhir,
            sender,
            receiving_application=own.hl7_receiving_application,
            receiving_facility=own.hl7_receiving_facility,
            sending_facility=own.hl7_sending_facility,
        )
        hl7_bus.consume(ResultsPosted, results.on_posted)
        hl7_bus.consume(FindingVerified, results.on_changed)
        hl7_bus.consume(FindingRejected, results.on_changed)
        hl7_bus.consume(ResultsRetracted, results.on_changed)

        async def start_hl7() -> None:
            await hl7_bus.start()
            await hl7_bus.declare()

        on_start.append(start_hl7)
        close.append(hl7_bus.stop)
        requires.append(
            Dependency("the HL7 results receiver", f"mllp://{sender.host}:{sender.port}")
        )
    return bus_service(
        service, bus, on_start=on_start, close=[*close, fhir.close], requires=requires
    )
