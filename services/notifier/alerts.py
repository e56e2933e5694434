"""Which posted findings are critical, and the FHIR resources that alert about one of them.

A finding is critical when it is present and either the mapper marked it critical or the registry
declares its mapping critical: for an alert, a missed critical finding is worse than one too many.
Every alert is three resources written with conditional creates on deterministic identifiers
(`urn:radmesh:<type>` | `<study UID>/<model>/<version>/<finding key>/<index>`):

- Communication (completed): the alert as sent, from the model's Device to the ordering provider;
- CommunicationRequest (active): the closed loop, open until the provider acknowledges receipt;
- ServiceRequest (active order, stat): the consult the registry names for the finding, if any;
- Flag (active) on the patient: an open critical AI finding, until the alert is acknowledged
  or withdrawn (when the study has a patient: a Flag needs one).

The payload text names the finding, the model and the probability, never the patient.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.ai_transparency import AI_ASSERTED
from shared.alert_links import acknowledgement_url
from shared.alerts import ALERT_CATEGORY, FLAG_CATEGORY
from shared.codes import SNOMED_CT
from shared.fhir import conditional_create_entry
from shared.identifiers import business_identifier
from shared.messages import PostedFinding, ResultsPosted
from shared.registry import Algorithm, Coding, FindingMapping, Registry
from shared.settings import AlertLinkSettings

# The title of the signed acknowledgement link in an alert's payload (shared/alert_links.py).
ACK_TITLE = "Acknowledge this critical alert (signed link for the recipient)"

__all__ = [
    "AlertContext",
    "AlertEntries",
    "CriticalFinding",
    "alert_entries",
    "alert_text",
    "critical_findings",
]


@dataclass(frozen=True)
class CriticalFinding:
    """A posted finding that needs an alert, with what the registry says about it."""

    finding: PostedFinding
    display: str  # the finding's name (SNOMED CT display from the registry, else its key)
    body_site: str | None
    consult: Coding | None
    consult_specialty: str | None


@dataclass(frozen=True)
class AlertContext:
    """What the alert resources point at, resolved from the event and the study's ServiceRequest."""

    patient: str | None  # "Patient/<id>"
    recipient: str | None  # the ordering provider (or the configured fallback)
    encounter: str | None
    model_display: str
    now: datetime
    links: AlertLinkSettings | None = None  # signed acknowledgement links (shared.alert_links)


@dataclass(frozen=True)
class AlertEntries:
    """The transaction entries of one alert, in the order they are added to the Bundle."""

    critical: CriticalFinding
    communication: dict[str, Any]
    communication_request: dict[str, Any]
    consult_service_request: dict[str, Any] | None
    flag: dict[str, Any] | None = None

    def entries(self) -> list[dict[str, Any]]:
        entries = [self.communication, self.communication_request]
        if self.consult_service_request is not None:
            entries.append(self.consult_service_request)
        if self.flag is not None:
            entries.append(self.flag)
        return entries


def critical_findings(event: ResultsPosted, registry: Registry) -> list[CriticalFinding]:
    """The present findings that the mapper or the registry marks critical, in event order."""
    model: Algorithm | None
    try:
        model = registry.algorithm(event.model.id, event.model.version)
    except KeyError:
        model = None
    critical: list[CriticalFinding] = []
    for finding in event.findings:
        mapping = None
        if model is not None:
            mapping = next((m for m in model.findings if m.key == finding.finding_key), None)
        if not finding.present or not (finding.critical or (mapping and mapping.critical)):
            continue
        critical.append(
            CriticalFinding(
                finding=finding,
                display=_display(mapping) if mapping else finding.finding_key,
                body_site=mapping.body_site.display if mapping and mapping.body_site else None,
                consult=mapping.consult if mapping else None,
                consult_specialty=mapping.consult_specialty if mapping else None,
            )
        )
    return critical


def _display(mapping: FindingMapping) -> str:
    """The finding's SNOMED CT display (the registry requires one SNOMED CT code per finding)."""
    return next(
        (c.display for c in mapping.codes if c.system == SNOMED_CT), mapping.codes[0].display
    )


def alert_text(critical: CriticalFinding, model_display: str, model_version: str) -> str:
    """The readable alert: finding, site, probability, model, what to do. No patient identifiers."""
    finding = critical.finding
    where = f" ({critical.body_site})" if critical.body_site else ""
    probability = (
        f", probability {finding.probability:.2f}" if finding.probability is not None else ""
    )
    consult = (
        f" Suggested consult: {critical.consult_specialty}." if critical.consult_specialty else ""
    )
    return (
        f"CRITICAL AI finding: {critical.display}{where}{probability}. "
        f"Preliminary result of {model_display} (version {model_version}), "
        f"not yet verified by a radiologist.{consult} "
        "Review the linked imaging report and acknowledge this alert."
    )


def _reference(reference: str | None) -> dict[str, str] | None:
    return {"reference": reference} if reference else None


def _without_empty(resource: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in resource.items() if value not in (None, [], {})}


def alert_entries(
    event: ResultsPosted, critical: CriticalFinding, context: AlertContext
) -> AlertEntries:
    """The conditional-create entries of the alert about one critical finding."""
    finding = critical.finding
    run = event.model.run_value(event.study.study_instance_uid)
    parts = (run, finding.finding_key, finding.index)
    text = alert_text(critical, context.model_display, event.model.version)
    payload: list[dict[str, Any]] = [{"contentString": text}]
    link = (
        acknowledgement_url(
            context.links, "/".join(map(str, parts)), context.recipient, context.now
        )
        if context.links is not None
        else None
    )
    if link is not None:
        payload.append(
            {"contentAttachment": {"contentType": "text/html", "url": link, "title": ACK_TITLE}}
        )
    about = [{"reference": finding.observation}, {"reference": event.diagnostic_report}]
    recipients = [{"reference": context.recipient}] if context.recipient else []
    when = context.now.isoformat()
    meta = {"security": [AI_ASSERTED]}

    def entry(resource: dict[str, Any]) -> dict[str, Any]:
        identifier = business_identifier(resource["resourceType"], *parts)
        resource = _without_empty({**resource, "identifier": [identifier], "meta": meta})
        return conditional_create_entry(
            resource, f"urn:uuid:{uuid.uuid4()}", identifier["system"], identifier["value"]
        )

    communication_request = entry(
        {
            "resourceType": "CommunicationRequest",
            "status": "active",
            "category": [ALERT_CATEGORY],
            "priority": "stat",
            "subject": _reference(context.patient),
            "encounter": _reference(context.encounter),
            "about": about,
            "reasonReference": [{"reference": finding.observation}],
            "authoredOn": when,
            "requester": {"reference": event.device},
            "recipient": recipients,
            "sender": {"reference": event.device},
            "payload": payload,
        }
    )
    communication = entry(
        {
            "resourceType": "Communication",
            "status": "completed",
            "category": [ALERT_CATEGORY],
            "priority": "stat",
            "subject": _reference(context.patient),
            "encounter": _reference(context.encounter),
            "about": about,
            "reasonReference": [{"reference": finding.observation}],
            "basedOn": [{"reference": communication_request["fullUrl"]}],  # the open loop
            "sent": when,
            "recipient": recipients,
            "sender": {"reference": event.device},
            "payload": payload,
        }
    )
    consult = None
    if critical.consult is not None and context.patient is not None:
        specialty = critical.consult_specialty or critical.consult.display
        consult = entry(
            {
                "resourceType": "ServiceRequest",
                "status": "active",
                # An AI proposes; a clinician orders (or not): never an order of its own.
                "intent": "proposal",
                "priority": "stat",
                "code": {
                    "coding": [critical.consult.model_dump()],
                    "text": f"{specialty} consultation",
                },
                "performerType": {"text": specialty},
                "subject": {"reference": context.patient},
                "encounter": _reference(context.encounter),
                "basedOn": [{"reference": event.study.service_request}]
                if event.study.service_request
                else [],
                "reasonReference": [{"reference": finding.observation}],
                "supportingInfo": [{"reference": event.diagnostic_report}],
                "authoredOn": when,
                "requester": {"reference": event.device},
                "note": [{"text": text}],
            }
        )
    flag = None
    if context.patient is not None:
        flag = entry(
            {
                "resourceType": "Flag",
                "status": "active",
                "category": [FLAG_CATEGORY],
                "code": {
                    "text": f"Open critical AI finding: {critical.display} "
                    "(awaiting acknowledgement)"
                },
                "subject": {"reference": context.patient},
                "encounter": _reference(context.encounter),
                "period": {"start": when},
                "author": {"reference": event.device},
            }
        )
    return AlertEntries(
        critical=critical,
        communication=communication,
        communication_request=communication_request,
        consult_service_request=consult,
        flag=flag,
    )
