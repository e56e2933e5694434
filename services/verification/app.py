"""Wiring of the verification service: bus, FHIR client, the review desk and its HTTP API."""

from __future__ import annotations

from services.verification.handlers import (
    CreateVerificationTask,
    ReviewApi,
    bearer_token_middleware,
)
from services.verification.review import ReviewDesk
from services.verification.settings import VerificationSettings
from shared.bus import Bus
from shared.fhir import FhirClient
from shared.messages import ResultsPosted
from shared.runtime import ServiceApp, bus_service
from shared.settings import RadmeshSettings

SERVICE = "verification"


def build_app(settings: RadmeshSettings, own: VerificationSettings) -> ServiceApp:
    bus = Bus(settings.broker, SERVICE)
    fhir = FhirClient(settings.fhir)
    bus.consume(ResultsPosted, CreateVerificationTask(fhir))
    desk = ReviewDesk(fhir, bus.publish, settings.fhir.base_url, own.worklist_limit)

    return bus_service(
        SERVICE,
        bus,
        close=[fhir.close],
        routes=ReviewApi(desk).routes(),
        middlewares=[bearer_token_middleware(own.api_token.get_secret_value())],
    )
