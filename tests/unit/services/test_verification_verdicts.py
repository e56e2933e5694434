"""services.verification.verdicts: request bodies, and the version-guarded verdict transaction."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from services.verification.verdicts import (
    MAX_REASON_LENGTH,
    InvalidVerdict,
    ReviewedRecord,
    Verdict,
    parse_verdict,
    verdict_bundle,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
BASE_URL = "http://fhir.example/fhir/"
VERIFIER = "Practitioner/rad-1"


@pytest.mark.parametrize(
    ("body", "accepted", "message"),
    [
        ([], True, "must be a JSON object"),
        ({}, True, "verifier must be"),
        ({"verifier": "Patient/1"}, True, "verifier must be"),
        ({"verifier": "Practitioner/has space"}, True, "verifier must be"),
        ({"verifier": VERIFIER, "reason": "x"}, True, "unknown field(s) ['reason']"),
        ({"verifier": VERIFIER}, False, "reason is required"),
        ({"verifier": VERIFIER, "reason": 3}, False, "reason is required"),
        ({"verifier": VERIFIER, "reason": "x" * (MAX_REASON_LENGTH + 1)}, False, "longer than"),
    ],
)
def test_bad_bodies_are_refused_saying_what_is_wrong(
    body: Any, accepted: bool, message: str
) -> None:
    with pytest.raises(InvalidVerdict, match=re.escape(message)):
        parse_verdict(body, accepted=accepted)


def test_good_bodies_become_verdicts() -> None:
    assert parse_verdict({"verifier": VERIFIER}, accepted=True) == Verdict(VERIFIER, True)
    assert parse_verdict({"verifier": VERIFIER, "reason": " artefact "}, accepted=False) == (
        Verdict(VERIFIER, False, "artefact")
    )


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
                "security": [{"code": "AIAST"}],
            },
            **extra,
        }

    return ReviewedRecord(
        task=resource("Task", "t1", "1", status="requested", intent="order"),
        report=resource(
            "DiagnosticReport",
            "r1",
            "3",
            status="preliminary",
            result=[{"reference": "Observation/o1"}, {"reference": "Observation/o2"}],
        ),
        observations=[
            resource("Observation", "o1", "2", status="preliminary"),
            resource("Observation", "o2", "5", status="preliminary"),
        ],
    )


def test_accept_makes_everything_final_guarded_by_the_versions_read() -> None:
    """PUT each Observation, the report and the Task with If-Match on the version read; the
    report names the verifier as results interpreter; the Task is completed and owned by the
    verifier; meta.versionId is not sent back, other meta (security labels) is; each entry's
    fullUrl is the resource's absolute URL on the FHIR server."""
    bundle = verdict_bundle(_record(), Verdict(VERIFIER, True), NOW, BASE_URL)
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
    assert [e["resource"]["status"] for e in puts[:3]] == ["final"] * 3
    assert all(e["resource"]["meta"] == {"security": [{"code": "AIAST"}]} for e in puts)
    assert puts[2]["resource"]["resultsInterpreter"] == [{"reference": VERIFIER}]
    task = puts[3]["resource"]
    assert task["status"] == "completed"
    assert task["owner"] == {"reference": VERIFIER}
    assert task["executionPeriod"] == {"end": NOW.isoformat()}
    assert {o["type"]["coding"][0]["code"]: o.get("valueCode") for o in task["output"]}[
        "verdict"
    ] == "accepted"
    assert "statusReason" not in task


def test_accept_provenance_names_the_verifier_and_targets_the_results() -> None:
    """The Provenance is POSTed last (its response entry is the last), agent the verifier
    (type verifier), activity verify, targets the report and each Observation; the Task's
    relevantHistory points at it through its urn:uuid."""
    bundle = verdict_bundle(_record(), Verdict(VERIFIER, True), NOW, BASE_URL)
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
            "who": {"reference": VERIFIER},
        }
    ]
    assert provenance["activity"]["text"] == "verify"
    assert provenance["target"] == [
        {"reference": "DiagnosticReport/r1"},
        {"reference": "Observation/o1"},
        {"reference": "Observation/o2"},
    ]
    assert provenance["recorded"] == NOW.isoformat()
    assert bundle["entry"][-2]["resource"]["relevantHistory"] == [{"reference": entry["fullUrl"]}]
    assert entry["fullUrl"].startswith("urn:uuid:")


def test_reject_cancels_everything_and_records_the_reason() -> None:
    """Observations and report cancelled; the reason is in Task.statusReason, Task.output, a
    note on each Observation and the Provenance's reason; no results interpreter is named."""
    reason = "motion artefact"
    bundle = verdict_bundle(_record(), Verdict(VERIFIER, False, reason), NOW, BASE_URL)
    observations, report, task = (
        [e["resource"] for e in bundle["entry"][:2]],
        bundle["entry"][2]["resource"],
        bundle["entry"][3]["resource"],
    )
    assert [o["status"] for o in observations] == ["cancelled", "cancelled"]
    assert all(o["note"][-1]["text"] == f"Rejected: {reason}" for o in observations)
    assert all(o["note"][-1]["authorReference"] == {"reference": VERIFIER} for o in observations)
    assert report["status"] == "cancelled"
    assert "resultsInterpreter" not in report
    assert task["status"] == "completed"
    assert task["statusReason"] == {"text": reason}
    outputs = {o["type"]["coding"][0]["code"]: o for o in task["output"]}
    assert outputs["verdict"]["valueCode"] == "rejected"
    assert outputs["reason"]["valueString"] == reason
    provenance = bundle["entry"][-1]["resource"]
    assert provenance["reason"] == [{"text": reason}]
    assert provenance["activity"]["coding"][0]["code"] == "NULLIFY"
