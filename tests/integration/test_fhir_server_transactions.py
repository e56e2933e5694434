"""Development FHIR server (deploy/fhir-server): transaction and batch Bundles.

Transactions are atomic (rolled back on any failing entry), urn:uuid references are rewritten,
conditional creates (request.ifNoneExist) are idempotent, and If-Match mismatches answer 412.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import Infrastructure
from tests.integration.fhir_http import (
    FhirHttp,
    Json,
    answering_fhir,
    post_entry,
    tagged,
    transaction,
    urn,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fhir(infra: Infrastructure) -> Iterator[FhirHttp]:
    with answering_fhir(infra.fhir_base_url, timeout=60) as client:
        yield client


def study_for(patient_ref: str, tag: str) -> Json:
    return tagged(
        {
            "resourceType": "ImagingStudy",
            "status": "available",
            "subject": {"reference": patient_ref},
        },
        tag,
    )


def test_transaction_creates_entries_and_rewrites_urn_uuid_references(fhir: FhirHttp) -> None:
    """Entries are created (201) and a urn:uuid reference points at the created resource's id."""
    tag = uuid.uuid4().hex
    patient_urn = urn()
    resp = fhir.bundle(
        transaction(
            post_entry(
                tagged({"resourceType": "Patient", "active": True}, tag), full_url=patient_urn
            ),
            post_entry(study_for(patient_urn, tag)),
        )
    )
    assert resp.status_code == 200, resp.text
    result = resp.json()
    assert result["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in result["entry"]]
    assert all(s.startswith("201") for s in statuses), statuses
    patient_location = result["entry"][0]["response"]["location"]
    assert patient_location.startswith("Patient/") and patient_location.endswith("/_history/1")
    patient_id = patient_location.split("/")[1]
    study_id = result["entry"][1]["response"]["location"].split("/")[1]
    study = fhir.get(f"ImagingStudy/{study_id}").json()
    assert study["subject"]["reference"] == f"Patient/{patient_id}"


def test_transaction_with_invalid_last_entry_stores_nothing(fhir: FhirHttp) -> None:
    """A transaction whose last entry is invalid fails (400) and none of its earlier entries exist."""
    tag = uuid.uuid4().hex
    patient_urn = urn()
    entries = [
        post_entry(tagged({"resourceType": "Patient"}, tag), full_url=patient_urn),
        *[post_entry(study_for(patient_urn, tag)) for _ in range(5)],
        post_entry(tagged({"resourceType": "Patient", "birthDate": "not-a-date"}, tag)),
    ]
    resp = fhir.bundle(transaction(*entries))
    assert resp.status_code == 400, resp.text
    assert resp.json()["resourceType"] == "OperationOutcome"
    assert fhir.count_tagged("Patient", tag) == 0
    assert fhir.count_tagged("ImagingStudy", tag) == 0


def test_transaction_with_unknown_type_entry_is_rolled_back(fhir: FhirHttp) -> None:
    """An entry of an unknown resource type fails the whole transaction (nothing stored)."""
    tag = uuid.uuid4().hex
    resp = fhir.bundle(
        transaction(
            post_entry(tagged({"resourceType": "Patient"}, tag)),
            {
                "fullUrl": urn(),
                "resource": {"resourceType": "Nope"},
                "request": {"method": "POST", "url": "Nope"},
            },
        )
    )
    assert resp.status_code in (400, 404), resp.text
    assert fhir.count_tagged("Patient", tag) == 0


def test_rolled_back_update_restores_previous_version(fhir: FhirHttp) -> None:
    """An update inside a failed transaction leaves the resource at its previous version."""
    tag = uuid.uuid4().hex
    created = fhir.post("Patient", tagged({"resourceType": "Patient", "active": True}, tag)).json()
    updated = {**created, "active": False}
    resp = fhir.bundle(
        transaction(
            {"resource": updated, "request": {"method": "PUT", "url": f"Patient/{created['id']}"}},
            post_entry({"resourceType": "Observation", "code": {"text": "no status"}}),
        )
    )
    assert resp.status_code == 400, resp.text
    current = fhir.get(f"Patient/{created['id']}").json()
    assert current["meta"]["versionId"] == "1"
    assert current["active"] is True
    history = fhir.get(f"Patient/{created['id']}/_history").json()
    assert len(history["entry"]) == 1


def test_conditional_create_in_transaction_is_idempotent(fhir: FhirHttp) -> None:
    """Posting the same transaction of 25 ifNoneExist entries twice creates each resource once.

    The second run answers 200 for every entry with the ids of the first run; upstream Medplum
    refuses transactions with that many conditional entries.
    """
    tag = uuid.uuid4().hex
    system = f"urn:radmesh:test:{tag}"

    def build() -> Json:
        entries = []
        for i in range(25):
            patient = tagged(
                {"resourceType": "Patient", "identifier": [{"system": system, "value": str(i)}]},
                tag,
            )
            entries.append(post_entry(patient, if_none_exist=f"identifier={system}|{i}"))
        return transaction(*entries)

    first = fhir.bundle(build())
    assert first.status_code == 200, first.text
    assert all(e["response"]["status"].startswith("201") for e in first.json()["entry"])
    second = fhir.bundle(build())
    assert second.status_code == 200, second.text
    assert all(e["response"]["status"].startswith("200") for e in second.json()["entry"])
    ids_first = [e["response"]["location"].split("/")[1] for e in first.json()["entry"]]
    ids_second = [e["resource"]["id"] for e in second.json()["entry"]]
    assert ids_first == ids_second
    assert fhir.count_tagged("Patient", tag) == 25


def test_conditional_create_reference_resolves_to_existing_resource(fhir: FhirHttp) -> None:
    """A urn:uuid pointing at an ifNoneExist entry that matched resolves to the existing resource."""
    tag = uuid.uuid4().hex
    system = f"urn:radmesh:test:{tag}"
    existing = fhir.post(
        "Patient",
        tagged({"resourceType": "Patient", "identifier": [{"system": system, "value": "p"}]}, tag),
    ).json()
    patient_urn = urn()
    resp = fhir.bundle(
        transaction(
            post_entry(
                tagged(
                    {"resourceType": "Patient", "identifier": [{"system": system, "value": "p"}]},
                    tag,
                ),
                full_url=patient_urn,
                if_none_exist=f"identifier={system}|p",
            ),
            post_entry(study_for(patient_urn, tag)),
        )
    )
    assert resp.status_code == 200, resp.text
    study_id = resp.json()["entry"][1]["response"]["location"].split("/")[1]
    study = fhir.get(f"ImagingStudy/{study_id}").json()
    assert study["subject"]["reference"] == f"Patient/{existing['id']}"
    assert fhir.count_tagged("Patient", tag) == 1


def test_if_match_mismatch_in_transaction_returns_412_and_rolls_back(fhir: FhirHttp) -> None:
    """request.ifMatch with a stale version fails the transaction with 412; nothing is stored."""
    tag = uuid.uuid4().hex
    created = fhir.post("Patient", tagged({"resourceType": "Patient", "active": True}, tag)).json()
    resp = fhir.bundle(
        transaction(
            post_entry(tagged({"resourceType": "Patient"}, tag)),
            {
                "resource": {**created, "active": False},
                "request": {"method": "PUT", "url": f"Patient/{created['id']}", "ifMatch": 'W/"7"'},
            },
        )
    )
    assert resp.status_code == 412, resp.text
    assert fhir.count_tagged("Patient", tag) == 1
    assert fhir.get(f"Patient/{created['id']}").json()["meta"]["versionId"] == "1"


def test_batch_entries_succeed_or_fail_independently(fhir: FhirHttp) -> None:
    """In a batch Bundle a failing entry gets its own error status; the others are stored."""
    tag = uuid.uuid4().hex
    resp = fhir.bundle(
        transaction(
            post_entry(tagged({"resourceType": "Patient"}, tag)),
            post_entry(tagged({"resourceType": "Patient", "birthDate": "bad"}, tag)),
            post_entry(tagged({"resourceType": "Patient"}, tag)),
            kind="batch",
        )
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert statuses[0].startswith("201")
    assert statuses[1].startswith("400")
    assert statuses[2].startswith("201")
    assert fhir.count_tagged("Patient", tag) == 2


def test_large_transaction_is_accepted(fhir: FhirHttp) -> None:
    """A transaction of 2,000 entries (a few MB) is processed in one request."""
    tag = uuid.uuid4().hex
    patient_urn = urn()
    entries = [post_entry(tagged({"resourceType": "Patient"}, tag), full_url=patient_urn)]
    entries += [post_entry(study_for(patient_urn, tag)) for _ in range(1999)]
    resp = fhir.bundle(transaction(*entries))
    assert resp.status_code == 200, resp.text[:500]
    assert len(resp.json()["entry"]) == 2000
    assert fhir.count_tagged("ImagingStudy", tag) == 1999
