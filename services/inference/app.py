"""Wiring of the inference service: bus, blob store, registry, model server clients."""

from __future__ import annotations

from services.inference.handlers import RunModel
from services.inference.settings import InferenceSettings
from shared.bus import Bus
from shared.messages import StudyFetched
from shared.registry import load_registry
from shared.runtime import ServiceApp, bus_service
from shared.settings import RadmeshSettings
from shared.storage import BlobStore

SERVICE = "inference"


def build_app(settings: RadmeshSettings, own: InferenceSettings) -> ServiceApp:
    registry = load_registry(settings.registry_path)
    bus = Bus(settings.broker, SERVICE)
    run_model = RunModel(registry, BlobStore(settings.storage.blob_dir))
    bus.consume(StudyFetched, run_model)

    return bus_service(SERVICE, bus, close=[run_model.close])
