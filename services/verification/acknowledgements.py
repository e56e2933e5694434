"""Closing the loop of a critical alert: the clinician says they received it.

The open alerts are the notifier's active CommunicationRequests of category alert. Acknowledging
one is one FHIR transaction: the CommunicationRequest becomes `completed`, the patient's Flag
`inactive`, and an acknowledgement Communication (identifier `<alert key>/acknowledgement`, a
conditional create) records who acknowledged, when, and how long after the alert, in response
to the alert's Communication. A second acknowledgement records nothing more and answers the
first one; a withdrawn alert cannot be acknowledged (409). Nothing here names the patient.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import structlog

from services.verification.review import TaskConflict, TaskNotFound
from services.verification.verdicts import Reviewer
from shared.ai_transparency import AI_ASSERTED
from shared.alerts import ALERT_CATEGORY, alert_key, closed_flag_entry, follow_up_entry
from shared.errors import RemoteConflict, RemoteRejected
from shared.fhir import (
    FhirClient,
    transaction_bundle,
    versioned_update_entry,
)
from shared.identifiers import FHIR_ID_PATTERN, business_identifier
from shared.metrics import TIME_TO_ACKNOWLEDGE, alert_labels

__all__ = ["AlertDesk"]

log = structlog.get_logger(__name__)
_ALERT = ALERT_CATEGORY["coding"][0]


def _text(resource: dict[str, Any] | None) -> str | None:
    for part in (resource or {}).get("payload", []):
        if part.get("contentString"):
            return str(part["contentString"])
    return None


def _alert_item(request: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": request.get("id"),
        "communication_request": f"CommunicationRequest/{request.get('id')}",
        "status": request.get("status"),
        "priority": request.get("priority"),
        "authored_on": request.get("authoredOn"),
        "text": _text(request),
        "recipient": [r.get("reference") for r in request.get("recipient", [])],
        "about": [a.get("reference") for a in request.get("about", [])],
        "patient": (request.get("subject") or {}).get("reference"),  # for the audit trail
        "links": {"acknowledge": f"/alerts/{request.get('id')}/acknowledge"},
    }


class AlertDesk:
    def __init__(self, fhir: FhirClient, fhir_base_url: str) -> None:
        self.fhir = fhir
        self.fhir_base_url = fhir_base_url

    async def open_alerts(self, limit: int = 100) -> dict[str, Any]:
        """Active critical alerts, newest first."""
        bundle = await self.fhir.execute(
            "CommunicationRequest",
            "get",
            params={
                "status": "active",
                "category": f"{_ALERT['system']}|{_ALERT['code']}",
                "_sort": "-authored",
                "_count": min(limit, 50),
            },
        )
        items = [
            _alert_item(entry["resource"])
            for entry in bundle.get("entry", [])
            if alert_key(entry.get("resource") or {})
        ]
        more = any(link.get("relation") == "next" for link in bundle.get("link", []))
        return {"alerts": items, "count": len(items), "truncated": more}

    async def alert_of(self, key: str) -> dict[str, Any] | None:
        """The alert's CommunicationRequest, by the identifier value it shares with its finding."""
        return await self._by_key("CommunicationRequest", key)

    async def _by_key(self, resource_type: str, key: str) -> dict[str, Any] | None:
        identifier = business_identifier(resource_type, key)
        bundle = await self.fhir.execute(
            resource_type,
            "get",
            params={"identifier": f"{identifier['system']}|{identifier['value']}"},
        )
        return next((dict(e["resource"]) for e in bundle.get("entry", []) if "resource" in e), None)

    async def _read_alert(self, request_id: str) -> tuple[dict[str, Any], str]:
        if not _is_id(request_id):
            raise TaskNotFound(f"{request_id!r} is not a FHIR id")
        try:
            request = dict(await self.fhir.read_resource(f"CommunicationRequest/{request_id}"))
        except RemoteRejected as error:
            if error.status in (404, 410):
                raise TaskNotFound(f"there is no CommunicationRequest/{request_id}") from error
            raise
        key = alert_key(request)
        if key is None:
            raise TaskNotFound(f"CommunicationRequest/{request_id} is not a radmesh alert")
        return request, key

    async def acknowledge(
        self, request_id: str, reviewer: Reviewer, now: datetime, *, retried: bool = False
    ) -> dict[str, Any]:
        """Record the acknowledgement (once); what was recorded, or the earlier one."""
        request, key = await self._read_alert(request_id)
        if request.get("status") == "completed":
            return await self._earlier(request, key)
        if request.get("status") != "active":
            raise TaskConflict(
                f"CommunicationRequest/{request_id} is {request.get('status')}: the alert was "
                "withdrawn; there is nothing to acknowledge"
            )
        communication = await self._by_key("Communication", key)
        flag = await self._by_key("Flag", key)
        when = now.isoformat()
        sent = datetime.fromisoformat(str(request.get("authoredOn") or when))
        seconds = max(0.0, (now - sent).total_seconds())
        acknowledgement = follow_up_entry(
            key,
            "acknowledgement",
            alert=request,
            communication_id=str(communication["id"]) if communication else None,
            sender={"reference": reviewer.reference, "display": reviewer.display},
            text=f"Acknowledged by {reviewer.display} at {when}, "
            f"{seconds / 60:.1f} minutes after the alert.",
            label=AI_ASSERTED,
            now=now,
            recipients=[request["requester"]] if request.get("requester") else [],
            basedOn=[{"reference": f"CommunicationRequest/{request_id}"}],
        )
        entries = [
            versioned_update_entry({**request, "status": "completed"}, self.fhir_base_url),
            acknowledgement,
        ]
        closed = closed_flag_entry(flag, when, self.fhir_base_url) if flag else None
        if closed is not None:
            entries.append(closed)
        try:
            response = await self.fhir.transaction(transaction_bundle(entries))
        except (RemoteConflict, RemoteRejected) as error:
            if error.status in (409, 412) and not retried:  # someone else wrote meanwhile
                return await self.acknowledge(request_id, reviewer, now, retried=True)
            raise
        reference = str(response["entry"][1]["response"]["location"]).split("/_history")[0]
        TIME_TO_ACKNOWLEDGE.labels(**alert_labels(key)).observe(seconds)
        log.info(
            "alert_acknowledged",
            communication_request=f"CommunicationRequest/{request_id}",
            seconds_to_acknowledge=round(seconds, 1),
            flag_closed=closed is not None,
        )
        return {
            "communication_request": f"CommunicationRequest/{request_id}",
            "status": "completed",
            "acknowledgement": reference,
            "acknowledged_by": reviewer.reference,
            "acknowledged_at": when,
            "seconds_to_acknowledge": round(seconds, 1),
            "already_acknowledged": False,
            "patient": (request.get("subject") or {}).get("reference"),
        }

    async def _earlier(self, request: dict[str, Any], key: str) -> dict[str, Any]:
        earlier = await self._by_key("Communication", f"{key}/acknowledgement") or {}
        return {
            "communication_request": f"CommunicationRequest/{request['id']}",
            "status": "completed",
            "acknowledgement": f"Communication/{earlier['id']}" if earlier else None,
            "acknowledged_by": (earlier.get("sender") or {}).get("reference"),
            "acknowledged_at": earlier.get("sent"),
            "already_acknowledged": True,
            "patient": (request.get("subject") or {}).get("reference"),
        }


def _is_id(value: str) -> bool:
    return re.fullmatch(FHIR_ID_PATTERN, value) is not None
