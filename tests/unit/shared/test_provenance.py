"""shared.provenance: a Provenance the transaction created is pinned to the versions it wrote."""

from __future__ import annotations

from typing import Any

from shared.provenance import pinned_provenances

BASE = "http://fhir.example/fhir"


def _bundle() -> dict[str, Any]:
    """A verdict-like transaction: two guarded updates and a new Provenance naming them."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"{BASE}/DiagnosticReport/r",
                "resource": {"resourceType": "DiagnosticReport", "id": "r"},
                "request": {"method": "PUT", "url": "DiagnosticReport/r"},
            },
            {
                "fullUrl": "urn:uuid:0b5e6f0e-2d7a-4d37-9b53-4f8f7f0c0a01",
                "resource": {"resourceType": "Observation"},
                "request": {"method": "POST", "url": "Observation"},
            },
            {
                "fullUrl": "urn:uuid:0b5e6f0e-2d7a-4d37-9b53-4f8f7f0c0a02",
                "resource": {
                    "resourceType": "Provenance",
                    "target": [
                        {"reference": "DiagnosticReport/r"},
                        {"reference": "urn:uuid:0b5e6f0e-2d7a-4d37-9b53-4f8f7f0c0a01"},
                        {"reference": "Patient/elsewhere"},
                    ],
                    "entity": [
                        {"what": {"reference": "urn:uuid:0b5e6f0e-2d7a-4d37-9b53-4f8f7f0c0a01"}}
                    ],
                },
                "request": {"method": "POST", "url": "Provenance"},
            },
        ],
    }


def _response(provenance_status: str) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [
            {"response": {"status": "200 OK", "location": "DiagnosticReport/r/_history/3"}},
            {"response": {"status": "201 Created", "location": "Observation/o/_history/1"}},
            {"response": {"status": provenance_status, "location": "Provenance/p/_history/1"}},
        ],
    }


def test_a_created_provenance_names_the_versions_the_transaction_wrote() -> None:
    """The report updated to version 3 and the Observation created as 1 are its targets at those
    versions; a target outside the transaction is left as it was; the uuid references became
    the ids the server gave."""
    (provenance,) = pinned_provenances(_bundle(), _response("201 Created"))
    assert provenance["id"] == "p"
    assert [t["reference"] for t in provenance["target"]] == [
        "DiagnosticReport/r/_history/3",
        "Observation/o/_history/1",
        "Patient/elsewhere",
    ]
    assert provenance["entity"][0]["what"]["reference"] == "Observation/o"


def test_a_provenance_the_transaction_found_is_not_pinned_again() -> None:
    """A conditional create that found the Provenance (a redelivery) keeps its first versions."""
    assert pinned_provenances(_bundle(), _response("200 OK")) == []


def _answered_with(targets: list[str]) -> dict[str, Any]:
    """The response of a server that returns what it wrote, its Provenance naming `targets`."""
    response = _response("201 Created")
    response["entry"][2]["resource"] = {
        "resourceType": "Provenance",
        "id": "p",
        "target": [{"reference": reference} for reference in targets],
    }
    return response


def test_a_provenance_the_server_pinned_itself_is_not_pinned_again() -> None:
    """A server that versions Provenance.target itself (HAPI's auto-versioned reference paths)
    returned it pinned to the versions written, the target from outside at its current one:
    no PUT is needed."""
    pinned_by_server = _answered_with(
        [
            "DiagnosticReport/r/_history/3",
            "Observation/o/_history/1",
            "Patient/elsewhere/_history/7",
        ]
    )
    assert pinned_provenances(_bundle(), pinned_by_server) == []


def test_a_returned_provenance_with_unversioned_or_other_targets_is_pinned() -> None:
    """A server that returned the Provenance as sent (unversioned targets), or at versions other
    than those the transaction wrote, gets the PUT."""
    as_sent = _answered_with(["DiagnosticReport/r", "Observation/o", "Patient/elsewhere"])
    other = _answered_with(
        ["DiagnosticReport/r/_history/2", "Observation/o/_history/1", "Patient/elsewhere"]
    )
    for response in (as_sent, other):
        (provenance,) = pinned_provenances(_bundle(), response)
        assert provenance["target"][0]["reference"] == "DiagnosticReport/r/_history/3"
