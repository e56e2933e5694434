"""Reading an ImagingStudy (what the registry selectors look at), and building one from the PACS
when a stable study has no ImagingStudy yet (as Microsoft's DICOMcast does)."""

from __future__ import annotations

from typing import Any

import structlog
from pydantic import TypeAdapter, ValidationError

from shared.codes import BODY_PART_BY_SNOMED
from shared.errors import InvalidMessage
from shared.identifiers import DICOM_UID_SYSTEM, is_dicom_uid
from shared.messages import FhirDateTime, StudyRef
from shared.registry import SeriesSummary

__all__ = [
    "series_summaries",
    "study_instance_uid",
    "study_ref",
]

# Where in the ImagingStudy each field of StudyRef is read from (what a refusal names).
_ELEMENTS = {
    "study_instance_uid": "identifier",
    "imaging_study": "id",
    "patient": "subject.reference",
    "service_request": "basedOn.reference",
    "encounter": "encounter.reference",
    "dicomweb_base_url": "endpoint",
}

log = structlog.get_logger(__name__)
_FHIR_DATETIME: TypeAdapter[str] = TypeAdapter(FhirDateTime)


def study_instance_uid(imaging_study: dict[str, Any]) -> str:
    """The Study Instance UID from identifier `urn:dicom:uid` (value `urn:oid:<uid>`)."""
    for identifier in imaging_study.get("identifier", []):
        if identifier.get("system") == DICOM_UID_SYSTEM and identifier.get("value"):
            uid = str(identifier["value"]).removeprefix("urn:oid:")
            if not is_dicom_uid(uid):
                raise InvalidMessage(
                    "ImagingStudy identifier urn:dicom:uid is not a DICOM UID (digits and dots, "
                    f"no leading zeros, at most 64 characters): {uid[:80]!r}"
                )
            return uid
    raise InvalidMessage("ImagingStudy has no identifier with system urn:dicom:uid")


def _uid_of(coding: dict[str, Any]) -> str:
    return str(coding.get("code", "")).removeprefix("urn:oid:")


def series_summaries(
    imaging_study: dict[str, Any], excluding: frozenset[str] = frozenset()
) -> list[SeriesSummary]:
    """What each series shows a registry selector (but the series `excluding` names)."""
    summaries = []
    for series in imaging_study.get("series", []):
        if series.get("uid") in excluding:
            continue
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


def _started(imaging_study: dict[str, Any]) -> str | None:
    """ImagingStudy.started when it is a FHIR dateTime; otherwise None, said in the log (the
    results then carry no effective time: a wrong one is worse than none)."""
    started = imaging_study.get("started")
    if started is None:
        return None
    try:
        return _FHIR_DATETIME.validate_python(started)  # the type StudyRef.started checks
    except ValidationError:
        log.warning(
            "imaging_study_started_unusable",
            imaging_study=f"ImagingStudy/{imaging_study.get('id')}",
            reason="not a FHIR dateTime (a time needs its time zone); results get no effective time",
        )
        return None


def study_ref(imaging_study: dict[str, Any], endpoints: dict[str, str]) -> StudyRef:
    """The study as events carry it; `endpoints` maps Endpoint references to their addresses."""
    based_on = [ref.get("reference") for ref in imaging_study.get("basedOn", [])]
    endpoint_refs = [ref.get("reference") for ref in imaging_study.get("endpoint", [])]
    try:
        return StudyRef(
            study_instance_uid=study_instance_uid(imaging_study),
            imaging_study=f"ImagingStudy/{imaging_study['id']}",
            patient=(imaging_study.get("subject") or {}).get("reference"),
            service_request=next(
                (ref for ref in based_on if ref and ref.startswith("ServiceRequest/")), None
            ),
            encounter=(imaging_study.get("encounter") or {}).get("reference"),
            dicomweb_base_url=next(
                (endpoints[ref] for ref in endpoint_refs if ref in endpoints), None
            ),
            started=_started(imaging_study),
        )
    except ValidationError as error:  # e.g. an encounter that is not a relative Encounter/<id>
        problems = "; ".join(
            f"{_ELEMENTS.get(field, field)} ({field}): {detail['msg']}"
            for detail in error.errors()[:3]
            for field in [".".join(str(part) for part in detail["loc"]) or "<study>"]
        )
        raise InvalidMessage(f"ImagingStudy cannot be announced: {problems}") from error
