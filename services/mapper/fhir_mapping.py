"""One model run → the FHIR R4 resources radmesh writes, in one transaction Bundle (pure, no I/O).

What the Bundle holds (DESIGN.md "FHIR mapping (R4)"), every entry a conditional create on a
deterministic business identifier (`urn:radmesh:<type>|<study>/<model>/<version>[/<key>/<index>]`)
so a redelivered message creates nothing new; entries reference each other by `urn:uuid:`
fullUrls (uuid5 of the identifier), which the server rewrites to the new or existing ids:

- Device: one per model version (identifier `<model>/<version>`, shared by every study).
- Observation per finding: `preliminary`, category imaging, the registry codes, present/absent
  (`valueCodeableConcept`, SNOMED CT 52101004 / 2667000) or a UCUM `valueQuantity`; the model's
  probability as a component coded DICOM `DCM#122157 "Probability"` with a UCUM `1` quantity;
  `derivedFrom` the ImagingStudy — and, for a quantity, also the presence Observation it
  measures (the hemorrhage whose volume it is, the nodule whose diameter it is). `partOf` is not
  used: R4 allows ImagingStudy there, but it means "the event this observation is a step of",
  while the images are the observation's *source*. The DICOM series and instance UIDs the finding
  came from ride in the complex extension `urn:radmesh:extension:dicom-image-reference`
  (`seriesInstanceUid`, `sopInstanceUid`, each a valueOid `urn:oid:<UID>`) because R4's
  Reference cannot point inside an ImagingStudy.
- DiagnosticReport: `preliminary`, category RAD (v2-0074) + imaging, the registry report code,
  `result` the Observations, `imagingStudy`, a readable `conclusion`, and `conclusionCode` the
  codes of the present findings.
- Provenance: `target` the report and every Observation, `agent` the Device as performer (it
  produced the findings), `entity` the ImagingStudy as source, `recorded` the mapping time, and
  `occurredPeriod` the inference itself: from (inference.completed time − inference duration)
  to that time. R4 Provenance has no `identifier` element, so its business identifier is a
  `meta.tag` (same system and value) and its conditional create is `ifNoneExist: _tag=…`.

Observations and the report carry `meta.security` AIAST (AI asserted). When the study has no
ImagingStudy on the FHIR server, references to it are logical (its `urn:dicom:uid` identifier).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.errors import InvalidMessage
from shared.fhir import conditional_create_entry, conditional_entry, transaction_bundle
from shared.identifiers import DICOM_UID_SYSTEM, business_identifier, study_run_value
from shared.messages import Finding, InferenceCompleted
from shared.registry import SNOMED_CT, UCUM, Coding, FindingMapping, ModelEntry

__all__ = [
    "AI_ASSERTED",
    "DICOM_IMAGE_EXTENSION",
    "PROBABILITY_CODE",
    "MappedRun",
    "build_run",
    "conclusion_text",
]

OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
PROVENANCE_PARTICIPANT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
DEVICE_NAME_TYPE = "http://hl7.org/fhir/device-nametype"

AI_ASSERTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "AIAST",
    "display": "Artificial Intelligence asserted",
}
PROBABILITY_CODE = {"system": DCM, "code": "122157", "display": "Probability"}
PRESENT = {"system": SNOMED_CT, "code": "52101004", "display": "Present"}
ABSENT = {"system": SNOMED_CT, "code": "2667000", "display": "Absent"}
DICOM_IMAGE_EXTENSION = "urn:radmesh:extension:dicom-image-reference"


@dataclass(frozen=True)
class MappedRun:
    """The transaction Bundle of one model run and the fullUrl of each part in it."""

    bundle: dict[str, Any]
    device_url: str
    observation_urls: tuple[str, ...]  # one per finding, in the event's order
    diagnostic_report_url: str
    provenance_url: str


def _full_url(identifier: dict[str, str]) -> str:
    name = f"{identifier['system']}|{identifier['value']}"
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, name)}"


def _coding(coding: Coding) -> dict[str, str]:
    return {"system": coding.system, "code": coding.code, "display": coding.display}


def _concept(*codings: Coding) -> dict[str, Any]:
    return {"coding": [_coding(c) for c in codings], "text": codings[0].display}


def _oid(uid: str) -> str:
    return f"urn:oid:{uid}"


def _imaging_study_reference(event: InferenceCompleted) -> dict[str, Any]:
    reference: dict[str, Any] = {
        "identifier": {
            "system": DICOM_UID_SYSTEM,
            "value": _oid(event.study.study_instance_uid),
        }
    }
    if event.study.imaging_study:
        reference["reference"] = event.study.imaging_study
    return reference


def _finding_label(mapping: FindingMapping, finding: Finding) -> str:
    label = mapping.codes[0].display
    return f"{label} #{finding.index + 1}" if mapping.per_lesion else label


def _finding_summary(mapping: FindingMapping, finding: Finding) -> str:
    label = _finding_label(mapping, finding)
    if mapping.value_type == "quantity":
        text = f"{label}: {finding.value:g} {finding.unit or mapping.unit}"
    else:
        text = f"{label}: {'present' if finding.present else 'absent'}"
    if finding.probability is not None:
        text += f" (probability {finding.probability:.2f})"
    return text


def conclusion_text(model: ModelEntry, findings: tuple[Finding, ...]) -> str:
    """The report's readable conclusion: what the model found, and that nobody verified it yet."""
    summaries = [_finding_summary(model.finding(f.finding_key), f) for f in findings]
    return (
        f"AI result, preliminary, not verified by a radiologist — {model.display}, "
        f"version {model.version}: " + "; ".join(summaries) + "."
    )


def _device(model: ModelEntry) -> dict[str, Any]:
    return {
        "resourceType": "Device",
        "identifier": [business_identifier("Device", model.id, model.version)],
        "status": "active",
        "manufacturer": model.manufacturer,
        "deviceName": [
            {"name": model.display, "type": "user-friendly-name"},
            {"name": model.id, "type": "model-name"},
        ],
        "modelNumber": model.id,
        "type": {"text": "AI image analysis algorithm"},
        "version": [{"value": model.version}],
    }


def _image_extension(finding: Finding) -> list[dict[str, Any]]:
    if finding.series_instance_uid is None:
        return []
    parts = [{"url": "seriesInstanceUid", "valueOid": _oid(finding.series_instance_uid)}]
    parts += [{"url": "sopInstanceUid", "valueOid": _oid(uid)} for uid in finding.sop_instance_uids]
    return [{"url": DICOM_IMAGE_EXTENSION, "extension": parts}]


def _observation(
    event: InferenceCompleted,
    model: ModelEntry,
    finding: Finding,
    device_url: str,
    presence_url: str | None,
) -> dict[str, Any]:
    mapping = model.finding(finding.finding_key)
    identifier = business_identifier(
        "Observation",
        event.study.study_instance_uid,
        model.id,
        model.version,
        finding.finding_key,
        finding.index,
    )
    derived_from = [_imaging_study_reference(event)]
    if presence_url is not None:
        derived_from.append({"reference": presence_url})
    note = (
        f"AI-generated preliminary finding ({model.display}, version {model.version}); "
        f"not verified by a radiologist. {_finding_summary(mapping, finding)}."
    )
    if finding.center_voxel is not None:
        z, y, x = finding.center_voxel
        note += f" Centre at voxel (z {z:g}, y {y:g}, x {x:g})."
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "meta": {"security": [dict(AI_ASSERTED)]},
        "identifier": [identifier],
        "status": "preliminary",
        "category": [
            {"coding": [{"system": OBSERVATION_CATEGORY, "code": "imaging", "display": "Imaging"}]}
        ],
        "code": _concept(*mapping.codes),
        "issued": event.created_at.isoformat(),
        "device": {"reference": device_url},
        "derivedFrom": derived_from,
        "note": [{"text": note}],
    }
    extension = _image_extension(finding)
    if extension:
        observation["extension"] = extension
    if event.study.patient:
        observation["subject"] = {"reference": event.study.patient}
    if event.study.encounter:
        observation["encounter"] = {"reference": event.study.encounter}
    if event.study.service_request:
        observation["basedOn"] = [{"reference": event.study.service_request}]
    if mapping.body_site is not None:
        observation["bodySite"] = _concept(mapping.body_site)
    if mapping.value_type == "presence":
        value = PRESENT if finding.present else ABSENT
        observation["valueCodeableConcept"] = {"coding": [dict(value)], "text": value["display"]}
    else:
        if finding.value is None:
            raise InvalidMessage(
                f"finding {finding.finding_key}[{finding.index}] is a quantity without a value"
            )
        unit = finding.unit or mapping.unit or "1"
        observation["valueQuantity"] = {
            "value": finding.value,
            "unit": unit,
            "system": UCUM,
            "code": unit,
        }
    if finding.probability is not None:
        observation["component"] = [
            {
                "code": {"coding": [dict(PROBABILITY_CODE)], "text": "Probability"},
                "valueQuantity": {
                    "value": finding.probability,
                    "unit": "1",
                    "system": UCUM,
                    "code": "1",
                },
            }
        ]
    return observation


def _presence_urls(
    model: ModelEntry, findings: tuple[Finding, ...], urls: list[str]
) -> list[str | None]:
    """For each finding: the fullUrl of the presence Observation a quantity measures, else None."""
    by_key = {(f.finding_key, f.index): url for f, url in zip(findings, urls, strict=True)}
    parents: list[str | None] = []
    for finding in findings:
        depends_on = model.finding(finding.finding_key).depends_on
        if depends_on is None:
            parents.append(None)
            continue
        parent = by_key.get((depends_on, finding.index))
        if parent is None:
            raise InvalidMessage(
                f"finding {finding.finding_key}[{finding.index}] measures {depends_on}"
                f"[{finding.index}], which the message does not carry"
            )
        parents.append(parent)
    return parents


def _diagnostic_report(
    event: InferenceCompleted,
    model: ModelEntry,
    observation_urls: list[str],
    identifier: dict[str, str],
) -> dict[str, Any]:
    present_codes: list[dict[str, Any]] = []
    for finding in event.findings:
        mapping = model.finding(finding.finding_key)
        if mapping.value_type == "presence" and finding.present:
            concept = _concept(*mapping.codes)
            if concept not in present_codes:
                present_codes.append(concept)
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "meta": {"security": [dict(AI_ASSERTED)]},
        "identifier": [identifier],
        "status": "preliminary",
        "category": [
            {"coding": [{"system": V2_0074, "code": "RAD", "display": "Radiology"}]},
            {"coding": [{"system": OBSERVATION_CATEGORY, "code": "imaging", "display": "Imaging"}]},
        ],
        "code": _concept(model.diagnostic_report_code),
        "issued": event.created_at.isoformat(),
        "imagingStudy": [_imaging_study_reference(event)],
        "result": [{"reference": url} for url in observation_urls],
        "conclusion": conclusion_text(model, event.findings),
    }
    if event.study.patient:
        report["subject"] = {"reference": event.study.patient}
    if event.study.encounter:
        report["encounter"] = {"reference": event.study.encounter}
    if event.study.service_request:
        report["basedOn"] = [{"reference": event.study.service_request}]
    if present_codes:
        report["conclusionCode"] = present_codes
    return report


def _provenance(
    event: InferenceCompleted,
    identifier: dict[str, str],
    targets: list[str],
    device_url: str,
    recorded: datetime,
) -> dict[str, Any]:
    ended = event.created_at
    started = ended - timedelta(milliseconds=event.inference_duration_ms)
    return {
        "resourceType": "Provenance",
        "meta": {"tag": [{"system": identifier["system"], "code": identifier["value"]}]},
        "target": [{"reference": url} for url in targets],
        "occurredPeriod": {"start": started.isoformat(), "end": ended.isoformat()},
        "recorded": recorded.isoformat(),
        "activity": {"coding": [{"system": DATA_OPERATION, "code": "CREATE", "display": "create"}]},
        "agent": [
            {
                "type": {
                    "coding": [
                        {
                            "system": PROVENANCE_PARTICIPANT,
                            "code": "performer",
                            "display": "Performer",
                        }
                    ]
                },
                "who": {"reference": device_url},
            }
        ],
        "entity": [{"role": "source", "what": _imaging_study_reference(event)}],
    }


def build_run(event: InferenceCompleted, model: ModelEntry, recorded: datetime) -> MappedRun:
    """Every resource of one model run, as one transaction Bundle of conditional creates."""
    if not event.findings:
        raise InvalidMessage(
            f"inference.completed for {model.id} {model.version} carries no findings"
        )
    study_uid = event.study.study_instance_uid
    run = study_run_value(study_uid, model.id, model.version)
    device = _device(model)
    device_identifier = device["identifier"][0]
    device_url = _full_url(device_identifier)
    observation_identifiers = [
        business_identifier(
            "Observation", study_uid, model.id, model.version, f.finding_key, f.index
        )
        for f in event.findings
    ]
    observation_urls = [_full_url(identifier) for identifier in observation_identifiers]
    parents = _presence_urls(model, event.findings, observation_urls)
    observations = [
        _observation(event, model, finding, device_url, parent)
        for finding, parent in zip(event.findings, parents, strict=True)
    ]
    report_identifier = business_identifier("DiagnosticReport", run)
    report_url = _full_url(report_identifier)
    report = _diagnostic_report(event, model, observation_urls, report_identifier)
    provenance_identifier = business_identifier("Provenance", run)
    provenance_url = _full_url(provenance_identifier)
    provenance = _provenance(
        event, provenance_identifier, [report_url, *observation_urls], device_url, recorded
    )
    entries = [_entry(device, device_url, device_identifier)]
    entries += [
        _entry(observation, url, identifier)
        for observation, url, identifier in zip(
            observations, observation_urls, observation_identifiers, strict=True
        )
    ]
    entries.append(_entry(report, report_url, report_identifier))
    entries.append(_tagged_entry(provenance, provenance_url, provenance_identifier))
    return MappedRun(
        bundle=transaction_bundle(entries),
        device_url=device_url,
        observation_urls=tuple(observation_urls),
        diagnostic_report_url=report_url,
        provenance_url=provenance_url,
    )


def _entry(resource: dict[str, Any], full_url: str, identifier: dict[str, str]) -> dict[str, Any]:
    return conditional_create_entry(resource, full_url, identifier["system"], identifier["value"])


def _tagged_entry(
    resource: dict[str, Any], full_url: str, identifier: dict[str, str]
) -> dict[str, Any]:
    """A conditional create on a `meta.tag` (R4 Provenance has no `identifier` element)."""
    return conditional_entry(
        resource, full_url, f"_tag={identifier['system']}|{identifier['value']}"
    )
