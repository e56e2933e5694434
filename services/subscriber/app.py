"""Wiring of the subscriber: hook routes, FHIR and PACS clients, bus, the Subscription."""

from __future__ import annotations

from aiohttp import web

from services.subscriber.handlers import StudyAnnouncer
from services.subscriber.settings import SubscriberSettings
from services.subscriber.subscription import ensure_subscription
from shared.bus import Bus
from shared.dicomweb import DicomWebClient
from shared.fhir import FhirClient
from shared.registry import load_registry
from shared.runtime import ServiceApp
from shared.settings import RadmeshSettings

SERVICE = "subscriber"


def build_app(settings: RadmeshSettings, own: SubscriberSettings) -> ServiceApp:
    registry = load_registry(settings.registry_path)
    bus = Bus(settings.broker, SERVICE)
    fhir = FhirClient(settings.fhir)
    dicomweb = DicomWebClient(settings.dicomweb)
    announcer = StudyAnnouncer(own, registry, fhir, dicomweb, bus)

    async def start() -> None:
        await bus.start()
        await bus.declare([])
        if own.ensure_subscription:
            await ensure_subscription(fhir, own)

    async def stop() -> None:
        await bus.stop()
        await fhir.close()
        await dicomweb.close()

    async def ready() -> bool:
        return await bus.broker.ping(timeout=2.0)

    return ServiceApp(
        name=SERVICE,
        start=start,
        stop=stop,
        ready=ready,
        routes=[
            web.put("/fhir/ImagingStudy/{id}", announcer.rest_hook_with_payload),
            web.post("/fhir", announcer.rest_hook_without_payload),
            web.post("/pacs/stable-study", announcer.pacs_stable_study),
        ],
    )
