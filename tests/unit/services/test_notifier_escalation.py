"""services.notifier.escalation: the Communication of one escalation step."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.notifier.escalation import escalation_entry

SENT = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
KEY = "2.25.1/ich-reference/1/intracranial-hemorrhage/0"
ALERT = {
    "resourceType": "Communication",
    "id": "c1",
    "sent": SENT.isoformat(),
    "sender": {"reference": "Device/d1"},
    "subject": {"reference": "Patient/p1"},
    "about": [{"reference": "Observation/o1"}, {"reference": "DiagnosticReport/r1"}],
    "recipient": [{"reference": "Practitioner/requester"}],
    "payload": [{"contentString": "CRITICAL AI finding: Intracranial hemorrhage"}],
}


def test_a_step_goes_to_its_own_recipient_in_response_to_the_alert_saying_how_long_it_waited() -> (
    None
):
    entry = escalation_entry(
        KEY, ALERT, "Practitioner/on-call", SENT + timedelta(minutes=31), step=2, steps=3
    )
    communication = entry["resource"]
    assert (
        entry["request"]["ifNoneExist"]
        == f"identifier=urn:radmesh:communication|{KEY}/escalation/2"
    )
    assert communication["recipient"] == [{"reference": "Practitioner/on-call"}]
    assert communication["inResponseTo"] == [{"reference": "Communication/c1"}]
    assert communication["subject"] == {"reference": "Patient/p1"}
    assert communication["about"] == ALERT["about"]
    text = communication["payload"][0]["contentString"]
    assert text.startswith(
        "ESCALATION 2 of 3: a critical AI finding alert has not been acknowledged for 31 minutes"
    )
    assert "Intracranial hemorrhage" in text


def test_a_step_without_a_recipient_is_still_written_for_the_alert_queue() -> None:
    entry = escalation_entry(KEY, ALERT, None, SENT + timedelta(minutes=15), step=1, steps=2)
    assert "recipient" not in entry["resource"]
