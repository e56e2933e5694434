"""The EHR side of a sample study: one FHIR R4 transaction Bundle with conditional creates.

The Bundle holds the Patient, the ordering Practitioner, the ServiceRequest (the order, with the
accession number as its ACSN identifier), an Endpoint for the PACS's DICOMweb root and the
ImagingStudy. Every entry is a conditional create (``request.ifNoneExist`` on an identifier),
so posting the same study twice creates nothing new; entries reference each other by their
``urn:uuid:`` fullUrl, which the server resolves to the existing or new resource.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import requests

from samples.dicom_series import StudyInfo
from shared.fhir import conditional_entry

FHIR_JSON = "application/fhir+json"

# Identifier systems of the synthetic hospital.
PATIENT_ID_SYSTEM = "urn:radmesh:samples:patient-id"
PRACTITIONER_ID_SYSTEM = "urn:radmesh:samples:practitioner-id"
ACCESSION_SYSTEM = "urn:radmesh:samples:accession"
ENDPOINT_ID_SYSTEM = "urn:radmesh:samples:endpoint"
DICOM_UID_SYSTEM = "urn:dicom:uid"

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
ENDPOINT_CONNECTION_TYPE = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
SOP_CLASS_SYSTEM = "urn:ietf:rfc:3986"

# LOINC/RSNA Radiology Playbook procedure codes of the orders.
PROCEDURE_CODES: dict[str, tuple[str, str]] = {
    "HEAD": ("30799-1", "CT Head WO contrast"),
    "CHEST": ("29252-4", "CT Chest WO contrast"),
}
BODY_SITES: dict[str, tuple[str, str]] = {
    "HEAD": ("69536005", "Head structure"),
    "CHEST": ("51185008", "Thoracic structure"),
}


@dataclass(frozen=True)
class InstanceRef:
    """What ImagingStudy.series.instance needs of one stored instance."""

    sop_instance_uid: str
    sop_class_uid: str
    number: int


def _uuid(*parts: str) -> str:
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, '|'.join(('radmesh-samples', *parts)))}"


def _token(system: str, value: str) -> str:
    """``identifier=system|value`` for ifNoneExist (':' and '/' kept literal, as in the spec)."""
    return f"identifier={system}|{value}"


def _acsn_identifier(accession: str) -> dict[str, Any]:
    return {
        "use": "usual",
        "type": {"coding": [{"system": V2_0203, "code": "ACSN"}]},
        "system": ACCESSION_SYSTEM,
        "value": accession,
    }


def _human_name(dicom_name: str) -> dict[str, Any]:
    family, _, rest = dicom_name.partition("^")
    given = [g for g in rest.split("^")[:2] if g]
    name: dict[str, Any] = {"use": "official", "family": family.title()}
    if given:
        name["given"] = [g.title() for g in given]
    return name


def _practitioner_name(dicom_name: str) -> dict[str, Any]:
    parts = (dicom_name.split("^") + [""] * 5)[:5]
    family, given, middle, prefix, _suffix = parts
    name: dict[str, Any] = {"family": family.title()}
    if given or middle:
        name["given"] = [p.title() for p in (given, middle) if p]
    if prefix:
        name["prefix"] = [prefix.title() + "."]
    return name


def _entry(full_url: str, resource: dict[str, Any], if_none_exist: str) -> dict[str, Any]:
    return conditional_entry(resource, full_url, if_none_exist)


def imaging_study_bundle(
    info: StudyInfo,
    instances: list[InstanceRef],
    *,
    dicomweb_root: str,
    modality: str = "CT",
    with_imaging_study: bool = True,
) -> dict[str, Any]:
    """The transaction Bundle registering `info`'s order and imaging study (the order only,
    without `with_imaging_study`: a site whose PACS does not sync DICOM to FHIR)."""
    patient = info.patient
    patient_url = _uuid("Patient", patient.patient_id)
    practitioner_url = _uuid("Practitioner", info.referring_physician)
    request_url = _uuid("ServiceRequest", info.accession_number)
    endpoint_url = _uuid("Endpoint", dicomweb_root)
    study_url = _uuid("ImagingStudy", info.study_instance_uid)
    practitioner_id = "RMP-" + uuid.uuid5(uuid.NAMESPACE_URL, info.referring_physician).hex[:10]
    endpoint_id = "dicomweb-" + uuid.uuid5(uuid.NAMESPACE_URL, dicomweb_root).hex[:12]
    code, display = PROCEDURE_CODES.get(info.body_part, ("", f"CT {info.body_part.title()}"))
    procedure: dict[str, Any] = (
        {"coding": [{"system": LOINC, "code": code, "display": display}], "text": display}
        if code
        else {"text": display}
    )
    site_code, site_display = BODY_SITES.get(info.body_part, ("", info.body_part.title()))
    started = info.started.isoformat()
    modality_coding = {"system": DCM, "code": modality}

    patient_resource: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [
            {
                "use": "usual",
                "type": {"coding": [{"system": V2_0203, "code": "MR"}]},
                "system": PATIENT_ID_SYSTEM,
                "value": patient.patient_id,
            }
        ],
        "active": True,
        "name": [_human_name(patient.name)],
        "gender": {"F": "female", "M": "male"}.get(patient.sex, "unknown"),
        "birthDate": (
            f"{patient.birth_date[:4]}-{patient.birth_date[4:6]}-{patient.birth_date[6:]}"
        ),
    }
    practitioner_resource: dict[str, Any] = {
        "resourceType": "Practitioner",
        "identifier": [{"system": PRACTITIONER_ID_SYSTEM, "value": practitioner_id}],
        "active": True,
        "name": [_practitioner_name(info.referring_physician)],
    }
    service_request: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "identifier": [_acsn_identifier(info.accession_number)],
        "status": "active",
        "intent": "order",
        "category": [{"coding": [{"system": SNOMED, "code": "363679005", "display": "Imaging"}]}],
        "code": procedure,
        "subject": {"reference": patient_url},
        "authoredOn": started,
        "requester": {"reference": practitioner_url},
    }
    if site_code:  # FHIR allows no empty arrays: a part without a SNOMED code gets no bodySite
        service_request["bodySite"] = [
            {"coding": [{"system": SNOMED, "code": site_code, "display": site_display}]}
        ]
    endpoint: dict[str, Any] = {
        "resourceType": "Endpoint",
        "identifier": [{"system": ENDPOINT_ID_SYSTEM, "value": endpoint_id}],
        "status": "active",
        "connectionType": {"system": ENDPOINT_CONNECTION_TYPE, "code": "dicom-wado-rs"},
        "name": "radmesh PACS (Orthanc) DICOMweb",
        "payloadType": [{"text": "DICOM"}],
        "payloadMimeType": ["application/dicom"],
        "address": dicomweb_root,
    }
    series: dict[str, Any] = {
        "uid": info.series_instance_uid,
        "number": info.series_number,
        "modality": modality_coding,
        "description": info.series_description,
        "numberOfInstances": len(instances),
        "endpoint": [{"reference": endpoint_url}],
        "started": started,
        "instance": [
            {
                "uid": ref.sop_instance_uid,
                "sopClass": {"system": SOP_CLASS_SYSTEM, "code": f"urn:oid:{ref.sop_class_uid}"},
                "number": ref.number,
            }
            for ref in instances
        ],
    }
    if site_code:
        series["bodySite"] = {"system": SNOMED, "code": site_code, "display": site_display}
    imaging_study: dict[str, Any] = {
        "resourceType": "ImagingStudy",
        "identifier": [
            {
                "use": "official",
                "system": DICOM_UID_SYSTEM,
                "value": f"urn:oid:{info.study_instance_uid}",
            },
            _acsn_identifier(info.accession_number),
        ],
        "status": "available",
        "modality": [modality_coding],
        "subject": {"reference": patient_url},
        "started": started,
        "basedOn": [{"reference": request_url}],
        "referrer": {"reference": practitioner_url},
        "endpoint": [{"reference": endpoint_url}],
        "numberOfSeries": 1,
        "numberOfInstances": len(instances),
        "procedureCode": [procedure],
        "description": info.study_description,
        "series": [series],
    }
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            _entry(patient_url, patient_resource, _token(PATIENT_ID_SYSTEM, patient.patient_id)),
            _entry(
                practitioner_url,
                practitioner_resource,
                _token(PRACTITIONER_ID_SYSTEM, practitioner_id),
            ),
            _entry(endpoint_url, endpoint, _token(ENDPOINT_ID_SYSTEM, endpoint_id)),
            _entry(request_url, service_request, _token(ACCESSION_SYSTEM, info.accession_number)),
            *(
                [
                    _entry(
                        study_url,
                        imaging_study,
                        _token(DICOM_UID_SYSTEM, f"urn:oid:{info.study_instance_uid}"),
                    )
                ]
                if with_imaging_study
                else []
            ),
        ],
    }


@dataclass(frozen=True)
class TransactionResult:
    """Ids (``Type/id``) of the resources of the Bundle, and whether each was newly created."""

    ids: dict[str, str]
    created: dict[str, bool]


def post_transaction(
    fhir_base_url: str, bundle: dict[str, Any], *, timeout: float = 60.0
) -> TransactionResult:
    """POST the transaction; returns the resulting resource ids by resource type."""
    response = requests.post(
        fhir_base_url.rstrip("/"),
        json=bundle,
        headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON},
        timeout=timeout,
    )
    if response.status_code >= 300:
        raise RuntimeError(
            f"FHIR transaction -> HTTP {response.status_code}: {response.text[:500]}"
        )
    answer: dict[str, Any] = response.json()
    ids: dict[str, str] = {}
    created: dict[str, bool] = {}
    for sent, got in zip(bundle["entry"], answer.get("entry", []), strict=False):
        kind = sent["resource"]["resourceType"]
        reply = got.get("response", {})
        location = str(reply.get("location", ""))
        resource = got.get("resource") or {}
        if location:
            # "ImagingStudy/123/_history/1" or an absolute URL ending that way
            parts = location.split("/")
            if "_history" in parts:
                parts = parts[: parts.index("_history")]
            ids[kind] = f"{kind}/{parts[-1]}"
        elif resource.get("id"):
            ids[kind] = f"{kind}/{resource['id']}"
        created[kind] = str(reply.get("status", "")).startswith("201")
    return TransactionResult(ids=ids, created=created)
