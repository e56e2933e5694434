"""Wiring of the fetcher: bus, PACS client, blob store, registry."""

from __future__ import annotations

from services.fetcher.handlers import FetchStudy
from services.fetcher.settings import FetcherSettings
from shared.bus import Bus
from shared.dicomweb import DicomWebClient
from shared.messages import StudyDetected
from shared.registry import load_registry
from shared.runtime import ServiceApp
from shared.settings import RadmeshSettings
from shared.storage import BlobStore

SERVICE = "fetcher"


def build_app(settings: RadmeshSettings, own: FetcherSettings) -> ServiceApp:
    registry = load_registry(settings.registry_path)
    bus = Bus(settings.broker, SERVICE)
    dicomweb = DicomWebClient(settings.dicomweb)
    bus.consume(StudyDetected, FetchStudy(registry, dicomweb, BlobStore(settings.storage.blob_dir)))

    async def start() -> None:
        await bus.start()
        await bus.declare([StudyDetected.event_type])

    async def stop() -> None:
        await bus.stop()
        await dicomweb.close()

    async def ready() -> bool:
        return await bus.broker.ping(timeout=2.0)

    return ServiceApp(name=SERVICE, start=start, stop=stop, ready=ready)
