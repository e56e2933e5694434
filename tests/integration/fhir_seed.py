"""Seed the FHIR server with one study's record as the mapper leaves it, for notifier and
verification tests: Patient, Practitioner, ServiceRequest (requester), ImagingStudy, Device,
preliminary Observations and a preliminary DiagnosticReport. Every resource is tagged with the
test's own tag; every study has its own UID, so deterministic identifiers never collide."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from shared.ai_transparency import AI_ASSERTED, PRELIMINARY_CONCLUSION, PRELIMINARY_NOTE, UNVERIFIED
from shared.fhir import FhirClient, reference_of
from shared.identifiers import business_identifier
from shared.messages import ModelRef, PostedFinding, ResultsPosted, StudyRef
from shared.settings import FhirSettings
from tests.conftest import Infrastructure

__all__ = [
    "TEST_TAG_SYSTEM",
    "SeededStudy",
    "answering_fhir_client",
    "search_resources",
    "seed_study",
]

TEST_TAG_SYSTEM = "urn:radmesh:test"
SNOMED = "http://snomed.info/sct"


@asynccontextmanager
async def answering_fhir_client(infra: Infrastructure) -> AsyncIterator[FhirClient]:
    """radmesh's FhirClient on the local HAPI FHIR server, after its metadata answers (the test fails otherwise)."""
    client = FhirClient(FhirSettings(base_url=infra.fhir_base_url))
    try:
        await client.execute("metadata", "get")
    except Exception as error:  # the server must be up: deploy/hapi-fhir/up.sh
        await client.close()
        pytest.fail(f"the FHIR server at {infra.fhir_base_url} does not answer: {error}")
    try:
        yield client
    finally:
        await client.close()


async def search_resources(
    fhir: FhirClient, resource_type: str, **params: str
) -> list[dict[str, Any]]:
    """The resources of the first page of a search."""
    bundle = await fhir.execute(resource_type, "get", params=params)
    return [dict(entry["resource"]) for entry in bundle.get("entry", [])]


@dataclass(frozen=True)
class SeededStudy:
    """References of the seeded resources and the values a ResultsPosted about them carries."""

    tag: str
    study_instance_uid: str
    patient: str
    practitioner: str
    service_request: str
    imaging_study: str
    device: str
    observations: tuple[str, ...]
    diagnostic_report: str
    model: ModelRef
    finding_keys: tuple[str, ...]
    present: tuple[bool, ...]
    critical: tuple[bool, ...]
    probabilities: tuple[float | None, ...]

    def results_posted(self, rollout_mode: str = "active") -> ResultsPosted:
        """The results.posted the mapper would publish for this study."""
        return ResultsPosted.model_validate(
            {
                "study": StudyRef(
                    study_instance_uid=self.study_instance_uid,
                    imaging_study=self.imaging_study,
                    patient=self.patient,
                    service_request=self.service_request,
                ),
                "model": self.model,
                "diagnostic_report": self.diagnostic_report,
                "device": self.device,
                "provenance": "Provenance/seeded-by-test",
                "findings": tuple(
                    PostedFinding(
                        finding_key=key,
                        index=0,
                        observation=observation,
                        present=present,
                        probability=probability,
                        critical=critical,
                    )
                    for key, observation, present, critical, probability in zip(
                        self.finding_keys,
                        self.observations,
                        self.present,
                        self.critical,
                        self.probabilities,
                        strict=True,
                    )
                ),
                "rollout_mode": rollout_mode,
            }
        )


def _entry(resource: dict[str, Any], tag: str) -> tuple[str, dict[str, Any]]:
    full_url = f"urn:uuid:{uuid.uuid4()}"
    meta = {**resource.get("meta", {}), "tag": [{"system": TEST_TAG_SYSTEM, "code": tag}]}
    resource = {**resource, "meta": meta}
    return full_url, {
        "fullUrl": full_url,
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"]},
    }


def _observation(
    key: str, display: str, code: str, *, present: bool, probability: float, refs: dict[str, str]
) -> dict[str, Any]:
    """A presence finding as the mapper writes it: Present/Absent plus a probability component."""
    return {
        "resourceType": "Observation",
        "meta": {"security": [AI_ASSERTED]},
        "status": "preliminary",
        "note": [
            {"text": f"{PRELIMINARY_NOTE} (ich-reference, version 1); {UNVERIFIED}. {display}."}
        ],
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "imaging",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": SNOMED, "code": code, "display": display}], "text": key},
        "subject": {"reference": refs["patient"]},
        "basedOn": [{"reference": refs["service_request"]}],
        "derivedFrom": [{"reference": refs["imaging_study"]}],
        "device": {"reference": refs["device"]},
        "valueCodeableConcept": {
            "coding": [
                {"system": SNOMED, "code": "52101004", "display": "Present"}
                if present
                else {"system": SNOMED, "code": "2667000", "display": "Absent"}
            ]
        },
        "component": [
            {
                "code": {
                    "coding": [
                        {
                            "system": "http://dicom.nema.org/resources/ontology/DCM",
                            "code": "122157",
                        }
                    ]
                },
                "valueQuantity": {
                    "value": probability,
                    "unit": "1",
                    "system": "http://unitsofmeasure.org",
                    "code": "1",
                },
            }
        ],
    }


async def seed_study(
    fhir: FhirClient,
    *,
    critical: bool,
    with_requester: bool = True,
    probability: float = 0.93,
) -> SeededStudy:
    """One head CT run of ich-reference: a hemorrhage finding (present and critical when
    `critical`, else absent) and its volume, on the server in one transaction."""
    tag = uuid.uuid4().hex[:12]
    study_uid = f"2.25.{uuid.uuid4().int}"
    refs: dict[str, str] = {}
    entries: list[dict[str, Any]] = []

    def add(name: str, resource: dict[str, Any]) -> None:
        full_url, entry = _entry(resource, tag)
        refs[name] = full_url
        entries.append(entry)

    add("patient", {"resourceType": "Patient", "name": [{"family": "Test", "given": ["Seed"]}]})
    add("practitioner", {"resourceType": "Practitioner", "name": [{"family": "Orderer"}]})
    service_request: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "code": {"coding": [{"system": "http://loinc.org", "code": "24725-4"}]},
        "subject": {"reference": refs["patient"]},
    }
    if with_requester:
        service_request["requester"] = {"reference": refs["practitioner"]}
    add("service_request", service_request)
    add(
        "imaging_study",
        {
            "resourceType": "ImagingStudy",
            "status": "available",
            "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{study_uid}"}],
            "subject": {"reference": refs["patient"]},
            "basedOn": [{"reference": refs["service_request"]}],
        },
    )
    add(
        "device",
        {
            "resourceType": "Device",
            "deviceName": [{"name": "ich-reference", "type": "model-name"}],
            "version": [{"value": "1"}],
        },
    )
    hemorrhage = _observation(
        "intracranial-hemorrhage",
        "Intracranial hemorrhage",
        "1386000",
        present=critical,
        probability=probability if critical else 0.04,
        refs=refs,
    )
    # The identifier the mapper gives a finding's Observation, which its alert shares.
    run = (study_uid, "ich-reference", "1")
    hemorrhage["identifier"] = [
        business_identifier("Observation", *run, "intracranial-hemorrhage", 0)
    ]
    add("hemorrhage", hemorrhage)
    volume = _observation(
        "hemorrhage-volume", "Volume", "118565006", present=critical, probability=0.9, refs=refs
    )
    del volume["valueCodeableConcept"], volume["component"]
    volume["identifier"] = [business_identifier("Observation", *run, "hemorrhage-volume", 0)]
    volume["valueQuantity"] = {
        "value": 12.5,
        "unit": "mL",
        "system": "http://unitsofmeasure.org",
        "code": "mL",
    }
    add("volume", volume)
    add(
        "report",
        {
            "resourceType": "DiagnosticReport",
            "status": "preliminary",
            "code": {"coding": [{"system": "http://loinc.org", "code": "24725-4"}]},
            "subject": {"reference": refs["patient"]},
            "basedOn": [{"reference": refs["service_request"]}],
            "imagingStudy": [{"reference": refs["imaging_study"]}],
            "result": [{"reference": refs["hemorrhage"]}, {"reference": refs["volume"]}],
            "meta": {"security": [AI_ASSERTED]},
            "conclusion": f"{PRELIMINARY_CONCLUSION} — ich-reference, version 1: "
            + ("intracranial hemorrhage present" if critical else "no intracranial hemorrhage"),
        },
    )
    response = await fhir.transaction(
        {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    )
    created = {
        name: reference_of(answer) for name, answer in zip(refs, response["entry"], strict=True)
    }
    return SeededStudy(
        tag=tag,
        study_instance_uid=study_uid,
        patient=created["patient"],
        practitioner=created["practitioner"],
        service_request=created["service_request"],
        imaging_study=created["imaging_study"],
        device=created["device"],
        observations=(created["hemorrhage"], created["volume"]),
        diagnostic_report=created["report"],
        model=ModelRef(id="ich-reference", version="1"),
        finding_keys=("intracranial-hemorrhage", "hemorrhage-volume"),
        present=(critical, critical),
        critical=(critical, False),
        probabilities=(probability if critical else 0.04, None),
    )
