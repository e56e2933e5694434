"""services.notifier.alerts: which findings are critical, and the alert resources about them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from services.notifier.alerts import (
    AlertContext,
    alert_entries,
    alert_text,
    critical_findings,
)
from shared.messages import ModelRef, PostedFinding, ResultsPosted, StudyRef
from shared.registry import load_registry

REGISTRY = load_registry(Path(__file__).resolve().parents[3] / "registry" / "models.yaml")
STUDY_UID = "1.2.826.0.1.3680043.10.543.7"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _finding(
    key: str = "intracranial-hemorrhage",
    *,
    index: int = 0,
    present: bool = True,
    critical: bool = True,
    probability: float | None = 0.93,
) -> PostedFinding:
    return PostedFinding(
        finding_key=key,
        index=index,
        observation=f"Observation/{key}-{index}",
        present=present,
        probability=probability,
        critical=critical,
    )


def _event(
    *findings: PostedFinding, model: str = "ich-reference", patient: str | None = "Patient/p1"
) -> ResultsPosted:
    return ResultsPosted(
        study=StudyRef(
            study_instance_uid=STUDY_UID,
            patient=patient,
            service_request="ServiceRequest/order-1",
            imaging_study="ImagingStudy/s1",
        ),
        model=ModelRef(id=model, version="1"),
        diagnostic_report="DiagnosticReport/r1",
        device="Device/d1",
        provenance="Provenance/v1",
        findings=findings,
        rollout_mode="active",
    )


def _context(
    recipient: str | None = "Practitioner/orderer", patient: str | None = "Patient/p1"
) -> AlertContext:
    return AlertContext(
        patient=patient,
        recipient=recipient,
        encounter=None,
        model_display="Intracranial hemorrhage detector",
        now=NOW,
    )


def test_present_critical_finding_is_critical_with_the_registry_consult() -> None:
    """A present hemorrhage marked critical is critical, named by its SNOMED CT display, with
    the neurosurgery consult the registry declares; its volume (not critical) is not."""
    event = _event(_finding(), _finding("hemorrhage-volume", critical=False, probability=None))
    critical = critical_findings(event, REGISTRY)
    assert [c.finding.finding_key for c in critical] == ["intracranial-hemorrhage"]
    assert critical[0].display == "Intracranial hemorrhage"
    assert critical[0].body_site == "Brain structure"
    assert critical[0].consult is not None
    assert critical[0].consult.code == "44383000"
    assert critical[0].consult_specialty == "neurosurgery"


def test_absent_finding_is_never_critical() -> None:
    """An absent hemorrhage raises no alert even though its mapping is critical."""
    assert critical_findings(_event(_finding(present=False)), REGISTRY) == []


def test_registry_critical_mapping_counts_even_when_the_event_flag_is_missing() -> None:
    """A present finding the registry marks critical is alerted on even if the mapper did not
    flag it: a missed critical finding is worse than one alert too many."""
    assert len(critical_findings(_event(_finding(critical=False)), REGISTRY)) == 1


def test_non_critical_model_findings_raise_nothing() -> None:
    """A present lung nodule (not critical in the registry, not flagged) is not critical."""
    event = _event(_finding("lung-nodule", critical=False), model="lung-nodule-reference")
    assert critical_findings(event, REGISTRY) == []


def test_model_unknown_to_the_registry_still_alerts_on_the_event_flag_without_consult() -> None:
    """A flagged finding of a model the registry no longer lists is still alerted on, by key."""
    critical = critical_findings(_event(_finding(), model="retired-model"), REGISTRY)
    assert [(c.display, c.consult) for c in critical] == [("intracranial-hemorrhage", None)]


def test_alert_text_is_readable_and_names_no_patient() -> None:
    """The text names the finding, site, probability, model and consult, not the patient or
    the study UID."""
    critical = critical_findings(_event(_finding()), REGISTRY)[0]
    text = alert_text(critical, "Intracranial hemorrhage detector", "1")
    assert (
        "CRITICAL AI finding: Intracranial hemorrhage (Brain structure), probability 0.93" in text
    )
    assert "not yet verified by a radiologist" in text
    assert "Suggested consult: neurosurgery" in text
    assert "Patient" not in text
    assert STUDY_UID not in text


def test_alert_resources_point_at_the_requester_the_device_and_the_results() -> None:
    """Communication completed, CommunicationRequest active, consult ServiceRequest active stat
    order: recipient the orderer, sender the Device, about the Observation and the report."""
    event = _event(_finding())
    alert = alert_entries(event, critical_findings(event, REGISTRY)[0], _context())
    communication = alert.communication["resource"]
    assert communication["status"] == "completed"
    assert communication["priority"] == "stat"
    assert communication["category"][0]["coding"][0]["code"] == "alert"
    assert communication["recipient"] == [{"reference": "Practitioner/orderer"}]
    assert communication["sender"] == {"reference": "Device/d1"}
    assert communication["subject"] == {"reference": "Patient/p1"}
    assert communication["about"] == [
        {"reference": "Observation/intracranial-hemorrhage-0"},
        {"reference": "DiagnosticReport/r1"},
    ]
    assert communication["sent"] == NOW.isoformat()
    request = alert.communication_request["resource"]
    assert (request["status"], request["priority"]) == ("active", "stat")
    # the Communication sent is based on the CommunicationRequest that stays open until acked
    assert communication["basedOn"] == [{"reference": alert.communication_request["fullUrl"]}]
    assert request["recipient"] == [{"reference": "Practitioner/orderer"}]
    assert alert.consult_service_request is not None
    consult = alert.consult_service_request["resource"]
    assert (consult["status"], consult["intent"], consult["priority"]) == (
        "active",
        "proposal",  # an AI proposes the consult; a clinician orders it
        "stat",
    )
    assert consult["code"]["coding"][0]["code"] == "44383000"
    assert consult["code"]["text"] == "neurosurgery consultation"
    assert consult["basedOn"] == [{"reference": "ServiceRequest/order-1"}]
    assert consult["reasonReference"] == [{"reference": "Observation/intracranial-hemorrhage-0"}]
    assert alert.flag is not None
    flag = alert.flag["resource"]
    assert (flag["status"], flag["subject"]) == ("active", {"reference": "Patient/p1"})
    assert flag["category"][0]["coding"][0]["code"] == "clinical"
    assert flag["code"]["text"].startswith("Open critical AI finding: Intracranial hemorrhage")
    assert len(alert.entries()) == 4


def test_alert_identifiers_are_deterministic_and_conditional() -> None:
    """Each resource carries urn:radmesh:<type> | <study>/<model>/<version>/<key>/<index> and
    is created only if none with it exists; another finding index gets another identifier."""
    event = _event(_finding(index=0), _finding(index=1))
    first, second = (
        alert_entries(event, c, _context()) for c in critical_findings(event, REGISTRY)
    )
    again = alert_entries(event, critical_findings(event, REGISTRY)[0], _context())
    for entry in first.entries():
        resource = entry["resource"]
        identifier = resource["identifier"][0]
        system = f"urn:radmesh:{resource['resourceType'].lower()}"
        assert identifier == {
            "system": system,
            "value": f"{STUDY_UID}/ich-reference/1/intracranial-hemorrhage/0",
        }
        assert entry["request"] == {
            "method": "POST",
            "url": resource["resourceType"],
            "ifNoneExist": f"identifier={system}|{identifier['value']}",
        }
    assert [e["request"]["ifNoneExist"] for e in again.entries()] == [
        e["request"]["ifNoneExist"] for e in first.entries()
    ]
    assert second.communication["resource"]["identifier"][0]["value"].endswith("/1")


def test_alert_without_recipient_omits_it_and_without_patient_has_no_consult() -> None:
    """No requester and no fallback: no recipient element at all. No patient: the consult
    ServiceRequest and the Flag (whose subject is required) are left out; the alert itself
    stays."""
    event = _event(_finding(), patient=None)
    critical = critical_findings(event, REGISTRY)[0]
    alert = alert_entries(event, critical, _context(recipient=None, patient=None))
    assert "recipient" not in alert.communication["resource"]
    assert "recipient" not in alert.communication_request["resource"]
    assert "subject" not in alert.communication["resource"]
    assert alert.consult_service_request is None
    assert alert.flag is None
    assert len(alert.entries()) == 2
