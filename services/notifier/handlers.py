"""results.posted → alerts for critical findings (one FHIR transaction) → alert.raised;
finding.rejected → those alerts withdrawn; finding.verified → their recipients told the
finding was confirmed (one FHIR transaction each)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from services.notifier.alerts import (
    AlertContext,
    AlertEntries,
    alert_entries,
    critical_findings,
)
from services.notifier.escalation import escalation_entry
from services.notifier.withdrawals import RaisedAlert, confirmation_entry, withdrawal_entries
from shared.alerts import alert_key
from shared.errors import InvalidMessage
from shared.fhir import FhirClient, reference_of, transaction_bundle
from shared.identifiers import business_identifier
from shared.messages import (
    AlertEscalationDue,
    AlertRaised,
    Event,
    FindingRejected,
    FindingVerified,
    ModelRef,
    ResultsPosted,
    ResultsRetracted,
)
from shared.metrics import ALERT_ESCALATIONS, ALERTS_RAISED, alert_labels
from shared.registry import EscalationStep, Registry
from shared.settings import AlertLinkSettings

log = structlog.get_logger(__name__)


class RaiseAlerts:
    """Handler of results.posted: one alert per critical finding, one alert.raised each.

    The ordering provider is the `requester` of the study's ServiceRequest. When there is none
    (no ServiceRequest, or one without requester) the alert is still written — to the configured
    fallback recipient if there is one, otherwise without recipient — and a warning is logged:
    a critical finding must reach the record even when nobody can be named for it, and an
    active CommunicationRequest without recipient is visible to whoever works the alert queue.
    """

    def __init__(
        self,
        registry: Registry,
        fhir: FhirClient,
        fallback_recipient: str | None = None,
        escalation: EscalateAlerts | None = None,
        links: AlertLinkSettings | None = None,
    ) -> None:
        self.registry = registry
        self.fhir = fhir
        self.fallback_recipient = fallback_recipient
        self.escalation = escalation  # None: alerts do not escalate (no timers)
        self.links = links  # None: alerts carry no signed acknowledgement link

    async def __call__(self, event: ResultsPosted) -> Sequence[Event]:
        if event.rollout_mode == "shadow":
            log.info("alert_skipped", reason="shadow rollout: nothing clinical is written")
            return []
        critical = critical_findings(event, self.registry)
        if not critical:
            log.info(
                "no_critical_finding",
                model=event.model.id,
                version=event.model.version,
                findings=len(event.findings),
            )
            return []
        context = await self._context(event)
        alerts = [alert_entries(event, finding, context) for finding in critical]
        bundle = transaction_bundle([entry for alert in alerts for entry in alert.entries()])
        response = await self.fhir.transaction(bundle)
        raised = _alerts_raised(event, alerts, response.get("entry", []))
        for alert in alerts:
            ALERTS_RAISED.labels(
                finding=alert.critical.finding.finding_key,
                model=f"{event.model.id}/{event.model.version}",
            ).inc()
        if self.escalation is not None:
            for alert, sent in zip(alerts, raised, strict=True):
                assert isinstance(sent, AlertRaised)
                await self.escalation.start(event, alert.critical.finding.finding_key, sent)
        log.info(
            "critical_alerts_raised",
            model=event.model.id,
            version=event.model.version,
            findings=[
                f"{a.critical.finding.finding_key}[{a.critical.finding.index}]" for a in alerts
            ],
            has_recipient=context.recipient is not None,
        )
        return raised

    async def _context(self, event: ResultsPosted) -> AlertContext:
        service_request: dict[str, Any] = {}
        if event.study.service_request:
            service_request = dict(await self.fhir.execute(event.study.service_request, "get"))
        requester = (service_request.get("requester") or {}).get("reference")
        patient = event.study.patient or (service_request.get("subject") or {}).get("reference")
        recipient = requester or self.fallback_recipient
        if requester is None:
            log.warning(
                "critical_alert_without_requester",
                service_request=event.study.service_request,
                recipient="fallback" if recipient else "none",
                action="alert written without the ordering provider; route it by hand",
            )
        model_display = event.model.id
        try:
            model_display = self.registry.algorithm(event.model.id, event.model.version).display
        except KeyError:
            log.warning("model_not_in_registry", model=event.model.id, version=event.model.version)
        return AlertContext(
            patient=patient,
            recipient=recipient,
            encounter=event.study.encounter
            or (service_request.get("encounter") or {}).get("reference"),
            model_display=model_display,
            now=datetime.now(UTC),
            links=self.links,
        )


def _alerts_raised(
    event: ResultsPosted, alerts: list[AlertEntries], response_entries: list[dict[str, Any]]
) -> list[Event]:
    """One alert.raised per alert, with the references the server answered (created or found)."""
    references = iter(reference_of(entry) for entry in response_entries)
    raised: list[Event] = []
    for alert in alerts:
        communication = next(references)
        communication_request = next(references)
        consult = next(references) if alert.consult_service_request is not None else None
        flag = next(references) if alert.flag is not None else None
        raised.append(
            event.follow(
                AlertRaised,
                study=event.study,
                diagnostic_report=event.diagnostic_report,
                communication=communication,
                communication_request=communication_request,
                consult_service_request=consult,
                flag=flag,
            )
        )
    return raised


class FollowUpAlerts:
    """The radiologist's verdict reaches the alerts raised on the report, in one transaction
    each: `withdraw` (finding.rejected) revokes the CommunicationRequest and the consult,
    closes the Flag and tells the recipient the alert was withdrawn; `confirm`
    (finding.verified) tells the recipient a radiologist confirmed the finding (the alert stays
    open until acknowledged). A report without alerts changes nothing and says so."""

    def __init__(self, fhir: FhirClient, base_url: str) -> None:
        self.fhir = fhir
        self.base_url = base_url

    async def _alerts_of(self, diagnostic_report: str) -> list[RaisedAlert]:
        _, observations = await self.fhir.read_report_with_results(diagnostic_report)
        return [
            alert
            for key in filter(None, map(alert_key, observations))
            if (alert := await self._alert(key)) is not None
        ]

    async def withdraw(self, event: FindingRejected | ResultsRetracted) -> Sequence[Event]:
        alerts = await self._alerts_of(event.diagnostic_report)
        if not alerts:
            log.info(
                "no_alert_to_withdraw", reason=f"the {event.event_type} report raised no alert"
            )
            return []
        now = datetime.now(UTC)
        entries = [
            entry
            for alert in alerts
            for entry in withdrawal_entries(event, alert, now, self.base_url)
        ]
        await self.fhir.transaction(transaction_bundle(entries))
        log.info(
            "alerts_withdrawn",
            alerts=len(alerts),
            revoked=sum(1 for e in entries if e["request"]["method"] == "PUT"),
            reason_code=event.reason_code,
        )
        return []

    async def confirm(self, event: FindingVerified) -> Sequence[Event]:
        alerts = await self._alerts_of(event.diagnostic_report)
        if not alerts:
            log.info("no_alert_to_confirm", reason="the verified report raised no alert")
            return []
        now = datetime.now(UTC)
        entries = [confirmation_entry(event, alert, now) for alert in alerts]
        await self.fhir.transaction(transaction_bundle(entries))
        log.info("alerts_confirmed", alerts=len(alerts), amended=event.amended)
        return []

    async def _alert(self, key: str) -> RaisedAlert | None:
        async def one(resource_type: str) -> dict[str, Any] | None:
            identifier = business_identifier(resource_type, key)
            bundle = await self.fhir.execute(
                resource_type,
                "get",
                params={"identifier": f"{identifier['system']}|{identifier['value']}"},
            )
            return next((e["resource"] for e in bundle.get("entry", []) if "resource" in e), None)

        alert = RaisedAlert(
            key=key,
            communication=await one("Communication"),
            communication_request=await one("CommunicationRequest"),
            consult=await one("ServiceRequest"),
            flag=await one("Flag"),
        )
        if alert.communication is None and alert.communication_request is None:
            return None
        return alert


class EscalateAlerts:
    """Timed escalation of unacknowledged critical alerts (escalation.py). `start` sets the
    first step's timer when an alert is raised; handling `alert.escalation-due` writes the
    step's Communication (unless the alert was acknowledged or withdrawn meanwhile) and sets
    the next step's timer. Timers are delayed messages on the broker (`schedule`), so they
    survive restarts of the notifier and of RabbitMQ."""

    def __init__(
        self,
        registry: Registry,
        fhir: FhirClient,
        schedule: Callable[[Event, float], Awaitable[None]],
        fallback_recipient: str | None = None,
    ) -> None:
        self.registry = registry
        self.fhir = fhir
        self.schedule = schedule
        self.fallback_recipient = fallback_recipient

    def _chain(self, model: ModelRef, finding_key: str) -> tuple[EscalationStep, ...]:
        try:
            return self.registry.algorithm(model.id, model.version).finding(finding_key).escalation
        except KeyError:
            return ()

    async def start(self, posted: ResultsPosted, finding_key: str, raised: AlertRaised) -> None:
        chain = self._chain(posted.model, finding_key)
        if not chain:
            return
        due = raised.follow(
            AlertEscalationDue,
            study=posted.study,
            model=posted.model,
            finding_key=finding_key,
            communication=raised.communication,
            communication_request=raised.communication_request,
            step=1,
        )
        await self.schedule(due, chain[0].after_minutes * 60)

    async def _recipient(self, step: EscalationStep, due: AlertEscalationDue) -> str | None:
        if step.recipient == "fallback":
            return self.fallback_recipient
        if step.recipient not in ("requester", "ordering-department"):
            return step.recipient
        if not due.study.service_request:
            return None
        order = await self.fhir.read_resource(due.study.service_request)
        requester = (order.get("requester") or {}).get("reference")
        if step.recipient == "requester":
            return requester
        return await self._ordering_department(order, requester, due)

    async def _ordering_department(
        self, order: dict[str, Any], requester: str | None, due: AlertEscalationDue
    ) -> str | None:
        """The Organization that ordered the study: the requester's PractitionerRole's
        organization, else the order's Encounter's serviceProvider (the ward); None, logged,
        when the record names neither."""
        if requester and requester.startswith("PractitionerRole/"):
            role = await self.fhir.read_resource(requester)
            organization = (role.get("organization") or {}).get("reference")
            if organization:
                return str(organization)
        encounter = (order.get("encounter") or {}).get("reference") or due.study.encounter
        if encounter:
            visit = await self.fhir.read_resource(str(encounter))
            provider = (visit.get("serviceProvider") or {}).get("reference")
            if provider:
                return str(provider)
        log.warning(
            "ordering_department_unknown",
            reason="the requester is no PractitionerRole with an organization and the order's "
            "encounter names no serviceProvider",
        )
        return None

    async def __call__(self, due: AlertEscalationDue) -> Sequence[Event]:
        request = await self.fhir.read_resource(due.communication_request)
        if request.get("status") != "active":
            log.info(
                "escalation_stopped",
                step=due.step,
                reason="acknowledged" if request.get("status") == "completed" else "withdrawn",
            )
            return []
        chain = self._chain(due.model, due.finding_key)
        if due.step > len(chain):
            log.error("escalation_step_unknown", step=due.step, steps=len(chain))
            return []
        step = chain[due.step - 1]
        recipient = await self._recipient(step, due)
        original = await self.fhir.read_resource(due.communication)
        key = alert_key(original)
        if key is None:
            raise InvalidMessage(f"{due.communication} is not a radmesh alert")
        entry = escalation_entry(
            key, original, recipient, datetime.now(UTC), step=due.step, steps=len(chain)
        )
        response = await self.fhir.transaction(transaction_bundle([entry]))
        created = str(response["entry"][0]["response"]["status"]).startswith("201")
        if created:
            ALERT_ESCALATIONS.labels(**alert_labels(key), step=str(due.step)).inc()
        log.warning(
            "alert_escalated",
            step=due.step,
            steps=len(chain),
            recipient_kind=step.recipient.split("/")[0],
            has_recipient=recipient is not None,
            repeated=not created,
        )
        if created and due.step < len(chain):  # a repeated timer set the next one already
            next_due = due.follow(
                AlertEscalationDue,
                **due.model_dump(
                    include={
                        "study",
                        "model",
                        "finding_key",
                        "communication",
                        "communication_request",
                    }
                ),
                step=due.step + 1,
            )
            await self.schedule(next_due, chain[due.step].after_minutes * 60)
        return []
