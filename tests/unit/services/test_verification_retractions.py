"""The retraction transaction (services/verification/retractions.py), pure."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.verification.retractions import RetractedRun, retraction_bundle, series_of
from shared.identifiers import DICOM_IMAGE_EXTENSION
from shared.messages import StudyRef, StudyRetracted

BASE = "http://fhir.example/fhir"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
RUN = "1.2.3/ich-reference/1"


def _observation(id_: str, series: str, status: str = "preliminary") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": id_,
        "meta": {"versionId": "1"},
        "status": status,
        "extension": [
            {
                "url": DICOM_IMAGE_EXTENSION,
                "extension": [{"url": "seriesInstanceUid", "valueOid": f"urn:oid:{series}"}],
            }
        ],
    }


def _run(task_status: str = "requested", claim: bool = True) -> RetractedRun:
    return RetractedRun(
        report={
            "resourceType": "DiagnosticReport",
            "id": "r",
            "meta": {"versionId": "2"},
            "identifier": [{"system": "urn:radmesh:diagnosticreport", "value": RUN}],
            "status": "preliminary",
            "conclusion": "AI: hemorrhage present.",
            "imagingStudy": [{"reference": "ImagingStudy/s"}],
            "subject": {"reference": "Patient/p"},
        },
        observations=[_observation("o1", "1.2.3.4"), _observation("o2", "1.2.3.4")],
        verification_task={
            "resourceType": "Task",
            "id": "t",
            "meta": {"versionId": "1"},
            "status": task_status,
        },
        claim={"resourceType": "Task", "id": "c", "meta": {"versionId": "3"}, "status": "completed"}
        if claim
        else None,
    )


def _deleted() -> StudyRetracted:
    return StudyRetracted(
        study=StudyRef(study_instance_uid="1.2.3"),
        series_instance_uids=("1.2.3.4",),
        source="pacs-deleted",
        reason_code="113037",
        reason="the PACS deleted 1 series",
    )


def _by_url(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["request"]["url"]: entry for entry in bundle["entry"]}


def test_series_of_reads_the_image_extension() -> None:
    assert series_of(_observation("o", "1.2.3.4")) == {"1.2.3.4"}
    assert series_of({"resourceType": "Observation"}) == set()


def test_a_retraction_marks_results_in_error_cancels_task_and_claim_and_says_why() -> None:
    """Observations and report entered-in-error (guarded by their versions), the undecided Task
    and the claim cancelled with the IOCM code, a NULLIFY Provenance naming every change last."""
    bundle = retraction_bundle(_run(), _deleted(), NOW, BASE)
    entries = _by_url(bundle)
    for url in ("Observation/o1", "Observation/o2", "DiagnosticReport/r"):
        assert entries[url]["resource"]["status"] == "entered-in-error"
        assert entries[url]["request"]["ifMatch"].startswith('W/"')
    assert entries["DiagnosticReport/r"]["resource"]["conclusion"].startswith(
        "Retracted by radmesh on 2026-12-01T12:00:00+00:00: the PACS deleted the images"
    )
    assert "AI: hemorrhage present." in entries["DiagnosticReport/r"]["resource"]["conclusion"]
    task = entries["Task/t"]["resource"]
    assert task["status"] == "cancelled"
    assert task["statusReason"]["coding"][0] == {
        "system": "http://dicom.nema.org/resources/ontology/DCM",
        "code": "113037",
        "display": "Rejected for Patient Safety Reasons",
    }
    assert entries["Task/c"]["resource"]["status"] == "cancelled"
    provenance = bundle["entry"][-1]["resource"]
    assert provenance["activity"]["coding"][0]["code"] == "NULLIFY"
    assert {t["reference"] for t in provenance["target"]} == {
        "Observation/o1",
        "Observation/o2",
        "DiagnosticReport/r",
        "Task/t",
    }


def test_a_decided_task_keeps_its_verdict_and_gets_a_note() -> None:
    bundle = retraction_bundle(_run(task_status="completed"), _deleted(), NOW, BASE)
    task = _by_url(bundle)["Task/t"]["resource"]
    assert task["status"] == "completed"
    assert task["note"][-1]["text"].startswith("Retracted by radmesh")


def test_a_run_without_a_claim_gets_a_cancelled_one_so_the_next_generation_can_start() -> None:
    bundle = retraction_bundle(_run(claim=False), _deleted(), NOW, BASE)
    (claim,) = [e for e in bundle["entry"] if e["request"]["url"].startswith("Task?")]
    assert claim["request"] == {
        "method": "PUT",
        "url": f"Task?identifier=urn:radmesh:analysis-claim|{RUN}",
    }
    assert claim["resource"]["status"] == "cancelled"
    assert claim["resource"]["focus"] == {"reference": "ImagingStudy/s"}


def test_observations_already_in_error_are_not_written_again() -> None:
    run = _run()
    run.observations[0]["status"] = "entered-in-error"
    urls = set(_by_url(retraction_bundle(run, _deleted(), NOW, BASE)))
    assert "Observation/o1" not in urls and "Observation/o2" in urls
