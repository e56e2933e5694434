"""What every service needs to know about radmesh's critical-finding alerts: their FHIR
categories, how an alert's resources are found from its finding, and how an alert is closed.

An alert is a Communication (as sent), a CommunicationRequest (the open loop), maybe a consult
ServiceRequest and, when the study has a patient, a Flag on the patient; all carry the
identifier value of the finding's Observation (`<study UID>/<model>/<version>/<finding
key>/<index>`) under their own type's system. The notifier writes and withdraws alerts; the
verification service records their acknowledgement.
"""

from __future__ import annotations

from typing import Any

from shared.fhir import versioned_update_entry
from shared.identifiers import radmesh_identifier_value

__all__ = ["ALERT_CATEGORY", "FLAG_CATEGORY", "alert_key", "closed_flag_entry"]

ALERT_CATEGORY = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/communication-category",
            "code": "alert",
            "display": "Alert",
        }
    ]
}
FLAG_CATEGORY = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/flag-category",
            "code": "clinical",
            "display": "Clinical",
        }
    ]
}


def alert_key(resource: dict[str, Any]) -> str | None:
    """The identifier value an alert shares with its finding's Observation, read from any of
    them (the Observation, the Communication, the CommunicationRequest, ...)."""
    return radmesh_identifier_value(resource)


def closed_flag_entry(flag: dict[str, Any], when: str, base_url: str) -> dict[str, Any] | None:
    """The PUT making an active Flag inactive (its period ends now); None when it is closed."""
    if flag.get("status") != "active":
        return None
    period = {**(flag.get("period") or {}), "end": when}
    return versioned_update_entry({**flag, "status": "inactive", "period": period}, base_url)
