"""Wiring of the inference service: bus, blob store, registry, model server clients."""

from __future__ import annotations

from services.inference.handlers import RunModel
from services.inference.settings import InferenceSettings
from shared.bus import Bus
from shared.messages import StudyFetched
from shared.registry import load_registry
from shared.runtime import ServiceApp
from shared.settings import RadmeshSettings
from shared.storage import BlobStore

SERVICE = "inference"


def build_app(settings: RadmeshSettings, own: InferenceSettings) -> ServiceApp:
    registry = load_registry(settings.registry_path)
    bus = Bus(settings.broker, SERVICE)
    run_model = RunModel(registry, BlobStore(settings.storage.blob_dir))
    bus.consume(StudyFetched, run_model)

    async def start() -> None:
        await bus.start()
        await bus.declare([StudyFetched.event_type])

    async def stop() -> None:
        await bus.stop()
        await run_model.close()

    async def ready() -> bool:
        return await bus.broker.ping(timeout=2.0)

    return ServiceApp(name=SERVICE, start=start, stop=stop, ready=ready)
