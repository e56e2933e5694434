"""Wiring of the inference service: bus, blob store, registry, model server clients."""

from __future__ import annotations

from services.inference.handlers import RunModel
from services.inference.settings import InferenceSettings
from shared.bus import Bus
from shared.messages import StudyFetched
from shared.readiness import model_servers
from shared.registry import load_registry
from shared.runtime import ServiceApp, bus_service
from shared.settings import RadmeshSettings
from shared.storage import BlobStore

SERVICE = "inference"


def build_app(
    settings: RadmeshSettings, own: InferenceSettings, service: str = SERVICE
) -> ServiceApp:
    """The inference service; `service` names its queues: another name gives an instance queues of
    its own, as the tests do."""
    registry = load_registry(settings.registry_path)
    bus = Bus(settings.broker, service)
    run_model = RunModel(registry, BlobStore(settings.storage.blob_dir))
    bus.consume(StudyFetched, run_model)

    return bus_service(service, bus, close=[run_model.close], requires=model_servers(registry))
