"""Unit tests of the FHIR transaction Bundle of a sample study (samples.fhir_records)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import requests

from samples import dicom_series, fhir_records
from samples.dicom_series import StudyInfo
from tests.unit.samples.test_dicom_series import FakePhantom

DICOMWEB = "http://127.0.0.1:8042/dicom-web"


def _info(body_part: str = "HEAD") -> StudyInfo:
    volume = np.zeros((3, 32, 32), dtype=np.int16)
    phantom = FakePhantom(body_part, volume, (5.0, 0.8, 0.8))
    return dicom_series.describe_study(phantom, scenario=f"{body_part.lower()}-x", seed=2)


def _bundle(info: StudyInfo) -> dict[str, Any]:
    refs = [
        fhir_records.InstanceRef(info.sop_instance_uid(i), "1.2.840.10008.5.1.4.1.1.2", i + 1)
        for i in range(info.slices)
    ]
    return fhir_records.imaging_study_bundle(info, refs, dicomweb_root=DICOMWEB)


def _by_type(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["resource"]["resourceType"]: e for e in bundle["entry"]}


def test_every_entry_is_a_conditional_create_on_its_own_identifier() -> None:
    """Each entry is POST with ifNoneExist=identifier=system|value of the resource itself."""
    bundle = _bundle(_info())
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "transaction"
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert sorted(kinds) == sorted(
        ["Patient", "Practitioner", "Endpoint", "ServiceRequest", "ImagingStudy"]
    )
    for entry in bundle["entry"]:
        resource, request = entry["resource"], entry["request"]
        assert request["method"] == "POST"
        assert request["url"] == resource["resourceType"]
        assert entry["fullUrl"].startswith("urn:uuid:")
        condition = request["ifNoneExist"]
        assert condition.startswith("identifier=")
        system, _, value = condition.removeprefix("identifier=").partition("|")
        assert any(
            i.get("system") == system and i.get("value") == value for i in resource["identifier"]
        ), condition


def test_bundle_is_deterministic() -> None:
    """The same study gives the same Bundle (same fullUrls, so re-posting is idempotent)."""
    assert json.dumps(_bundle(_info()), sort_keys=True) == json.dumps(
        _bundle(_info()), sort_keys=True
    )


def test_references_point_to_entries_of_the_bundle() -> None:
    """subject/requester/basedOn/endpoint references resolve to fullUrls within the Bundle."""
    bundle = _bundle(_info())
    entries = _by_type(bundle)
    urls = {t: e["fullUrl"] for t, e in entries.items()}
    request = entries["ServiceRequest"]["resource"]
    study = entries["ImagingStudy"]["resource"]
    assert request["subject"]["reference"] == urls["Patient"]
    assert request["requester"]["reference"] == urls["Practitioner"]
    assert study["subject"]["reference"] == urls["Patient"]
    assert study["basedOn"] == [{"reference": urls["ServiceRequest"]}]
    assert study["endpoint"] == [{"reference": urls["Endpoint"]}]


def test_service_request_is_an_active_order_with_acsn_identifier() -> None:
    """The order is active/order with the ACSN-typed accession number and a LOINC code."""
    info = _info("CHEST")
    request = _by_type(_bundle(info))["ServiceRequest"]["resource"]
    assert request["status"] == "active"
    assert request["intent"] == "order"
    (identifier,) = request["identifier"]
    assert identifier["value"] == info.accession_number
    assert identifier["type"]["coding"] == [
        {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}
    ]
    assert request["code"]["coding"][0]["system"] == "http://loinc.org"
    assert request["code"]["coding"][0]["code"] == "29252-4"


def test_imaging_study_describes_the_series_and_instances() -> None:
    """ImagingStudy: available, urn:dicom:uid identifier, counts, series/instances, endpoint."""
    info = _info()
    entries = _by_type(_bundle(info))
    study = entries["ImagingStudy"]["resource"]
    assert study["status"] == "available"
    assert {"use": "official", "system": "urn:dicom:uid",
            "value": f"urn:oid:{info.study_instance_uid}"} in study["identifier"]  # fmt: skip
    assert any(i["value"] == info.accession_number for i in study["identifier"])
    assert study["numberOfSeries"] == 1
    assert study["numberOfInstances"] == info.slices
    assert study["started"].startswith(
        f"{info.study_date[:4]}-{info.study_date[4:6]}-{info.study_date[6:]}T"
    )
    (series,) = study["series"]
    assert series["uid"] == info.series_instance_uid
    assert series["modality"]["code"] == "CT"
    assert series["bodySite"]["code"] == "69536005"
    assert [i["uid"] for i in series["instance"]] == [
        info.sop_instance_uid(i) for i in range(info.slices)
    ]
    assert series["instance"][0]["sopClass"]["code"] == "urn:oid:1.2.840.10008.5.1.4.1.1.2"
    assert [i["number"] for i in series["instance"]] == [1, 2, 3]
    endpoint = entries["Endpoint"]["resource"]
    assert endpoint["address"] == DICOMWEB
    assert endpoint["connectionType"] == {
        "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
        "code": "dicom-wado-rs",
    }


def test_patient_record_matches_the_dicom_patient() -> None:
    """The Patient has the DICOM PatientID as MR identifier, birth date and gender."""
    info = _info()
    patient = _by_type(_bundle(info))["Patient"]["resource"]
    assert patient["identifier"][0]["value"] == info.patient.patient_id
    assert patient["birthDate"].replace("-", "") == info.patient.birth_date
    assert patient["gender"] == {"F": "female", "M": "male"}[info.patient.sex]
    assert patient["name"][0]["family"].upper() == info.patient.name.split("^")[0]


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("ImagingStudy/abc/_history/1", "ImagingStudy/abc"),
        ("http://x/fhir/ImagingStudy/42/_history/3", "ImagingStudy/42"),
        ("ImagingStudy/7", "ImagingStudy/7"),
    ],
)
def test_transaction_response_locations_give_resource_ids(
    location: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """post_transaction reads ids from response.location, with or without _history."""
    bundle = _bundle(_info())

    class Reply:
        status_code = 200
        text = ""

        def json(self) -> dict[str, Any]:
            return {
                "resourceType": "Bundle",
                "type": "transaction-response",
                "entry": [
                    {"response": {"status": "201 Created", "location": location}}
                    for _ in bundle["entry"]
                ],
            }

    monkeypatch.setattr(requests, "post", lambda *a, **k: Reply())
    result = fhir_records.post_transaction("http://127.0.0.1:1/fhir", bundle)
    assert result.ids["ImagingStudy"] == expected
    assert all(result.created.values())
