"""Wiring of the verification service: bus, FHIR client, PACS (key images), registry, the
review desk, its HTTP API and its web page."""

from __future__ import annotations

from services.verification.acknowledgements import AlertDesk
from services.verification.alert_link_page import AlertLinkPage
from services.verification.audit import AuditTrail
from services.verification.backlog import BacklogGauge
from services.verification.handlers import PROTECTED_PATHS, CreateVerificationTask, ReviewApi
from services.verification.outbox import VerdictOutbox
from services.verification.page import ReviewPage
from services.verification.retractions import RetractResults
from services.verification.review import ReviewDesk
from services.verification.reviewers import ReviewerDirectory
from services.verification.settings import VerificationSettings
from shared.auth import TokenVerifier, oidc_middleware
from shared.bus import Bus
from shared.dicomweb import DicomWebClient
from shared.errors import RadmeshError
from shared.fhir import FhirClient
from shared.messages import ResultsPosted, StudyRetracted
from shared.readiness import fhir_server
from shared.registry import load_registry
from shared.runtime import Periodic, ServiceApp, bus_service
from shared.settings import RadmeshSettings

SERVICE = "verification"


def build_app(
    settings: RadmeshSettings, own: VerificationSettings, service: str = SERVICE
) -> ServiceApp:
    """The verification service; `service` names its queues: another name gives an instance queues of
    its own, as the tests do."""
    bus = Bus(settings.broker, service)
    fhir = FhirClient(settings.fhir)
    bus.consume(ResultsPosted, CreateVerificationTask(fhir))
    bus.consume(StudyRetracted, RetractResults(fhir, settings.fhir.base_url))
    pacs = DicomWebClient(settings.dicomweb)
    outbox = VerdictOutbox(fhir, bus.publish, own.outbox_sweep_seconds, own.outbox_grace_seconds)
    desk = ReviewDesk(
        fhir,
        bus.publish,
        settings.fhir.base_url,
        own.worklist_limit,
        registry=load_registry(settings.registry_path),
        pacs=pacs,
        outbox=outbox,
    )
    tokens = TokenVerifier(settings.oidc)
    audit = AuditTrail(fhir)
    backlog = Periodic(
        BacklogGauge(desk.open_task_counts).look,
        own.backlog_interval_seconds,
        "backlog_unreadable",
        tolerated=(RadmeshError,),
    )

    return bus_service(
        service,
        bus,
        on_start=[outbox.start, backlog.start],
        close=[backlog.stop, outbox.stop, fhir.close, tokens.close, pacs.close],
        routes=[
            *ReviewApi(desk, ReviewerDirectory(fhir), audit).routes(),
            *ReviewPage(tokens, own.viewer_url).routes(),
            *AlertLinkPage(
                AlertDesk(fhir, settings.fhir.base_url), audit, settings.alert_links
            ).routes(),
        ],
        middlewares=[oidc_middleware(tokens, PROTECTED_PATHS)],
        requires=[fhir_server(settings)],
    )
