"""Wiring of the subscriber: hook routes, FHIR and PACS clients, bus, the Subscription."""

from __future__ import annotations

from aiohttp import web

from services.subscriber.handlers import StudyAnnouncer
from services.subscriber.hl7_orders import Hl7Listener
from services.subscriber.settings import SubscriberSettings
from services.subscriber.subscription import ensure_subscription_at_start
from shared.bus import Bus
from shared.dicomweb import DicomWebClient
from shared.fhir import FhirClient
from shared.readiness import fhir_server
from shared.registry import load_registry
from shared.runtime import ServiceApp, bus_service
from shared.settings import RadmeshSettings

SERVICE = "subscriber"


def build_app(settings: RadmeshSettings, own: SubscriberSettings) -> ServiceApp:
    registry = load_registry(settings.registry_path)
    bus = Bus(settings.broker, SERVICE)
    fhir = FhirClient(settings.fhir)
    dicomweb = DicomWebClient(settings.dicomweb)
    announcer = StudyAnnouncer(own, registry, fhir, dicomweb, bus)

    listener = (
        Hl7Listener(own.host, own.mllp_port, announcer.announce_hl7_order)
        if own.mllp_port
        else None
    )

    async def subscribe() -> None:
        if own.ensure_subscription:
            await ensure_subscription_at_start(fhir, own)
        announcer.start_reconciliation()
        await announcer.start_claim_watch()
        if listener is not None:
            await listener.start()

    async def stop_listening() -> None:
        if listener is not None:
            await listener.stop()

    return bus_service(
        SERVICE,
        bus,
        on_start=[subscribe],
        close=[stop_listening, announcer.stop_reconciliation, fhir.close, dicomweb.close],
        routes=[
            web.put("/fhir/ImagingStudy/{id}", announcer.rest_hook_with_payload),
            web.post("/fhir", announcer.rest_hook_without_payload),
            web.post("/pacs/stable-study", announcer.pacs_stable_study),
            web.post("/pacs/deleted", announcer.pacs_deleted),
        ],
        requires=[fhir_server(settings)],
    )
