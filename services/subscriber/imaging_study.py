"""Reading an ImagingStudy (what the registry selectors look at), and building one from the PACS
when a stable study has no ImagingStudy yet (as Microsoft's DICOMcast does)."""

from __future__ import annotations

from typing import Any

from shared.dicomweb import InstanceInfo, SeriesInfo
from shared.errors import InvalidMessage
from shared.identifiers import DICOM_UID_SYSTEM
from shared.messages import StudyRef
from shared.registry import SeriesSummary

__all__ = [
    "BODY_PART_BY_SNOMED",
    "imaging_study_from_pacs",
    "series_summaries",
    "study_instance_uid",
    "study_ref",
]

# SNOMED CT body structures → DICOM Body Part Examined (PS3.16 CID 4031), and back.
BODY_PART_BY_SNOMED = {
    "69536005": "HEAD",
    "12738006": "BRAIN",
    "51185008": "CHEST",
    "39607008": "LUNG",
    "818981001": "ABDOMEN",
    "12921003": "PELVIS",
}
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


def study_instance_uid(imaging_study: dict[str, Any]) -> str:
    """The Study Instance UID from identifier `urn:dicom:uid` (value `urn:oid:<uid>`)."""
    for identifier in imaging_study.get("identifier", []):
        if identifier.get("system") == DICOM_UID_SYSTEM and identifier.get("value"):
            return str(identifier["value"]).removeprefix("urn:oid:")
    raise InvalidMessage("ImagingStudy has no identifier with system urn:dicom:uid")


def _uid_of(coding: dict[str, Any]) -> str:
    return str(coding.get("code", "")).removeprefix("urn:oid:")


def series_summaries(imaging_study: dict[str, Any]) -> list[SeriesSummary]:
    """What each series shows a registry selector."""
    summaries = []
    for series in imaging_study.get("series", []):
        body_site = series.get("bodySite") or {}
        body_part = BODY_PART_BY_SNOMED.get(str(body_site.get("code")))
        if body_part is None and body_site.get("display"):
            body_part = str(body_site["display"]).split()[0].upper()
        instances = series.get("instance", [])
        summaries.append(
            SeriesSummary(
                modality=str((series.get("modality") or {}).get("code", "")),
                body_part_examined=body_part,
                series_description=series.get("description"),
                sop_class_uids=tuple(
                    sorted({_uid_of(i["sopClass"]) for i in instances if i.get("sopClass")})
                ),
                number_of_instances=int(series.get("numberOfInstances") or len(instances)),
            )
        )
    return summaries


def study_ref(imaging_study: dict[str, Any], endpoints: dict[str, str]) -> StudyRef:
    """The study as events carry it; `endpoints` maps Endpoint references to their addresses."""
    based_on = [ref.get("reference") for ref in imaging_study.get("basedOn", [])]
    endpoint_refs = [ref.get("reference") for ref in imaging_study.get("endpoint", [])]
    return StudyRef(
        study_instance_uid=study_instance_uid(imaging_study),
        imaging_study=f"ImagingStudy/{imaging_study['id']}",
        patient=(imaging_study.get("subject") or {}).get("reference"),
        service_request=next(
            (ref for ref in based_on if ref and ref.startswith("ServiceRequest/")), None
        ),
        encounter=(imaging_study.get("encounter") or {}).get("reference"),
        dicomweb_base_url=next((endpoints[ref] for ref in endpoint_refs if ref in endpoints), None),
    )


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
