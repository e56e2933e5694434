"""services.verification.verdicts: request bodies, and the version-guarded verdict transaction
with what each verdict changes (statuses, texts, AI Transparency labels, Provenance)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from services.verification.outbox import verdict_event
from services.verification.tasks import OUTBOX_TAG
from services.verification.verdicts import (
    MAX_NOTE_LENGTH,
    REJECT_REASONS,
    Amendment,
    InvalidVerdict,
    ReviewedRecord,
    Reviewer,
    Verdict,
    VerdictKind,
    parse_verdict,
    verdict_bundle,
)
from shared.ai_transparency import AI_ASSERTED, PRELIMINARY_CONCLUSION, PRELIMINARY_NOTE, UNVERIFIED
from shared.messages import FindingRejected

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
BASE_URL = "http://fhir.example/fhir/"
RAD = Reviewer(reference="Practitioner/rad-1", display="Rita Adler")
RAD_REFERENCE = {"reference": RAD.reference, "display": RAD.display}


@pytest.mark.parametrize(
    ("body", "kind", "message"),
    [
        ([], "accepted", "must be a JSON object"),
        ({"verifier": "Practitioner/someone-else"}, "accepted", "the signed-in user"),
        ({"reason": "false-positive"}, "accepted", "unknown field(s) ['reason']"),
        ({"note": 3}, "accepted", "note must be a string"),
        ({}, "rejected", "reason must be one of"),
        ({"reason": "artefact"}, "rejected", "reason must be one of"),
        ({"reason": "other", "note": "  "}, "rejected", "needs a note"),
        ({"reason": "other", "note": "x" * (MAX_NOTE_LENGTH + 1)}, "rejected", "longer than"),
        ({"value": 3}, "amended", "observation must be"),
        ({"observation": "Patient/1", "value": 3}, "amended", "observation must be"),
        ({"observation": "Observation/o2", "value": True}, "amended", "finite number"),
        ({"observation": "Observation/o2", "value": "3"}, "amended", "finite number"),
        ({"observation": "Observation/o2\n", "value": 3}, "amended", "observation must be"),
        ({"note": "misread\x08"}, "accepted", "control character U+0008"),
        ({"reason": "other", "note": "a\x00b"}, "rejected", "control character U+0000"),
    ],
)
def test_bad_bodies_are_refused_saying_what_is_wrong(
    body: Any, kind: VerdictKind, message: str
) -> None:
    with pytest.raises(InvalidVerdict, match=re.escape(message)):
        parse_verdict(body, kind, RAD)


def test_a_note_may_break_lines_and_tab() -> None:
    """Tab and line breaks are the control characters FHIR strings allow."""
    verdict = parse_verdict({"note": "first line\r\n\tsecond"}, "accepted", RAD)
    assert verdict.note == "first line\r\n\tsecond"


def test_good_bodies_become_verdicts_of_the_signed_in_user() -> None:
    assert parse_verdict({}, "accepted", RAD) == Verdict("accepted", RAD)
    assert parse_verdict({"verifier": RAD.reference}, "accepted", RAD) == Verdict("accepted", RAD)
    rejected = parse_verdict({"reason": "false-positive", "note": " falx "}, "rejected", RAD)
    assert rejected == Verdict("rejected", RAD, REJECT_REASONS["false-positive"], "falx")
    assert rejected.reason_text == "False positive: the finding is not there: falx"
    amended = parse_verdict({"observation": "Observation/o2", "value": 7}, "amended", RAD)
    assert amended.amendment == Amendment("Observation/o2", 7.0)


def _record() -> ReviewedRecord:
    def resource(
        resource_type: str, resource_id: str, version: str, **extra: Any
    ) -> dict[str, Any]:
        return {
            "resourceType": resource_type,
            "id": resource_id,
            "meta": {
                "versionId": version,
                "lastUpdated": "2026-11-27T11:00:00Z",
                "security": [AI_ASSERTED],
            },
            **extra,
        }

    note = f"{PRELIMINARY_NOTE} (ich-reference, version 1); {UNVERIFIED}. Nodule present."
    return ReviewedRecord(
        task=resource("Task", "t1", "1", status="requested", intent="order"),
        report=resource(
            "DiagnosticReport",
            "r1",
            "3",
            status="preliminary",
            result=[{"reference": "Observation/o1"}, {"reference": "Observation/o2"}],
            conclusion=f"{PRELIMINARY_CONCLUSION} — Lung nodule detector: nodule present.",
        ),
        observations=[
            resource("Observation", "o1", "2", status="preliminary", note=[{"text": note}]),
            resource(
                "Observation",
                "o2",
                "5",
                status="preliminary",
                code={"text": "Diameter"},
                valueQuantity={"value": 6.1, "unit": "mm", "code": "mm"},
            ),
        ],
    )


def _parts(bundle: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    resources = [e["resource"] for e in bundle["entry"]]
    return resources[:2], resources[2], resources[3]


def test_accept_makes_everything_final_guarded_by_the_versions_read() -> None:
    """PUT each Observation, the report and the Task with If-Match on the version read; the
    report names the verifier as results interpreter; the Task is completed and owned by the
    verifier; meta.versionId is not sent back; each entry's fullUrl is the resource's absolute
    URL on the FHIR server."""
    bundle = verdict_bundle(_record(), Verdict("accepted", RAD), NOW, BASE_URL)
    assert bundle["type"] == "transaction"
    puts = bundle["entry"][:-1]
    assert [(e["request"]["url"], e["request"]["ifMatch"]) for e in puts] == [
        ("Observation/o1", 'W/"2"'),
        ("Observation/o2", 'W/"5"'),
        ("DiagnosticReport/r1", 'W/"3"'),
        ("Task/t1", 'W/"1"'),
    ]
    assert all(e["request"]["method"] == "PUT" for e in puts)
    assert [e["fullUrl"] for e in puts] == [
        f"http://fhir.example/fhir/{e['request']['url']}" for e in puts
    ]
    assert all("versionId" not in e["resource"]["meta"] for e in puts)
    observations, report, task = _parts(bundle)
    assert [o["status"] for o in observations] == ["final", "final"]
    assert report["status"] == "final"
    assert report["resultsInterpreter"] == [RAD_REFERENCE]
    assert task["status"] == "completed"
    assert task["owner"] == RAD_REFERENCE
    assert task["executionPeriod"] == {"end": NOW.isoformat()}
    assert {o["type"]["coding"][0]["code"]: o.get("valueCode") for o in task["output"]}[
        "verdict"
    ] == "accepted"
    assert "statusReason" not in task


def test_accept_rewrites_the_preliminary_texts_and_relabels_ai_asserted() -> None:
    """The conclusion and the note say verified by the radiologist, when; no word of
    preliminary or not verified is left; AIAST becomes CLINAST_AIRPT on report and
    Observations, the Task keeps its labels."""
    observations, report, task = _parts(
        verdict_bundle(_record(), Verdict("accepted", RAD), NOW, BASE_URL)
    )
    when = NOW.isoformat()
    assert report["conclusion"] == (
        f"AI result, verified by Rita Adler on {when} — Lung nodule detector: nodule present."
    )
    assert observations[0]["note"] == [
        {
            "text": f"AI-generated finding (ich-reference, version 1); verified by Rita Adler "
            f"on {when}. Nodule present."
        }
    ]
    for resource in (*observations, report):
        assert [s["code"] for s in resource["meta"]["security"]] == ["CLINAST_AIRPT"]
    assert [s["code"] for s in task["meta"]["security"]] == ["AIAST"]


def test_accept_provenance_names_the_verifier_and_targets_the_results() -> None:
    """The Provenance is POSTed last (its response entry is the last), agent the verifier
    (type verifier), activity verify, reason CLINAST_AIRPT (AI Transparency on FHIR: a
    clinician asserts what the AI reported), targets the report and each Observation; the
    Task's relevantHistory points at it through its urn:uuid."""
    bundle = verdict_bundle(_record(), Verdict("accepted", RAD), NOW, BASE_URL)
    entry = bundle["entry"][-1]
    assert entry["request"] == {"method": "POST", "url": "Provenance"}
    provenance = entry["resource"]
    assert provenance["agent"] == [
        {
            "type": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                        "code": "verifier",
                        "display": "Verifier",
                    }
                ]
            },
            "who": RAD_REFERENCE,
        }
    ]
    assert provenance["activity"]["text"] == "verify"
    assert [c["code"] for r in provenance["reason"] for c in r["coding"]] == ["CLINAST_AIRPT"]
    assert provenance["target"] == [
        {"reference": "DiagnosticReport/r1"},
        {"reference": "Observation/o1"},
        {"reference": "Observation/o2"},
    ]
    assert provenance["recorded"] == NOW.isoformat()
    assert bundle["entry"][-2]["resource"]["relevantHistory"] == [{"reference": entry["fullUrl"]}]
    assert entry["fullUrl"].startswith("urn:uuid:")


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("false-positive", "entered-in-error"),
        ("wrong-location", "entered-in-error"),
        ("poor-image-quality", "cancelled"),
        ("other", "cancelled"),
    ],
)
def test_reject_sets_the_status_its_reason_implies_and_records_the_coded_reason(
    code: str, status: str
) -> None:
    """A finding that was wrong is entered-in-error, one that could not be judged cancelled; the
    coded reason is in Task.statusReason, Task.output, a note on each Observation, the
    conclusion and the Provenance's reason; AIAST stays; nobody is results interpreter."""
    verdict = Verdict("rejected", RAD, REJECT_REASONS[code], "motion artefact")
    bundle = verdict_bundle(_record(), verdict, NOW, BASE_URL)
    observations, report, task = _parts(bundle)
    words = f"{REJECT_REASONS[code].display}: motion artefact"
    assert [o["status"] for o in observations] == [status, status]
    assert all(words in o["note"][-1]["text"] for o in observations)
    assert all(o["note"][-1]["authorReference"] == RAD_REFERENCE for o in observations)
    assert report["status"] == status
    assert report["conclusion"].startswith(f"AI result rejected by Rita Adler on {NOW.isoformat()}")
    assert "The AI had reported: AI result, preliminary" in report["conclusion"]
    assert [s["code"] for s in report["meta"]["security"]] == ["AIAST"]
    assert "resultsInterpreter" not in report
    assert task["status"] == "completed"
    assert task["statusReason"]["coding"][0]["code"] == code
    assert task["statusReason"]["text"] == words
    outputs = {o["type"]["coding"][0]["code"]: o for o in task["output"]}
    assert outputs["verdict"]["valueCode"] == "rejected"
    assert outputs["reason"]["valueString"] == words
    provenance = bundle["entry"][-1]["resource"]
    assert provenance["reason"][0]["coding"][0]["code"] == code
    assert provenance["activity"]["coding"][0]["code"] == "NULLIFY"


def test_amend_corrects_the_value_and_keeps_the_ai_value_in_a_note() -> None:
    """The amended Observation carries the new value, status amended, and a note with both
    values; the other Observation is final; the report is final and its conclusion names the
    amendment; the Task's output names the amended Observation; the Provenance's activity is
    amend."""
    verdict = Verdict(
        "amended", RAD, note="thin slices", amendment=Amendment("Observation/o2", 7.5)
    )
    bundle = verdict_bundle(_record(), verdict, NOW, BASE_URL)
    observations, report, task = _parts(bundle)
    assert [o["status"] for o in observations] == ["final", "amended"]
    assert observations[1]["valueQuantity"] == {"value": 7.5, "unit": "mm", "code": "mm"}
    assert observations[1]["note"][-1]["text"] == (
        f"Amended by Rita Adler on {NOW.isoformat()}: the AI measured 6.1 mm, the radiologist "
        "7.5 mm. thin slices"
    )
    assert report["status"] == "final"
    assert report["conclusion"].endswith(" Amended by the radiologist: Diameter 7.5 mm.")
    outputs = {o["type"]["coding"][0]["code"]: o for o in task["output"]}
    assert outputs["amended"]["valueReference"] == {"reference": "Observation/o2"}
    assert bundle["entry"][-1]["resource"]["activity"]["text"] == "amend"


def test_amend_of_a_finding_outside_the_report_or_without_a_value_is_refused() -> None:
    for observation, message in (
        ("Observation/o9", "not one of this report's findings"),
        ("Observation/o1", "no measured value"),
    ):
        verdict = Verdict("amended", RAD, amendment=Amendment(observation, 1.0))
        with pytest.raises(InvalidVerdict, match=message):
            verdict_bundle(_record(), verdict, NOW, BASE_URL)


def test_the_decided_task_enters_the_outbox_and_its_event_can_be_rebuilt_from_it_alone() -> None:
    """The completed Task is tagged for the outbox; verdict_event rebuilds finding.rejected
    from it (reason code and words, verifier, Provenance once the server resolved it, a
    message id derived from the Task)."""
    verdict = Verdict("rejected", RAD, REJECT_REASONS["wrong-location"], "left, not right")
    bundle = verdict_bundle(_record(), verdict, NOW, BASE_URL)
    task = dict(bundle["entry"][3]["resource"])
    assert OUTBOX_TAG in task["meta"]["tag"]
    task["relevantHistory"] = [{"reference": "Provenance/p9"}]  # as the server resolved it
    task["focus"] = {"reference": "DiagnosticReport/r1"}
    task["input"] = [
        {
            "type": {
                "coding": [{"system": "urn:radmesh:task-input", "code": "study-instance-uid"}]
            },
            "valueString": "1.2.826.0.1.3680043.10.7",
        }
    ]
    event = verdict_event(task)
    assert isinstance(event, FindingRejected)
    assert (event.reason_code, event.reason) == (
        "wrong-location",
        "Wrong location: left, not right",
    )
    assert (event.verifier, event.provenance, event.task) == (
        RAD.reference,
        "Provenance/p9",
        "Task/t1",
    )
    assert event.message_id == verdict_event(task).message_id
