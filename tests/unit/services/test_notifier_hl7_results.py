"""services.notifier.hl7_results: the FHIR record of a report as an ORU^R01 an EHR can file."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import hl7
import pytest

from services.notifier.hl7_results import (
    ReportRecord,
    build_oru,
    observation_result_status,
    report_result_status,
)
from shared.errors import PermanentError

NOW = datetime(2026, 12, 2, 8, 30, tzinfo=UTC)
SNOMED = "http://snomed.info/sct"
REPORT: dict[str, Any] = {
    "resourceType": "DiagnosticReport",
    "id": "r1",
    "meta": {"versionId": "1", "lastUpdated": "2026-12-02T08:29:00.000+00:00"},
    "status": "preliminary",
    "code": {"coding": [{"system": "http://loinc.org", "code": "24725-4", "display": "CT Head"}]},
    "effectiveDateTime": "2026-12-02T07:55:00+01:00",
    "conclusion": "AI result, preliminary | not verified: bleed ^ present & 12.5 mL",
}
BLEED: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "o1",
    "status": "preliminary",
    "code": {
        "coding": [{"system": SNOMED, "code": "1386000", "display": "Intracranial hemorrhage"}]
    },
    "valueCodeableConcept": {
        "coding": [{"system": SNOMED, "code": "52101004", "display": "Present"}]
    },
    "component": [
        {
            "code": {
                "coding": [
                    {
                        "system": "http://dicom.nema.org/resources/ontology/DCM",
                        "code": "122157",
                        "display": "Probability",
                    }
                ]
            },
            "valueQuantity": {
                "value": 0.93,
                "unit": "1",
                "system": "http://unitsofmeasure.org",
                "code": "1",
            },
        }
    ],
}
VOLUME: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "o2",
    "status": "preliminary",
    "code": {"coding": [{"system": SNOMED, "code": "118565006", "display": "Volume"}]},
    "valueQuantity": {
        "value": 12.5,
        "unit": "mL",
        "system": "http://unitsofmeasure.org",
        "code": "mL",
    },
}
PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "p1",
    "identifier": [{"system": "urn:oid:1.2.3.4", "value": "MRN-0042"}],
    "name": [{"family": "Doe", "given": ["Jane", "Q"]}],
    "birthDate": "1950-01-31",
    "gender": "female",
}
ORDER: dict[str, Any] = {
    "resourceType": "ServiceRequest",
    "id": "sr1",
    "identifier": [
        {
            "type": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "PLAC"}
                ]
            },
            "system": "urn:radmesh:samples:placer",
            "value": "ORD-77",
        },
        {
            "type": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}
                ]
            },
            "system": "urn:radmesh:samples:accession",
            "value": "ACC-9",
        },
    ],
}


def _oru(
    report: dict[str, Any] = REPORT, observations: list[dict[str, Any]] | None = None
) -> hl7.Message:
    record = ReportRecord(
        report, [BLEED, VOLUME] if observations is None else observations, PATIENT, ORDER
    )
    text = build_oru(
        record,
        now=NOW,
        receiving_application="EHR",
        receiving_facility="WARD",
        sending_facility="RAD",
    )
    assert text.endswith("\r") and "\n" not in text
    return hl7.parse(text)


def test_preliminary_results_are_an_oru_r01_the_ehr_can_match_and_file() -> None:
    """MSH names ORU^R01 v2.5.1 from RADMESH; PID the patient (MRN, name, birth date, sex); ORC
    and OBR the placer order number and the report as filler, OBR-18 the accession number;
    OBR-25 P; the conclusion in NTE with its delimiters escaped."""
    message = _oru()
    msh = message.segment("MSH")
    assert (str(msh[3]), str(msh[4]), str(msh[5]), str(msh[6])) == ("RADMESH", "RAD", "EHR", "WARD")
    assert str(msh[9]) == "ORU^R01^ORU_R01" and str(msh[12]) == "2.5.1"
    assert str(msh[7]) == "20261202083000+0000"
    pid = message.segment("PID")
    assert str(pid[3][0][0]) == "MRN-0042" and str(pid[3][0][4]) == "MR"
    assert (str(pid[5][0][0]), str(pid[5][0][1])) == ("Doe", "Jane Q")
    assert (str(pid[7]), str(pid[8])) == ("19500131", "F")
    orc, obr = message.segment("ORC"), message.segment("OBR")
    assert str(orc[1]) == "RE" and str(orc[2][0][0]) == "ORD-77"
    assert str(obr[2][0][0]) == "ORD-77" and str(obr[3][0][0]) == "r1"
    assert str(obr[4]) == "24725-4^CT Head^LN" and str(obr[18]) == "ACC-9"
    assert str(obr[7]) == "20261202075500+0100"
    assert (str(obr[24]), str(obr[25])) == ("RAD", "P")
    nte = message.segment("NTE")
    assert message.unescape(str(nte[3])) == REPORT["conclusion"]


def test_each_finding_is_an_obx_with_its_probability_under_one_sub_id() -> None:
    """The bleed: CWE present (SNOMED) and its probability NM 0.93 (DCM 122157, unit 1 UCUM),
    both sub-ID 1; its volume: NM 12.5 mL UCUM, sub-ID 2; all preliminary (OBX-11 P)."""
    rows = [
        (str(s[1]), str(s[2]), str(s[3]), str(s[4]), str(s[5]), str(s[6]), str(s[11]))
        for s in _oru().segments("OBX")
    ]
    assert rows == [
        ("1", "CWE", "1386000^Intracranial hemorrhage^SCT", "1", "52101004^Present^SCT", "", "P"),
        ("2", "NM", "122157^Probability^DCM", "1", "0.93", "1^^UCUM", "P"),
        ("3", "NM", "118565006^Volume^SCT", "2", "12.5", "mL^^UCUM", "P"),
    ]


@pytest.mark.parametrize(
    ("report_status", "observation_status", "obr_25", "obx_11"),
    [
        ("final", "final", "F", "F"),
        ("amended", "amended", "C", "C"),
        ("cancelled", "cancelled", "X", "D"),
        ("entered-in-error", "entered-in-error", "X", "W"),
    ],
)
def test_a_verdict_sends_the_state_the_record_is_in_now(
    report_status: str, observation_status: str, obr_25: str, obx_11: str
) -> None:
    """Verified, amended, rejected, retracted: OBR-25 and every OBX-11 say so; a new report
    version is a new control id (the same version, the same one: a redelivery)."""
    report = {**REPORT, "status": report_status, "meta": {"versionId": "2"}}
    observations = [{**o, "status": observation_status} for o in (BLEED, VOLUME)]
    message = _oru(report, observations)
    assert str(message.segment("OBR")[25]) == obr_25
    assert {str(s[11]) for s in message.segments("OBX")} == {obx_11}
    first = str(_oru().segment("MSH")[10])
    assert str(message.segment("MSH")[10]) != first == str(_oru().segment("MSH")[10])


def test_a_report_status_no_oru_can_carry_is_a_permanent_error() -> None:
    with pytest.raises(PermanentError, match="registered"):
        report_result_status("registered")
    assert observation_result_status("registered") == "R"


def test_a_report_without_a_patient_is_not_sent_and_says_why() -> None:
    """No Patient on the FHIR server: no ORU (an EHR cannot file it); a PermanentError saying
    so dead-letters the message."""
    with pytest.raises(PermanentError, match="names no Patient"):
        build_oru(
            ReportRecord(REPORT, [BLEED], None, ORDER),
            now=NOW,
            receiving_application="EHR",
            receiving_facility="",
            sending_facility="RAD",
        )
