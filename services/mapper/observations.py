"""One finding → one FHIR R4 Observation (pure, no I/O), and the pieces the report reuses.

Observation per finding: `preliminary`, category imaging, the registry codes, present/absent
(`valueCodeableConcept`, SNOMED CT 52101004 / 2667000: shared.codes says why not the SR's
272519000) or a UCUM `valueQuantity`; the model's
probability as a component coded DICOM `DCM#122157 "Probability"` with a UCUM `1` quantity;
`derivedFrom` the ImagingStudy — and, for a quantity, also the presence Observation it
measures (the hemorrhage whose volume it is, the nodule whose diameter it is). `partOf` is not
used: R4 allows ImagingStudy there, but it means "the event this observation is a step of",
while the images are the observation's *source*. The DICOM series and instance UIDs the finding
came from ride in the complex extension `urn:radmesh:extension:dicom-image-reference`
(`seriesInstanceUid`, `sopInstanceUid`, each a valueOid `urn:oid:<UID>`; `centreVoxel`, the
finding's centre as "z y x" voxel indices of the series volume, slices ordered by position,
when the model locates it; `segmentationSopInstanceUid`, the DICOM SEG of a finding the model
segmented) because R4's Reference cannot point inside an ImagingStudy.

Each Observation's identifiers are radmesh's business identifier and the Tracking Unique
Identifier (DCM 112040) of the finding's measurement group in the run's SR (a quantity: the
group of the finding it measures), `urn:dicom:uid` with `urn:oid:<UID>` as for every DICOM UID:
the SR and the FHIR record name a finding alike (IHE AIR, the DICOM SR to FHIR IG).

Observations carry `meta.security` AIAST (AI asserted). When the study has no ImagingStudy on
the FHIR server, references to it — here and in the report and Provenance — are logical (its
`urn:dicom:uid` identifier).
"""

from __future__ import annotations

from typing import Any

from services.mapper.structured_report import tracking_uid
from shared.ai_transparency import AI_ASSERTED, PRELIMINARY_NOTE, UNVERIFIED
from shared.codes import ABSENT, IMAGING, PRESENT, PROBABILITY, TRACKING_UNIQUE_IDENTIFIER, UCUM
from shared.errors import InvalidMessage
from shared.identifiers import (
    DICOM_IMAGE_EXTENSION,
    DICOM_UID_SYSTEM,
    FindingValue,
    business_identifier,
    radmesh_identifier_value,
)
from shared.messages import Finding, InferenceCompleted
from shared.narrative import with_narrative
from shared.registry import Algorithm, Coding, FindingMapping

__all__ = [
    "build_observation",
    "codeable_concept",
    "finding_of_observation",
    "finding_summary",
    "imaging_study_reference",
    "input_quality_text",
    "observation_identifier",
    "presence_urls",
    "tracking_identifier",
]


def codeable_concept(*codings: Coding) -> dict[str, Any]:
    """A CodeableConcept of the registry codings, its text the first coding's display."""
    return {"coding": [c.coding().fhir() for c in codings], "text": codings[0].display}


def _oid(uid: str) -> str:
    return f"urn:oid:{uid}"


def imaging_study_reference(event: InferenceCompleted) -> dict[str, Any]:
    """The study's ImagingStudy: its id when the server has one, always its DICOM UID identifier."""
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


def finding_summary(mapping: FindingMapping, finding: Finding) -> str:
    """One finding in words, e.g. `Intracranial hemorrhage: present (probability 0.93)`."""
    label = _finding_label(mapping, finding)
    if mapping.value_type == "quantity":
        text = f"{label}: {finding.value:g} {finding.unit or mapping.unit}"
    else:
        text = f"{label}: {'present' if finding.present else 'absent'}"
    if finding.probability is not None:
        text += f" (probability {finding.probability:.2f})"
    return text


def _image_extension(finding: Finding, segmentation: str | None) -> list[dict[str, Any]]:
    if finding.series_instance_uid is None:
        return []
    parts = [{"url": "seriesInstanceUid", "valueOid": _oid(finding.series_instance_uid)}]
    parts += [{"url": "sopInstanceUid", "valueOid": _oid(uid)} for uid in finding.sop_instance_uids]
    if finding.center_voxel is not None:
        centre = " ".join(f"{coordinate:g}" for coordinate in finding.center_voxel)
        parts.append({"url": "centreVoxel", "valueString": centre})
    if segmentation is not None and finding.mask is not None:
        parts.append({"url": "segmentationSopInstanceUid", "valueOid": _oid(segmentation)})
    return [{"url": DICOM_IMAGE_EXTENSION, "extension": parts}]


def input_quality_text(notes: tuple[str, ...]) -> str:
    """What the report and each finding say about input the model's checks flagged."""
    return f"Input quality: {'; '.join(notes)}. Read the result with this in mind."


def observation_identifier(event: InferenceCompleted, finding: Finding) -> dict[str, str]:
    """The business identifier of a finding's Observation: `<run value>/<key>/<index>`; the
    finding's alert shares its value (services/notifier/alerts.py)."""
    run = event.model.run_value(event.study.study_instance_uid)
    return business_identifier("Observation", run, finding.finding_key, finding.index)


def tracking_identifier(
    event: InferenceCompleted, model: Algorithm, finding: Finding
) -> dict[str, Any]:
    """The Tracking Unique Identifier of the SR measurement group the finding is in."""
    group_key = model.finding(finding.finding_key).depends_on or finding.finding_key
    uid = finding.tracking_uid or tracking_uid(  # a third-party SR's own, else radmesh's
        event.study.study_instance_uid, model, group_key, finding.index, event.model.generation
    )
    return {
        "use": "secondary",
        "type": TRACKING_UNIQUE_IDENTIFIER.concept(text=TRACKING_UNIQUE_IDENTIFIER.display),
        "system": DICOM_UID_SYSTEM,
        "value": _oid(uid),
    }


def build_observation(
    event: InferenceCompleted,
    model: Algorithm,
    finding: Finding,
    device_url: str,
    presence_url: str | None,
    *,
    segmentation: str | None = None,
) -> dict[str, Any]:
    """The Observation of one finding, made by the Device at `device_url`; a quantity also
    derives from the presence Observation at `presence_url`; a segmented finding names the
    SOP Instance UID of its SEG (`segmentation`, when the mapper made one)."""
    mapping = model.finding(finding.finding_key)
    identifier = observation_identifier(event, finding)
    if mapping.value_type == "quantity" and finding.value is None:
        raise InvalidMessage(
            f"finding {finding.finding_key}[{finding.index}] is a quantity without a value"
        )
    derived_from = [imaging_study_reference(event)]
    if presence_url is not None:
        derived_from.append({"reference": presence_url})
    note = (
        f"{PRELIMINARY_NOTE} ({model.display}, version {model.version}); "
        f"{UNVERIFIED}. {finding_summary(mapping, finding)}."
    )
    if finding.center_voxel is not None:
        z, y, x = finding.center_voxel
        note += f" Centre at voxel (z {z:g}, y {y:g}, x {x:g})."
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "meta": {"security": [dict(AI_ASSERTED)]},
        "identifier": [identifier, tracking_identifier(event, model, finding)],
        "status": "preliminary",
        "category": [IMAGING.concept()],
        "code": codeable_concept(*mapping.codes),
        "issued": event.created_at.isoformat(),
        **({"effectiveDateTime": event.study.started} if event.study.started else {}),
        "device": {"reference": device_url},
        "derivedFrom": derived_from,
        "note": [{"text": note}]
        + ([{"text": input_quality_text(event.input_notes)}] if event.input_notes else []),
    }
    extension = _image_extension(finding, segmentation)
    if extension:
        observation["extension"] = extension
    if event.study.patient:
        observation["subject"] = {"reference": event.study.patient}
    if event.study.encounter:
        observation["encounter"] = {"reference": event.study.encounter}
    if event.study.service_request:
        observation["basedOn"] = [{"reference": event.study.service_request}]
    if mapping.body_site is not None:
        observation["bodySite"] = codeable_concept(mapping.body_site)
    if mapping.value_type == "presence":
        value = PRESENT if finding.present else ABSENT
        observation["valueCodeableConcept"] = value.concept(text=value.display)
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
                "code": PROBABILITY.concept(text=PROBABILITY.display),
                "valueQuantity": {
                    "value": finding.probability,
                    "unit": "1",
                    "system": UCUM,
                    "code": "1",
                },
            }
        ]
    return with_narrative(observation)


def finding_of_observation(observation: dict[str, Any]) -> Finding:
    """The finding an Observation of `build_observation` was made from, read back (the re-drive
    rebuilds a run's messages and SR from the record); ValueError when it is not one."""
    finding = FindingValue.parse(radmesh_identifier_value(observation) or "")
    codings = (observation.get("valueCodeableConcept") or {}).get("coding", [])
    quantity = observation.get("valueQuantity") or {}
    probability = None
    for component in observation.get("component", []):
        codes = {c.get("code") for c in (component.get("code") or {}).get("coding", [])}
        value = (component.get("valueQuantity") or {}).get("value")
        if PROBABILITY.code in codes and isinstance(value, int | float):
            probability = float(value)
    series: str | None = None
    instances: list[str] = []
    centre: tuple[float, float, float] | None = None
    for extension in observation.get("extension", []):
        if extension.get("url") != DICOM_IMAGE_EXTENSION:
            continue
        for part in extension.get("extension", []):
            oid = str(part.get("valueOid", "")).removeprefix("urn:oid:")
            if part.get("url") == "seriesInstanceUid" and oid:
                series = oid
            elif part.get("url") == "sopInstanceUid" and oid:
                instances.append(oid)
            elif part.get("url") == "centreVoxel":
                z, y, x = (float(v) for v in str(part.get("valueString", "")).split())
                centre = (z, y, x)
    return Finding(
        finding_key=finding.finding_key,
        index=finding.index,
        present="value" in quantity or any(c.get("code") == PRESENT.code for c in codings),
        probability=probability,
        value=float(quantity["value"]) if isinstance(quantity.get("value"), int | float) else None,
        unit=str(quantity["unit"]) if quantity.get("unit") else None,
        center_voxel=centre,
        series_instance_uid=series,
        sop_instance_uids=tuple(instances),
    )


def presence_urls(
    model: Algorithm, findings: tuple[Finding, ...], urls: list[str]
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
