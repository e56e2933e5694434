"""Registering a PACS study on the FHIR server when the PACS has it and the FHIR server has no
ImagingStudy yet, as Microsoft's DICOMcast does: identifiers (DICOM UID, accession), the ordering
ServiceRequest found by accession and its patient, each series with its body site and instances
(from QIDO-RS), and the PACS's dicom-wado-rs Endpoint."""

from __future__ import annotations

from typing import Any

import structlog

from shared.dicomweb import DicomWebClient, InstanceInfo, SeriesInfo
from shared.errors import InvalidMessage
from shared.fhir import FhirClient
from shared.identifiers import DICOM_UID_SYSTEM, business_identifier

__all__ = ["find_or_register_imaging_study", "imaging_study_from_pacs"]

log = structlog.get_logger(__name__)

SNOMED_BY_BODY_PART = {
    "HEAD": ("69536005", "Head structure"),
    "BRAIN": ("12738006", "Brain structure"),
    "CHEST": ("51185008", "Thoracic structure"),
    "LUNG": ("39607008", "Lung structure"),
    "ABDOMEN": ("818981001", "Abdomen"),
    "PELVIS": ("12921003", "Pelvis"),
}
DCM = "http://dicom.nema.org/resources/ontology/DCM"
SNOMED = "http://snomed.info/sct"
ACSN = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]}
ENDPOINT_CONNECTION_TYPE = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"


async def find_or_register_imaging_study(
    fhir: FhirClient, dicomweb: DicomWebClient, event: dict[str, Any]
) -> dict[str, Any]:
    """The ImagingStudy of a PACS stable-study event: the existing one, or a new one."""
    uid = str(event["study_instance_uid"])
    existing = (
        await fhir.resources("ImagingStudy")
        .search(identifier=f"{DICOM_UID_SYSTEM}|urn:oid:{uid}")
        .limit(1)
        .fetch()
    )
    if existing:
        return dict(existing[0])
    service_request, subject = await _order_of(fhir, event.get("accession_number"))
    if subject is None:
        raise InvalidMessage(
            f"study {uid} has no ServiceRequest with its accession number on the FHIR server; "
            "radmesh only reads ordered studies"
        )
    endpoint = await _ensure_endpoint(fhir, str(event.get("dicomweb_root") or dicomweb.base_url))
    series_details = {
        series.series_instance_uid: (
            series,
            await dicomweb.search_instances(uid, series.series_instance_uid),
        )
        for series in await dicomweb.search_series(uid)
    }
    resource = imaging_study_from_pacs(event, series_details, subject, service_request, endpoint)
    created = await fhir.create_resource(
        resource, if_none_exist=f"identifier={DICOM_UID_SYSTEM}|urn:oid:{uid}"
    )
    log.info("imaging_study_registered", imaging_study=f"ImagingStudy/{created['id']}")
    return created


async def _order_of(fhir: FhirClient, accession: str | None) -> tuple[str | None, str | None]:
    """(ServiceRequest reference, its subject) of the order with this accession number."""
    if not accession:
        return None, None
    orders = await fhir.resources("ServiceRequest").search(identifier=accession).limit(1).fetch()
    if not orders:
        return None, None
    order = dict(orders[0])
    return f"ServiceRequest/{order['id']}", (order.get("subject") or {}).get("reference")


async def _ensure_endpoint(fhir: FhirClient, address: str) -> str:
    """The PACS's dicom-wado-rs Endpoint (one per address, by a radmesh identifier)."""
    identifier = business_identifier("Endpoint", address)
    created = await fhir.create_resource(
        {
            "resourceType": "Endpoint",
            "identifier": [identifier],
            "status": "active",
            "connectionType": {"system": ENDPOINT_CONNECTION_TYPE, "code": "dicom-wado-rs"},
            "payloadType": [{"text": "DICOM"}],
            "address": address,
        },
        if_none_exist=f"identifier={identifier['system']}|{identifier['value']}",
    )
    return f"Endpoint/{created['id']}"


def imaging_study_from_pacs(
    event: dict[str, Any],
    series_details: dict[str, tuple[SeriesInfo, list[InstanceInfo]]],
    subject: str,
    service_request: str | None,
    endpoint_reference: str,
) -> dict[str, Any]:
    """An ImagingStudy (status available) from the PACS event and QIDO-RS (keyed by Series
    Instance UID): each series' Body Part Examined as its bodySite, and its instances."""
    uid = str(event["study_instance_uid"])
    identifiers: list[dict[str, Any]] = [
        {"use": "official", "system": DICOM_UID_SYSTEM, "value": f"urn:oid:{uid}"}
    ]
    if event.get("accession_number"):
        identifiers.append({"type": ACSN, "value": str(event["accession_number"])})
    series = []
    modalities = []
    for item in event.get("series", []):
        modality = item.get("modality") or "OT"
        coding = {"system": DCM, "code": modality}
        if coding not in modalities:
            modalities.append(coding)
        entry: dict[str, Any] = {
            "uid": item["series_instance_uid"],
            "modality": coding,
            "numberOfInstances": int(item.get("instance_count") or 0),
            "endpoint": [{"reference": endpoint_reference}],
        }
        if item.get("series_number") is not None:
            entry["number"] = int(item["series_number"])
        if item.get("series_description"):
            entry["description"] = item["series_description"]
        info, instances = series_details.get(str(item["series_instance_uid"]), (None, []))
        body_part = str((info.body_part_examined if info else None) or "").upper()
        if body_part in SNOMED_BY_BODY_PART:
            code, display = SNOMED_BY_BODY_PART[body_part]
            entry["bodySite"] = {"system": SNOMED, "code": code, "display": display}
        if instances:
            entry["instance"] = [
                {
                    "uid": instance.sop_instance_uid,
                    "sopClass": {
                        "system": "urn:ietf:rfc:3986",
                        "code": f"urn:oid:{instance.sop_class_uid}",
                    },
                    **({"number": instance.instance_number} if instance.instance_number else {}),
                }
                for instance in instances
            ]
        series.append(entry)
    resource: dict[str, Any] = {
        "resourceType": "ImagingStudy",
        "identifier": identifiers,
        "status": "available",
        "modality": modalities,
        "subject": {"reference": subject},
        "endpoint": [{"reference": endpoint_reference}],
        "numberOfSeries": int(event.get("series_count") or len(series)),
        "numberOfInstances": int(event.get("instance_count") or 0),
        "series": series,
    }
    if service_request:
        resource["basedOn"] = [{"reference": service_request}]
    return resource
