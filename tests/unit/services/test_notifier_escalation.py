"""services.notifier.escalation: the Communication of one escalation step; whom a step goes to."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from services.notifier.escalation import escalation_entry
from services.notifier.handlers import EscalateAlerts
from shared.fhir import FhirClient
from shared.messages import AlertEscalationDue, Event, ModelRef, StudyRef
from shared.registry import EscalationStep, load_registry

REGISTRY = Path(__file__).resolve().parents[3] / "registry" / "models.yaml"

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


class FakeRecord:
    """read_resource over a dict of resources by reference."""

    def __init__(self, resources: dict[str, dict[str, Any]]) -> None:
        self.resources = resources

    async def read_resource(self, reference: str) -> dict[str, Any]:
        return self.resources[reference]


def _due(encounter: str | None = None) -> AlertEscalationDue:
    return AlertEscalationDue(
        study=StudyRef(
            study_instance_uid="2.25.1", service_request="ServiceRequest/o", encounter=encounter
        ),
        model=ModelRef(id="ich-reference", version="1"),
        finding_key="intracranial-hemorrhage",
        communication="Communication/c1",
        communication_request="CommunicationRequest/r1",
        step=2,
    )


async def _ordering_department(resources: dict[str, dict[str, Any]], due: AlertEscalationDue) -> str | None:
    escalate = EscalateAlerts(
        load_registry(REGISTRY), cast(FhirClient, FakeRecord(resources)), _never_scheduled
    )
    step = EscalationStep(after_minutes=10, recipient="ordering-department")
    return await escalate._recipient(step, due)


async def _never_scheduled(event: Event, seconds: float) -> None:
    raise AssertionError("resolving a recipient schedules nothing")


async def test_the_ordering_department_is_the_requesting_roles_organization() -> None:
    resources = {
        "ServiceRequest/o": {"requester": {"reference": "PractitionerRole/pr"}},
        "PractitionerRole/pr": {"organization": {"reference": "Organization/stroke-unit"}},
    }
    assert await _ordering_department(resources, _due()) == "Organization/stroke-unit"


async def test_without_a_role_the_ordering_department_is_the_encounters_service_provider() -> None:
    resources = {
        "ServiceRequest/o": {
            "requester": {"reference": "Practitioner/p"},
            "encounter": {"reference": "Encounter/e"},
        },
        "Encounter/e": {"serviceProvider": {"reference": "Organization/emergency"}},
    }
    assert await _ordering_department(resources, _due()) == "Organization/emergency"
    del resources["ServiceRequest/o"]["encounter"]  # the study's encounter serves as well
    assert await _ordering_department(resources, _due("Encounter/e")) == "Organization/emergency"


async def test_an_order_naming_no_department_has_no_recipient_for_that_step() -> None:
    resources = {"ServiceRequest/o": {"requester": {"reference": "Practitioner/p"}}}
    assert await _ordering_department(resources, _due()) is None
