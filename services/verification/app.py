"""Wiring of the verification service: bus, FHIR client, the review desk and its HTTP API."""

from __future__ import annotations

from services.verification.handlers import PROTECTED_PATHS, CreateVerificationTask, ReviewApi
from services.verification.review import ReviewDesk
from services.verification.reviewers import ReviewerDirectory
from services.verification.settings import VerificationSettings
from shared.auth import TokenVerifier, oidc_middleware
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
    tokens = TokenVerifier(settings.oidc)

    return bus_service(
        SERVICE,
        bus,
        close=[fhir.close, tokens.close],
        routes=ReviewApi(desk, ReviewerDirectory(fhir)).routes(),
        middlewares=[oidc_middleware(tokens, PROTECTED_PATHS)],
    )
