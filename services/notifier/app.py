"""Wiring of the notifier: bus, FHIR client, registry."""

from __future__ import annotations

from services.notifier.handlers import RaiseAlerts
from services.notifier.settings import NotifierSettings
from shared.bus import Bus
from shared.fhir import FhirClient
from shared.messages import ResultsPosted
from shared.registry import load_registry
from shared.runtime import ServiceApp
from shared.settings import RadmeshSettings

SERVICE = "notifier"


def build_app(settings: RadmeshSettings, own: NotifierSettings) -> ServiceApp:
    registry = load_registry(settings.registry_path)
    bus = Bus(settings.broker, SERVICE)
    fhir = FhirClient(settings.fhir)
    bus.consume(ResultsPosted, RaiseAlerts(registry, fhir, own.fallback_recipient))

    async def start() -> None:
        await bus.start()
        await bus.declare([ResultsPosted.event_type])

    async def stop() -> None:
        await bus.stop()
        await fhir.close()

    async def ready() -> bool:
        return await bus.broker.ping(timeout=2.0)

    return ServiceApp(name=SERVICE, start=start, stop=stop, ready=ready)
