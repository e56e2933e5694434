"""Wiring of the mapper: bus, FHIR client, PACS client, registry; model runs and imported SRs."""

from __future__ import annotations

from services.mapper.handlers import MapResults, SupersedeReports
from services.mapper.imports import ImportResults
from services.mapper.redrive import RedriveRuns
from services.mapper.settings import MapperSettings
from shared import readiness
from shared.bus import Bus
from shared.dicomweb import DicomWebClient
from shared.fhir import FhirClient, retried_at_start
from shared.fhir_extensions import publish_extension_definitions
from shared.messages import (
    FindingRejected,
    FindingVerified,
    InferenceCompleted,
    ResultsRetracted,
    StructuredReportDetected,
)
from shared.registry import load_registry
from shared.runtime import Periodic, ServiceApp, bus_service
from shared.settings import RadmeshSettings

SERVICE = "mapper"


def build_app(settings: RadmeshSettings, own: MapperSettings, service: str = SERVICE) -> ServiceApp:
    """The mapper; `service` names its queues: another name gives an instance queues of
    its own, as the tests do."""
    registry = load_registry(settings.registry_path)
    bus = Bus(settings.broker, service)
    fhir = FhirClient(settings.fhir)
    pacs = DicomWebClient(settings.dicomweb)  # other products' SRs are read from it
    dicomweb = pacs if own.write_structured_report else None
    results = MapResults(registry, fhir, dicomweb)
    bus.consume(InferenceCompleted, results)
    bus.consume(StructuredReportDetected, ImportResults(registry, pacs, results))
    if dicomweb is not None:
        supersede = SupersedeReports(registry, fhir, dicomweb, own.verifying_organization)
        bus.consume(FindingVerified, supersede.on_verified)
        bus.consume(FindingRejected, supersede.on_rejected)
        bus.consume(ResultsRetracted, supersede.on_retracted)

    redrive = RedriveRuns(
        registry,
        fhir,
        bus.publish,
        hours=own.redrive_hours,
        grace_seconds=own.redrive_grace_seconds,
        dicomweb=dicomweb,
    )
    sweep = Periodic(redrive.sweep, own.redrive_interval_seconds, "redrive_sweep_failed")

    async def publish_definitions() -> None:
        await retried_at_start(
            lambda: publish_extension_definitions(fhir),
            seconds=own.startup_seconds,
            retry_event="extension_definitions_retry",
            failed_event="extension_definitions_not_published",
        )

    close = [sweep.stop, fhir.close, pacs.close]
    return bus_service(
        service,
        bus,
        on_start=[publish_definitions, sweep.start],
        close=close,
        requires=[readiness.fhir_server(settings), readiness.pacs(settings)],
    )
