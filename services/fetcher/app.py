"""Wiring of the fetcher: bus, PACS client, blob store and its retention sweep, registry."""

from __future__ import annotations

from services.fetcher.handlers import FetchStudy
from services.fetcher.pacs import PacsDirectory
from services.fetcher.retention import RetentionSweep
from services.fetcher.settings import FetcherSettings
from shared import readiness
from shared.bus import Bus
from shared.dicomweb import DicomWebClient
from shared.messages import StudyDetected
from shared.registry import load_registry
from shared.runtime import ServiceApp, bus_service
from shared.settings import RadmeshSettings
from shared.storage import BlobStore

SERVICE = "fetcher"


def build_app(
    settings: RadmeshSettings, own: FetcherSettings, service: str = SERVICE
) -> ServiceApp:
    """The fetcher; `service` names its queues: another name gives an instance queues of
    its own, as the tests do."""
    registry = load_registry(settings.registry_path)
    bus = Bus(settings.broker, service)
    dicomweb = DicomWebClient(settings.dicomweb)
    store = BlobStore(settings.storage.blob_dir)
    pacs = PacsDirectory(dicomweb, settings.dicomweb, own.allowed_pacs)
    bus.consume(StudyDetected, FetchStudy(registry, dicomweb, store, pacs))
    sweep = RetentionSweep(store, settings.storage)

    return bus_service(
        service,
        bus,
        on_start=[sweep.start],
        close=[sweep.stop, pacs.close, dicomweb.close],
        requires=[readiness.pacs(settings)],
    )
