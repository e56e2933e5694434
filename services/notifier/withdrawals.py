"""Following up the alerts of a report after the radiologist's verdict or a retraction (pure,
no I/O): withdrawing them when the report is rejected or retracted, confirming them when it is
verified.

When a radiologist rejects AI results (finding.rejected), or radmesh retracts them because
their images changed in the PACS or their study changed patient (results.retracted), each
critical finding's alert is withdrawn: its CommunicationRequest and its consult ServiceRequest become `revoked`, the
patient's Flag `inactive`, and a new
Communication tells the alert's recipient that the alert was withdrawn, why, and by whom
(`inResponseTo` the alert, identifier `<alert identifier value>/withdrawal`; one withdrawal
per alert, whichever came first). The alert's
resources are found by the identifier value the finding's Observation shares with them
(`<study UID>/<model>/<version>/<finding key>/<index>`, see alerts.py), so this works on any R4
server. Every step is idempotent: a revoked resource is left alone, the withdrawal is a
conditional create.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.ai_transparency import AI_ASSERTED, CLINICIAN_ASSERTED_FROM_AI
from shared.alerts import closed_flag_entry, follow_up_entry
from shared.fhir import versioned_update_entry
from shared.iocm import reason_coding
from shared.messages import FindingRejected, FindingVerified, ResultsRetracted

__all__ = ["RaisedAlert", "confirmation_entry", "withdrawal_entries", "withdrawal_text"]


@dataclass(frozen=True)
class RaisedAlert:
    """The resources of one alert as read from the FHIR server (any may be missing)."""

    key: str  # the identifier value shared with the finding's Observation
    communication: dict[str, Any] | None
    communication_request: dict[str, Any] | None
    consult: dict[str, Any] | None
    flag: dict[str, Any] | None = None


def _revoked(resource: dict[str, Any], base_url: str) -> dict[str, Any]:
    return versioned_update_entry({**resource, "status": "revoked"}, base_url)


_RETRACTED_BECAUSE = {
    "pacs-deleted": "the images it was made from were deleted from the PACS",
    "pacs-rejection-note": "the images it was made from were rejected in the PACS",
    "patient-changed": "the imaging study it was made from was filed under another patient",
    "operator-rerun": "an operator asked for the study to be analysed again",
}


def withdrawal_text(event: FindingRejected | ResultsRetracted, alert: RaisedAlert) -> str:
    """What the recipient reads: withdrawn, why, by whom, and what the alert said. No patient
    identifiers."""
    said = ""
    for resource in (alert.communication, alert.communication_request):
        payload = (resource or {}).get("payload") or []
        if payload and payload[0].get("contentString"):
            said = f' The withdrawn alert read: "{payload[0]["contentString"]}"'
            break
    consult = " The stat consult it requested is revoked." if alert.consult else ""
    if isinstance(event, ResultsRetracted):
        return (
            f"WITHDRAWN: this AI critical-finding alert is retracted because "
            f"{_RETRACTED_BECAUSE[event.source]} "
            f"({reason_coding(event.reason_code)['display']}: {event.reason}). "
            f"Do not act on it.{consult}{said}"
        )
    return (
        "WITHDRAWN: a radiologist reviewed this AI critical-finding alert and rejected it "
        f"({event.reason}). Do not act on it.{consult}{said}"
    )


def withdrawal_entries(
    event: FindingRejected | ResultsRetracted, alert: RaisedAlert, now: datetime, base_url: str
) -> list[dict[str, Any]]:
    """The transaction entries withdrawing one alert: revoke what is still open, and tell the
    recipient (conditional create, so a repeated finding.rejected writes it once)."""
    entries = [
        _revoked(resource, base_url)
        for resource in (alert.communication_request, alert.consult)
        if resource is not None
        and resource.get("status") not in ("revoked", "completed", "entered-in-error")
    ]
    closed = closed_flag_entry(alert.flag, now.isoformat(), base_url) if alert.flag else None
    if closed is not None:
        entries.append(closed)
    entries.append(
        follow_up_entry(
            alert.key,
            "withdrawal",
            alert=alert.communication or alert.communication_request or {},
            communication_id=alert.communication["id"] if alert.communication else None,
            sender={"reference": event.verifier} if isinstance(event, FindingRejected) else None,
            text=withdrawal_text(event, alert),
            label=AI_ASSERTED,
            now=now,
            about=[
                *([{"reference": event.task}] if event.task else []),
                *([{"reference": event.provenance}] if event.provenance else []),
            ],
        )
    )
    return entries


def confirmation_entry(event: FindingVerified, alert: RaisedAlert, now: datetime) -> dict[str, Any]:
    """The Communication telling the alert's recipient that a radiologist verified the AI's
    critical finding (identifier `<alert key>/confirmation`, conditional create). The alert's
    CommunicationRequest stays open: the recipient still acknowledges it."""
    amended = " with an amended measurement" if event.amended else ""
    return follow_up_entry(
        alert.key,
        "confirmation",
        alert=alert.communication or alert.communication_request or {},
        communication_id=alert.communication["id"] if alert.communication else None,
        sender={"reference": event.verifier},
        text="CONFIRMED: a radiologist verified this AI critical finding"
        f"{amended}; see the final report. Acknowledge the alert if you have not.",
        label=CLINICIAN_ASSERTED_FROM_AI,
        now=now,
        about=[{"reference": event.task}, {"reference": event.provenance}],
    )
