"""Development FHIR server (deploy/fhir-server): CRUD, versioning, validation, conditional create.

Runs against the server started by deploy/fhir-server/up.sh (infra.fhir_base_url).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import Infrastructure
from tests.integration.fhir_http import FHIR_JSON, TAG_SYSTEM, FhirHttp, Json, answering_fhir

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fhir(infra: Infrastructure) -> Iterator[FhirHttp]:
    with answering_fhir(infra.fhir_base_url) as client:
        yield client


def unique_tag() -> tuple[str, str]:
    return TAG_SYSTEM, uuid.uuid4().hex


def patient(tag: tuple[str, str], family: str = "Test") -> Json:
    system, code = tag
    return {
        "resourceType": "Patient",
        "meta": {"tag": [{"system": system, "code": code}]},
        "identifier": [{"system": f"urn:radmesh:test:{code}", "value": family}],
        "name": [{"family": family, "given": ["Ann"]}],
    }


def test_metadata_returns_r4_capability_statement(fhir: FhirHttp) -> None:
    """GET /metadata answers a CapabilityStatement for FHIR 4.0.1 in application/fhir+json."""
    resp = fhir.get("metadata")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith(FHIR_JSON)
    body = resp.json()
    assert body["resourceType"] == "CapabilityStatement"
    assert body["fhirVersion"] == "4.0.1"
    types = {r["type"] for r in body["rest"][0]["resource"]}
    assert {"Patient", "ImagingStudy", "Observation", "DiagnosticReport", "Subscription"} <= types


def test_create_assigns_id_version_1_etag_and_location(fhir: FhirHttp) -> None:
    """POST returns 201 with a server id, meta.versionId "1", ETag W/"1" and a versioned Location."""
    resp = fhir.post("Patient", patient(unique_tag()))
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["id"]
    assert body["meta"]["versionId"] == "1"
    assert resp.headers["ETag"] == 'W/"1"'
    assert resp.headers["Location"].endswith(f"/Patient/{body['id']}/_history/1")
    assert fhir.get(f"Patient/{body['id']}").json() == body


def test_updates_number_versions_1_2_3_with_etag(fhir: FhirHttp) -> None:
    """Each PUT with changed content gets the next integer versionId and a matching ETag."""
    created = fhir.create(patient(unique_tag()))
    current = created
    for expected in ("2", "3"):
        current["active"] = not current.get("active", False)
        resp = fhir.put(f"Patient/{created['id']}", current)
        assert resp.status_code == 200, resp.text
        current = resp.json()
        assert current["meta"]["versionId"] == expected
        assert resp.headers["ETag"] == f'W/"{expected}"'
    read = fhir.get(f"Patient/{created['id']}")
    assert read.headers["ETag"] == 'W/"3"'
    assert read.json()["meta"]["versionId"] == "3"


def test_vread_returns_each_historical_version(fhir: FhirHttp) -> None:
    """GET /Patient/{id}/_history/{n} returns the content of version n."""
    created = fhir.create(patient(unique_tag(), family="First"))
    changed = {**created, "name": [{"family": "Second"}]}
    assert fhir.put(f"Patient/{created['id']}", changed).status_code == 200
    v1 = fhir.get(f"Patient/{created['id']}/_history/1").json()
    v2 = fhir.get(f"Patient/{created['id']}/_history/2").json()
    assert v1["name"][0]["family"] == "First"
    assert v2["name"][0]["family"] == "Second"
    assert fhir.get(f"Patient/{created['id']}/_history/9").status_code == 404


def test_history_is_newest_first_and_stable_across_reads(fhir: FhirHttp) -> None:
    """_history lists versions newest first, and reading it twice gives the same order."""
    created = fhir.create(patient(unique_tag()))
    for active in (True, False):
        assert (
            fhir.put(f"Patient/{created['id']}", {**created, "active": active}).status_code == 200
        )
    orders = []
    for _ in range(2):
        bundle = fhir.get(f"Patient/{created['id']}/_history").json()
        assert bundle["type"] == "history"
        orders.append([e["resource"]["meta"]["versionId"] for e in bundle["entry"]])
    assert orders == [["3", "2", "1"], ["3", "2", "1"]]


def test_post_with_id_does_not_overwrite_existing_resource(fhir: FhirHttp) -> None:
    """POST carrying the id of an existing resource creates a new resource with a new id."""
    tag = unique_tag()
    original = fhir.create(patient(tag, family="Original"))
    intruder = {**patient(tag, family="Intruder"), "id": original["id"]}
    resp = fhir.post("Patient", intruder)
    assert resp.status_code == 201, resp.text
    assert resp.json()["id"] != original["id"]
    stored = fhir.get(f"Patient/{original['id']}").json()
    assert stored["name"][0]["family"] == "Original"
    assert stored["meta"]["versionId"] == "1"


def test_put_with_client_id_creates_resource_with_201(fhir: FhirHttp) -> None:
    """PUT to a new id creates the resource (201, version 1); a second PUT updates it (200)."""
    rid = f"radmesh-{uuid.uuid4().hex[:16]}"
    resp = fhir.put(f"Patient/{rid}", {**patient(unique_tag()), "id": rid})
    assert resp.status_code == 201, resp.text
    assert resp.json()["meta"]["versionId"] == "1"
    resp = fhir.put(f"Patient/{rid}", {**patient(unique_tag()), "id": rid, "active": True})
    assert resp.status_code == 200
    assert resp.json()["meta"]["versionId"] == "2"


def test_invalid_resource_is_rejected_with_400_operation_outcome(fhir: FhirHttp) -> None:
    """A resource violating R4 (bad date, unknown element, missing required, bad code) is a 400."""
    bad_resources: list[Json] = [
        {"resourceType": "Patient", "birthDate": "not-a-date"},
        {"resourceType": "Patient", "notAnElement": True},
        {"resourceType": "Observation", "code": {"text": "missing required status"}},
        {"resourceType": "ImagingStudy", "status": "not-a-status", "subject": {"display": "x"}},
    ]
    for bad in bad_resources:
        resp = fhir.post(bad["resourceType"], bad)
        assert resp.status_code == 400, (bad, resp.text)
        outcome = resp.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["severity"] == "error"


def test_unknown_resource_type_returns_404(fhir: FhirHttp) -> None:
    """Creating, reading or searching a type that is not an R4 resource type answers 404."""
    assert fhir.post("NotAResource", {"resourceType": "NotAResource"}).status_code == 404
    assert fhir.get("NotAResource/1").status_code == 404
    resp = fhir.get("NotAResource")
    assert resp.status_code == 404
    assert resp.json()["resourceType"] == "OperationOutcome"


def test_read_of_missing_resource_returns_404(fhir: FhirHttp) -> None:
    """Reading an id that never existed is a 404 OperationOutcome."""
    resp = fhir.get(f"Patient/{uuid.uuid4()}")
    assert resp.status_code == 404
    assert resp.json()["resourceType"] == "OperationOutcome"


def test_delete_then_read_returns_410_gone(fhir: FhirHttp) -> None:
    """After DELETE, GET of the resource answers 410 Gone and it no longer appears in searches."""
    tag = unique_tag()
    created = fhir.create(patient(tag))
    assert fhir.delete(f"Patient/{created['id']}").status_code in (200, 204)
    resp = fhir.get(f"Patient/{created['id']}")
    assert resp.status_code == 410
    assert resp.json()["resourceType"] == "OperationOutcome"
    bundle = fhir.get("Patient", params={"_tag": f"{tag[0]}|{tag[1]}"}).json()
    assert bundle["total"] == 0


def test_if_match_version_mismatch_returns_412(fhir: FhirHttp) -> None:
    """PUT with If-Match of a stale version answers 412 and stores nothing; the right one succeeds."""
    created = fhir.create(patient(unique_tag()))
    path = f"Patient/{created['id']}"
    assert (
        fhir.put(path, {**created, "active": True}, headers={"If-Match": 'W/"1"'}).status_code
        == 200
    )
    stale = fhir.put(path, {**created, "active": False}, headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert stale.json()["resourceType"] == "OperationOutcome"
    current = fhir.get(path).json()
    assert current["meta"]["versionId"] == "2"
    assert current["active"] is True


def test_conditional_create_with_if_none_exist_returns_existing(fhir: FhirHttp) -> None:
    """POST with If-None-Exist matching one resource answers 200 with it and creates nothing."""
    tag = unique_tag()
    body = patient(tag, family="Conditional")
    condition = {"If-None-Exist": f"identifier=urn:radmesh:test:{tag[1]}|Conditional"}
    first = fhir.post("Patient", body, headers=condition)
    assert first.status_code == 201, first.text
    second = fhir.post("Patient", body, headers=condition)
    assert second.status_code == 200, second.text
    assert second.json()["id"] == first.json()["id"]
    bundle = fhir.get("Patient", params={"_tag": f"{tag[0]}|{tag[1]}"}).json()
    assert bundle["total"] == 1


def test_accepts_application_json_and_answers_fhir_json(fhir: FhirHttp) -> None:
    """A body sent as application/json is accepted; responses are application/fhir+json."""
    resp = fhir.http.post(
        fhir.url("Patient"),
        json=patient(unique_tag()),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        timeout=30,
    )
    assert resp.status_code == 201, resp.text
    assert resp.headers["Content-Type"].startswith(FHIR_JSON)


def test_non_json_content_type_is_rejected(fhir: FhirHttp) -> None:
    """An XML body (not supported by this server) answers 415 instead of being misread."""
    resp = fhir.http.post(
        fhir.url("Patient"),
        data="<Patient xmlns='http://hl7.org/fhir'/>",
        headers={"Content-Type": "application/fhir+xml"},
        timeout=30,
    )
    assert resp.status_code == 415
