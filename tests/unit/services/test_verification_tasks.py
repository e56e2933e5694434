"""services.verification.tasks: the verification Task written, read back and listed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from services.verification.tasks import (
    finding_view,
    is_verification_task,
    task_run,
    worklist_item,
)
from shared.identifiers import DICOM_IMAGE_EXTENSION
from shared.messages import ModelRef, PostedFinding, ResultsPosted, StudyRef
from shared.verification_task import verification_task_entry

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
STUDY = StudyRef(
    study_instance_uid="1.2.826.0.1.3680043.10.543.7",
    imaging_study="ImagingStudy/s1",
    patient="Patient/p1",
    service_request="ServiceRequest/order-1",
    encounter="Encounter/e1",
)


def _event(*, critical: bool, study: StudyRef = STUDY) -> ResultsPosted:
    return ResultsPosted(
        study=study,
        model=ModelRef(id="ich-reference", version="1"),
        diagnostic_report="DiagnosticReport/r1",
        device="Device/d1",
        provenance="Provenance/v1",
        findings=(
            PostedFinding(
                finding_key="intracranial-hemorrhage",
                index=0,
                observation="Observation/o1",
                present=True,
                probability=0.9,
                critical=critical,
            ),
        ),
        rollout_mode="preliminary",
    )


def test_task_for_a_critical_report_is_a_stat_approve_order_on_the_report() -> None:
    """requested, order, stat, code approve, focus the report, for the patient, basedOn the
    study's order, in its encounter, requested by the model's Device."""
    task = verification_task_entry(_event(critical=True), NOW)["resource"]
    assert (task["status"], task["intent"], task["priority"]) == ("requested", "order", "stat")
    assert task["code"]["coding"][0] == {
        "system": "http://hl7.org/fhir/CodeSystem/task-code",
        "code": "approve",
        "display": "Activate/approve the focal resource",
    }
    assert task["focus"] == {"reference": "DiagnosticReport/r1"}
    assert task["for"] == {"reference": "Patient/p1"}
    assert task["basedOn"] == [{"reference": "ServiceRequest/order-1"}]
    assert task["encounter"] == {"reference": "Encounter/e1"}
    assert task["requester"] == {"reference": "Device/d1"}
    assert task["authoredOn"] == NOW.isoformat()
    assert "1 critical" in task["description"]


def test_task_for_a_report_without_critical_finding_is_routine() -> None:
    assert verification_task_entry(_event(critical=False), NOW)["resource"]["priority"] == "routine"


def test_task_identifier_is_the_study_run_and_the_create_is_conditional() -> None:
    """The same event gives the same identifier; the entry is created only if none has it."""
    event = _event(critical=True)
    first = verification_task_entry(event, NOW)
    second = verification_task_entry(event, datetime.now(UTC))
    value = "1.2.826.0.1.3680043.10.543.7/ich-reference/1"
    assert first["resource"]["identifier"] == [{"system": "urn:radmesh:task", "value": value}]
    assert first["request"]["ifNoneExist"] == f"identifier=urn:radmesh:task|{value}"
    assert second["request"]["ifNoneExist"] == first["request"]["ifNoneExist"]


def test_task_remembers_the_run_it_was_created_for() -> None:
    """Read back from the Task: the study (UID, ImagingStudy, patient, order, encounter), the
    correlation id and the results.posted message id, the model and the Device."""
    event = _event(critical=True)
    run = task_run(verification_task_entry(event, NOW)["resource"])
    assert run.study == STUDY
    assert run.correlation_id == event.correlation_id
    assert run.causation_id == event.message_id
    assert run.model == "ich-reference/1"
    assert run.device == "Device/d1"


def test_task_without_patient_or_order_leaves_those_elements_out() -> None:
    task = verification_task_entry(
        _event(critical=False, study=StudyRef(study_instance_uid="1.2.3")), NOW
    )["resource"]
    assert "for" not in task
    assert "basedOn" not in task
    assert task_run(task).study == StudyRef(study_instance_uid="1.2.3")


def test_only_tasks_with_the_radmesh_identifier_are_verification_tasks() -> None:
    task = verification_task_entry(_event(critical=True), NOW)["resource"]
    assert is_verification_task(task)
    assert not is_verification_task({**task, "identifier": [{"system": "urn:other", "value": "1"}]})


def _observation(**extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": "o1",
        "status": "preliminary",
        "code": {
            "coding": [
                {
                    "system": "http://snomed.info/sct",
                    "code": "1386000",
                    "display": "Intracranial hemorrhage",
                }
            ]
        },
        **extra,
    }


@pytest.mark.parametrize(
    ("component", "expected"),
    [
        ({"code": {"text": "Probability"}, "valueQuantity": {"value": 0.8, "code": "1"}}, 0.8),
        (
            {
                "code": {"coding": [{"code": "probability"}]},
                "valueQuantity": {"value": 80, "code": "%"},
            },
            0.8,
        ),
        ({"code": {"coding": [{"display": "Model confidence"}]}, "valueDecimal": 0.7}, 0.7),
        (
            {
                "code": {
                    "coding": [
                        {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "122157"}
                    ]
                },
                "valueQuantity": {"value": 0.93, "code": "1"},
            },
            0.93,
        ),
        ({"code": {"text": "Diameter"}, "valueQuantity": {"value": 7, "unit": "mm"}}, None),
    ],
)
def test_finding_probability_comes_from_the_probability_component(
    component: dict[str, Any], expected: float | None
) -> None:
    """The probability is the component coded DCM 122157 (as the mapper writes it) or named
    probability (likelihood, confidence), percentages scaled to 0..1; no such component means
    no probability."""
    view = finding_view(_observation(component=[component]))
    assert view["probability"] == (pytest.approx(expected) if expected is not None else None)


def test_finding_view_shows_code_value_and_status() -> None:
    present = finding_view(
        _observation(valueCodeableConcept={"coding": [{"code": "52101004", "display": "Present"}]})
    )
    assert present == {
        "observation": "Observation/o1",
        "code": "Intracranial hemorrhage",
        "value": "Present",
        "probability": None,
        "status": "preliminary",
        "body_site": None,
        "measured": False,
        "images": [],
    }
    quantity = finding_view(_observation(valueQuantity={"value": 4.5, "unit": "mL"}))
    assert quantity["value"] == {"value": 4.5, "unit": "mL"}
    assert quantity["measured"] is True


def test_finding_view_names_the_key_slices_and_the_centre_from_the_image_extension() -> None:
    """The series, each SOP instance and the centre voxel the mapper wrote; an extension
    without instances names none."""
    extension = {
        "url": DICOM_IMAGE_EXTENSION,
        "extension": [
            {"url": "seriesInstanceUid", "valueOid": "urn:oid:1.2.3"},
            {"url": "sopInstanceUid", "valueOid": "urn:oid:1.2.3.9"},
            {"url": "centreVoxel", "valueString": "9 139.2 166.1"},
        ],
    }
    view = finding_view(_observation(extension=[extension]))
    assert view["images"] == [{"series": "1.2.3", "sop": "1.2.3.9", "centre": [9.0, 139.2, 166.1]}]
    bare = {"url": DICOM_IMAGE_EXTENSION, "extension": extension["extension"][:1]}
    assert finding_view(_observation(extension=[bare]))["images"] == []


def test_worklist_item_links_the_task_report_and_actions() -> None:
    task = {**verification_task_entry(_event(critical=True), NOW)["resource"], "id": "t1"}
    report = {"resourceType": "DiagnosticReport", "id": "r1", "status": "preliminary"}
    item = worklist_item(task, report, [_observation()], "http://fhir.example/fhir/")
    assert item["task"] == "Task/t1"
    assert item["priority"] == "stat"
    assert item["diagnostic_report"]["status"] == "preliminary"
    assert [f["observation"] for f in item["findings"]] == ["Observation/o1"]
    assert item["links"] == {
        "self": "/tasks/t1",
        "accept": "/tasks/t1/accept",
        "reject": "/tasks/t1/reject",
        "task": "http://fhir.example/fhir/Task/t1",
        "diagnostic_report": "http://fhir.example/fhir/DiagnosticReport/r1",
        "imaging_study": "http://fhir.example/fhir/ImagingStudy/s1",
    }
