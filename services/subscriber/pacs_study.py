"""Registering a PACS study on the FHIR server when the PACS has it and the FHIR server has no
ImagingStudy yet, as Microsoft's DICOMcast does: identifiers (DICOM UID, accession), the ordering
ServiceRequest found by accession and its patient, each series with its body site and instances
(from QIDO-RS), and the PACS's dicom-wado-rs Endpoint."""

from __future__ import annotations

import re
from typing import Any

import structlog

from services.subscriber.hook_bodies import StableStudyEvent
from shared.codes import ACCESSION_ID, DICOM_WADO_RS, SNOMED_BY_BODY_PART, dicom_modality
from shared.dicomweb import DicomWebClient, InstanceInfo, SeriesInfo, StudyAttributes
from shared.errors import InvalidMessage
from shared.fhir import FhirClient
from shared.identifiers import DICOM_UID_SYSTEM, business_identifier

__all__ = ["fhir_started", "find_or_register_imaging_study", "imaging_study_from_pacs"]

log = structlog.get_logger(__name__)


async def find_or_register_imaging_study(
    fhir: FhirClient, dicomweb: DicomWebClient, event: StableStudyEvent
) -> dict[str, Any]:
    """The ImagingStudy of a PACS stable-study event: the existing one, or a new one."""
    uid = event.study_instance_uid
    existing = (
        await fhir.resources("ImagingStudy")
        .search(identifier=f"{DICOM_UID_SYSTEM}|urn:oid:{uid}")
        .limit(1)
        .fetch()
    )
    if existing:
        return dict(existing[0])
    service_request, subject, procedure = await _order_of(fhir, uid, event.accession_number)
    endpoint = await _ensure_endpoint(fhir, event.dicomweb_root or dicomweb.base_url)
    series_details = [
        (series, await dicomweb.search_instances(uid, series.series_instance_uid))
        for series in await dicomweb.search_series(uid)
    ]
    if not series_details:
        raise InvalidMessage(f"the PACS has no series for study {uid}")
    study = await dicomweb.search_study_attributes(uid)
    resource = imaging_study_from_pacs(
        event,
        series_details,
        subject,
        service_request,
        endpoint,
        study=study,
        procedure_code=procedure,
    )
    created = await fhir.create_resource(
        resource, if_none_exist=f"identifier={DICOM_UID_SYSTEM}|urn:oid:{uid}"
    )
    log.info("imaging_study_registered", imaging_study=f"ImagingStudy/{created['id']}")
    return created


def _is_accession(identifier: dict[str, Any], accession: str) -> bool:
    codings = (identifier.get("type") or {}).get("coding") or []
    return identifier.get("value") == accession and any(
        coding.get("code") == ACCESSION_ID.code for coding in codings
    )


async def _order_of(
    fhir: FhirClient, uid: str, accession: str | None
) -> tuple[str, str, dict[str, Any] | None]:
    """(ServiceRequest reference, its subject, its code: the procedure ordered) of the one order
    whose ACSN-typed identifier is this accession number; none or several is a refusal (never
    guess the patient)."""
    if not accession:
        raise InvalidMessage(f"study {uid} has no accession number; radmesh reads ordered studies")
    candidates = (
        await fhir.resources("ServiceRequest").search(identifier=accession).limit(10).fetch()
    )
    orders = [
        order
        for order in (dict(candidate) for candidate in candidates)
        if any(_is_accession(identifier, accession) for identifier in order.get("identifier", []))
    ]
    if len(orders) != 1:
        raise InvalidMessage(
            f"study {uid}: {'no' if not orders else len(orders)} ServiceRequest with its accession "
            "number (identifier of type ACSN) on the FHIR server; radmesh only reads ordered studies"
        )
    subject = (orders[0].get("subject") or {}).get("reference")
    if not subject:
        raise InvalidMessage(f"study {uid}: its ServiceRequest has no subject")
    code = orders[0].get("code")
    return f"ServiceRequest/{orders[0]['id']}", str(subject), code if code else None


async def _ensure_endpoint(fhir: FhirClient, address: str) -> str:
    """The PACS's dicom-wado-rs Endpoint (one per address, by a radmesh identifier)."""
    identifier = business_identifier("Endpoint", address)
    created = await fhir.create_resource(
        {
            "resourceType": "Endpoint",
            "identifier": [identifier],
            "status": "active",
            "connectionType": DICOM_WADO_RS.fhir(),
            "payloadType": [{"text": "DICOM"}],
            "address": address,
        },
        if_none_exist=f"identifier={identifier['system']}|{identifier['value']}",
    )
    return f"Endpoint/{created['id']}"


def fhir_started(study_date: str | None, study_time: str | None, offset: str | None) -> str | None:
    """The FHIR dateTime of a study's DICOM Study Date (DA), Study Time (TM) and Timezone
    Offset From UTC (SH, ±HHMM): to the second when the offset is known, else the date alone
    (FHIR allows no time without a zone, and radmesh does not guess the PACS's); None when the
    date is missing or not a DICOM date."""
    date = (study_date or "").strip()
    if not re.fullmatch(r"[0-9]{8}", date):
        return None
    day = f"{date[:4]}-{date[4:6]}-{date[6:8]}"
    if not re.fullmatch(r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])", day):
        return None
    time = re.fullmatch(
        r"([01][0-9]|2[0-3])([0-5][0-9])?([0-5][0-9])?(\.[0-9]{1,6})?", (study_time or "").strip()
    )
    zone = re.fullmatch(r"([+-])((0[0-9]|1[0-3])[0-5][0-9]|1400)", (offset or "").strip())
    if time is None or zone is None:
        return day
    hours, minutes, seconds, fraction = time.groups()
    sign, zone_digits = zone.group(1), zone.group(2)
    return (
        f"{day}T{hours}:{minutes or '00'}:{seconds or '00'}{fraction or ''}"
        f"{sign}{zone_digits[:2]}:{zone_digits[2:]}"
    )


def imaging_study_from_pacs(
    event: StableStudyEvent,
    series_details: list[tuple[SeriesInfo, list[InstanceInfo]]],
    subject: str,
    service_request: str | None,
    endpoint_reference: str,
    *,
    study: StudyAttributes | None = None,
    procedure_code: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An ImagingStudy (status available) from the PACS event and QIDO-RS: when it started, its
    description, the procedure ordered (the order's code), and each series with its number,
    modality, description, start, Body Part Examined as bodySite, and its instances. The PACS's
    Endpoint is named once, for the study (a series would name its own only to differ)."""
    study = study or StudyAttributes()
    identifiers: list[dict[str, Any]] = [
        {
            "use": "official",
            "system": DICOM_UID_SYSTEM,
            "value": f"urn:oid:{event.study_instance_uid}",
        }
    ]
    if event.accession_number:
        identifiers.append({"type": ACCESSION_ID.concept(), "value": event.accession_number})
    series = []
    modalities: list[dict[str, str]] = []
    for info, instances in series_details:
        coding = dicom_modality(info.modality or "OT")
        if coding not in modalities:
            modalities.append(coding)
        entry: dict[str, Any] = {
            "uid": info.series_instance_uid,
            "modality": coding,
            "numberOfInstances": len(instances) or info.number_of_instances,
        }
        if info.series_number is not None and 0 <= info.series_number < 2**31:
            entry["number"] = info.series_number
        if info.series_description:
            entry["description"] = info.series_description
        series_started = fhir_started(info.series_date, info.series_time, study.timezone_offset)
        if series_started is not None:
            entry["started"] = series_started
        body_part = (info.body_part_examined or "").upper()
        if body_part in SNOMED_BY_BODY_PART:
            entry["bodySite"] = SNOMED_BY_BODY_PART[body_part].fhir()
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
        "numberOfSeries": len(series),
        "numberOfInstances": sum(entry["numberOfInstances"] for entry in series),
        "series": series,
    }
    if service_request:
        resource["basedOn"] = [{"reference": service_request}]
    started = fhir_started(study.study_date, study.study_time, study.timezone_offset)
    if started is not None:
        resource["started"] = started
    if study.study_description:
        resource["description"] = study.study_description
    if procedure_code:
        resource["procedureCode"] = [procedure_code]
    return resource
