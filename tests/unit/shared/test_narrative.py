"""shared.narrative: the generated text of Observations and DiagnosticReports follows their
content through every write."""

from __future__ import annotations

import base64
from typing import Any

from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation

from shared.fhir import versioned_update_entry
from shared.narrative import narrated, with_narrative

OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "obs-1",
    "meta": {"versionId": "1"},
    "status": "preliminary",
    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "1386000"}], "text": "ICH"},
    "valueCodeableConcept": {"text": "Present"},
    "component": [{"code": {"text": "Probability"}, "valueQuantity": {"value": 0.88, "unit": "1"}}],
    "note": [{"text": "AI-generated preliminary finding <unverified> & flagged"}],
}
REPORT: dict[str, Any] = {
    "resourceType": "DiagnosticReport",
    "id": "report-1",
    "status": "preliminary",
    "code": {"text": "CT head AI analysis"},
    "conclusion": "AI result, preliminary: hemorrhage present.",
}


def test_an_observations_narrative_says_its_code_value_status_probability_and_notes() -> None:
    """The div names the code, the value, the status, the probability and each note, with
    markup in the texts escaped, and is valid R4 narrative for fhir.resources."""
    narrated = with_narrative(OBSERVATION)
    div = narrated["text"]["div"]
    assert narrated["text"]["status"] == "generated"
    assert div.startswith('<div xmlns="http://www.w3.org/1999/xhtml">')
    for shown in ("<b>ICH</b>: Present", "status: preliminary", "Probability: 0.88 1"):
        assert shown in div
    assert "&lt;unverified&gt; &amp; flagged" in div and "<unverified>" not in div
    Observation.model_validate({k: v for k, v in narrated.items() if k != "meta"})


def test_every_update_writes_the_narrative_of_what_the_resource_now_says() -> None:
    """A verdict that makes the Observation final and rewrites the report's conclusion sends
    narratives saying so, not the preliminary ones written at creation."""
    written = with_narrative(OBSERVATION)
    final = {**written, "status": "final", "note": [{"text": "AI-generated finding, verified"}]}
    sent = versioned_update_entry(final, "http://fhir.example/fhir")["resource"]["text"]["div"]
    assert "status: final" in sent and "verified" in sent and "preliminary" not in sent
    rejected = {**with_narrative(REPORT), "status": "entered-in-error", "conclusion": "Rejected."}
    div = versioned_update_entry(rejected, "http://fhir.example/fhir")["resource"]["text"]["div"]
    assert "<b>CT head AI analysis</b> (status: entered-in-error)" in div and "Rejected." in div
    DiagnosticReport.model_validate(with_narrative(REPORT))


def test_a_task_is_summarised_and_its_summary_follows_its_status() -> None:
    """A Task gets a short narrative of what it is, its status and owner, made again from its
    content: after it is completed the narrative says so, not "requested"."""
    task = {
        "resourceType": "Task",
        "id": "t",
        "status": "requested",
        "intent": "order",
        "code": {"text": "Verify AI results"},
        "owner": {"reference": "Practitioner/p", "display": "Dr Rita Adler"},
        "for": {"reference": "Patient/secret-id"},
    }
    div = with_narrative(task)["text"]["div"]
    assert "<p>Code: Verify AI results</p>" in div
    assert "<p>Status: requested</p>" in div and "<p>Owner: Dr Rita Adler</p>" in div
    assert "secret-id" not in div
    done = with_narrative({**with_narrative(task), "status": "completed"})["text"]["div"]
    assert "<p>Status: completed</p>" in done and "requested" not in done


def test_a_provenance_is_summarised_with_its_agents_and_how_many_records_it_covers() -> None:
    provenance = {
        "resourceType": "Provenance",
        "target": [{"reference": "DiagnosticReport/r"}, {"reference": "Observation/o"}],
        "recorded": "2026-12-03T08:00:00+00:00",
        "activity": {"coding": [{"code": "VERIFY", "display": "verify"}]},
        "agent": [{"type": {"text": "Verifier"}, "who": {"display": "Dr <Rita> Adler"}}],
    }
    div = with_narrative(provenance)["text"]["div"]
    assert "<p>Activity: verify</p>" in div
    assert "<p>Agent: Verifier: Dr &lt;Rita&gt; Adler</p>" in div
    assert "<p>Records: 2 resource(s)</p>" in div


def test_resources_radmesh_does_not_narrate_and_bundles_are_sent_as_they_are() -> None:
    parameters = {"resourceType": "Parameters", "parameter": []}
    assert with_narrative(parameters) is parameters
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": parameters}]}
    assert narrated(bundle)["entry"][0]["resource"] is parameters
    device = {
        "resourceType": "Device",
        "deviceName": [{"name": "ich-reference", "type": "model-name"}],
    }
    sent = narrated({**bundle, "entry": [{"resource": device}]})
    assert "<p>Device: ich-reference</p>" in sent["entry"][0]["resource"]["text"]["div"]


def _presented(report: dict[str, Any]) -> str:
    (form,) = report["presentedForm"]
    assert form["contentType"] == "text/html" and form["title"] == "AI results report"
    document = base64.b64decode(form["data"])
    assert form["size"] == len(document)
    return document.decode()


def test_a_reports_presented_form_is_an_html_document_of_what_it_now_says() -> None:
    """Written: an HTML document with the report's title, its status in words, its times, the
    conclusion (escaped) and the coded findings; rejected later: the document written with the
    update says cancelled and the new conclusion, not the preliminary one."""
    report = {
        **REPORT,
        "effectiveDateTime": "2026-01-02T03:00:00+00:00",
        "issued": "2026-01-02T03:04:00+00:00",
        "conclusion": "AI result, preliminary: hemorrhage <present>.",
        "conclusionCode": [{"text": "Intracranial hemorrhage"}],
    }
    written = _presented(with_narrative(report))
    assert written.startswith("<!DOCTYPE html>")
    for shown in (
        "<h1>CT head AI analysis</h1>",
        "preliminary: not verified by a radiologist",
        "2026-01-02T03:00:00+00:00",
        "hemorrhage &lt;present&gt;.",
        "<li>Intracranial hemorrhage</li>",
    ):
        assert shown in written
    cancelled = {**with_narrative(report), "status": "cancelled", "conclusion": "Rejected."}
    sent = _presented(versioned_update_entry(cancelled, "http://fhir.example/fhir")["resource"])
    assert "cancelled: rejected by a radiologist" in sent and "Rejected." in sent
    assert "preliminary" not in sent
    DiagnosticReport.model_validate(with_narrative(report))
