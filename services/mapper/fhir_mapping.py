"""One model run → the FHIR R4 resources radmesh writes, in one transaction Bundle (pure, no I/O).

What the Bundle holds (DESIGN.md "FHIR mapping (R4)"), every entry a conditional create on a
deterministic business identifier (`urn:radmesh:<type>|<study>/<model>/<version>[/<key>/<index>]`)
so a redelivered message creates nothing new; entries reference each other by `urn:uuid:`
fullUrls (uuid5 of the identifier), which the server rewrites to the new or existing ids:

- Device: one per model version (identifier `<model>/<version>`, shared by every study).
- Observation per finding: see `services.mapper.observations`.
- DiagnosticReport: `preliminary`, category RAD (v2-0074) + imaging, the registry report code,
  `result` the Observations, `imagingStudy`, a readable `conclusion`, and `conclusionCode` the
  codes of the present findings.
- Provenance: `target` the report and every Observation, `agent` the Device as performer (it
  produced the findings), `entity` the ImagingStudy as source, `recorded` the mapping time, and
  `occurredPeriod` the inference itself: from (inference.completed time − inference duration)
  to that time; an imported run's Provenance also names, as a second source, the other
  product's SR its findings were read from (services/mapper/imports.py). R4 Provenance has no `identifier` element, so its business identifier is a
  `meta.tag` (same system and value) and its conditional create is `ifNoneExist: _tag=…`.
- The run's analysis claim Task, completed with the report (shared/claims.py).
- The verification Task holding the report for a radiologist (shared/verification_task.py),
  in the same transaction: no AI result stands without it. It names the message id the
  run's results.posted will carry (`MappedRun.results_posted_id`).

The report, like the Observations, carries `meta.security` AIAST (AI asserted).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.mapper.observations import (
    build_observation,
    codeable_concept,
    finding_summary,
    imaging_study_reference,
    input_quality_text,
    observation_identifier,
    presence_urls,
)
from shared.ai_transparency import AI_ASSERTED, PRELIMINARY_CONCLUSION
from shared.claims import analysis_claim_search, analysis_claim_task
from shared.codes import AI_DEVICE_TYPE, AIAST, CREATE, IMAGING, PROVENANCE_AUTHOR, RADIOLOGY
from shared.errors import InvalidMessage
from shared.fhir import conditional_create_entry, conditional_entry, transaction_bundle
from shared.identifiers import ANALYSIS_CLAIM_SYSTEM, DICOM_UID_SYSTEM, business_identifier
from shared.messages import Finding, InferenceCompleted
from shared.narrative import with_narrative
from shared.registry import Algorithm
from shared.verification_task import verification_task_entry_of

__all__ = [
    "MappedRun",
    "build_run",
    "conclusion_text",
]


@dataclass(frozen=True)
class MappedRun:
    """The transaction Bundle of one model run and the fullUrl of each part in it."""

    bundle: dict[str, Any]
    device_url: str
    observation_urls: tuple[str, ...]  # one per finding, in the event's order
    diagnostic_report_url: str
    provenance_url: str
    verification_task_url: str
    results_posted_id: uuid.UUID  # the message id of the run's results.posted, named by the Task


def _full_url(identifier: dict[str, str]) -> str:
    name = f"{identifier['system']}|{identifier['value']}"
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, name)}"


def conclusion_text(model: Algorithm, findings: tuple[Finding, ...]) -> str:
    """The report's readable conclusion: what the model found, and that nobody verified it yet."""
    summaries = [finding_summary(model.finding(f.finding_key), f) for f in findings]
    return (
        f"{PRELIMINARY_CONCLUSION} — {model.display}, "
        f"version {model.version}: " + "; ".join(summaries) + "."
    )


def _device(model: Algorithm) -> dict[str, Any]:
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
        "type": AI_DEVICE_TYPE.concept(text="AI image analysis algorithm"),
        "version": [{"value": model.version}],
    }


def _diagnostic_report(
    event: InferenceCompleted,
    model: Algorithm,
    observation_urls: list[str],
    identifier: dict[str, str],
) -> dict[str, Any]:
    present_codes: list[dict[str, Any]] = []
    for finding in event.findings:
        mapping = model.finding(finding.finding_key)
        if mapping.value_type == "presence" and finding.present:
            concept = codeable_concept(*mapping.codes)
            if concept not in present_codes:
                present_codes.append(concept)
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "meta": {"security": [dict(AI_ASSERTED)]},
        "identifier": [identifier],
        "status": "preliminary",
        "category": [RADIOLOGY.concept(), IMAGING.concept()],
        "code": codeable_concept(model.diagnostic_report_code),
        "issued": event.created_at.isoformat(),
        **({"effectiveDateTime": event.study.started} if event.study.started else {}),
        "imagingStudy": [imaging_study_reference(event)],
        "result": [{"reference": url} for url in observation_urls],
        "conclusion": conclusion_text(model, event.findings)
        + (f" {input_quality_text(event.input_notes)}" if event.input_notes else ""),
    }
    if event.study.patient:
        report["subject"] = {"reference": event.study.patient}
    if event.study.encounter:
        report["encounter"] = {"reference": event.study.encounter}
    if event.study.service_request:
        report["basedOn"] = [{"reference": event.study.service_request}]
    if present_codes:
        report["conclusionCode"] = present_codes
    return with_narrative(report)


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
        "activity": CREATE.concept(),
        # HL7 AI Transparency on FHIR's AI Provenance: the reason says an AI asserted the
        # targets (AIAST, from the IG's ProvenanceVS); the AI Device is their author
        "reason": [AIAST.concept(text=AIAST.display)],
        "agent": [{"type": PROVENANCE_AUTHOR.concept(), "who": {"reference": device_url}}],
        "entity": [{"role": "source", "what": imaging_study_reference(event)}]
        + ([_source_report(event.source_report)] if event.source_report else []),
    }


def _source_report(sop_instance_uid: str) -> dict[str, Any]:
    """The Provenance entity of an imported run: the other product's SR it was read from."""
    return {
        "role": "source",
        "what": {
            "identifier": {"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{sop_instance_uid}"},
            "display": "DICOM SR (TID 1500 Measurement Report) the results were imported from",
        },
    }


def build_run(
    event: InferenceCompleted,
    model: Algorithm,
    recorded: datetime,
    segmentation: str | None = None,
) -> MappedRun:
    """Every resource of one model run, as one transaction Bundle of conditional creates;
    `segmentation`: the SOP Instance UID of the run's SEG, which its segmented finding names."""
    if not event.findings:
        raise InvalidMessage(
            f"inference.completed for {model.id} {model.version} carries no findings"
        )
    study_uid = event.study.study_instance_uid
    run = event.model.run_value(study_uid)
    device = _device(model)
    device_identifier = device["identifier"][0]
    device_url = _full_url(device_identifier)
    observation_identifiers = [observation_identifier(event, f) for f in event.findings]
    observation_urls = [_full_url(identifier) for identifier in observation_identifiers]
    parents = presence_urls(model, event.findings, observation_urls)
    observations = [
        build_observation(event, model, finding, device_url, parent, segmentation=segmentation)
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
    if event.study.imaging_study is not None:  # claims are on an ImagingStudy
        entries.append(_completed_claim(event, run, event.study.imaging_study, report_url))
    results_posted_id = uuid.uuid4()
    task_url = _full_url(business_identifier("Task", run))
    entries.append(
        verification_task_entry_of(
            study=event.study,
            model=event.model,
            diagnostic_report=report_url,
            device=device_url,
            correlation_id=event.correlation_id,
            results_posted_id=results_posted_id,
            findings=(
                (finding.present, model.finding(finding.finding_key).critical)
                for finding in event.findings
            ),
            now=recorded,
            full_url=task_url,
        )
    )
    return MappedRun(
        bundle=transaction_bundle(entries),
        device_url=device_url,
        observation_urls=tuple(observation_urls),
        diagnostic_report_url=report_url,
        provenance_url=provenance_url,
        verification_task_url=task_url,
        results_posted_id=results_posted_id,
    )


def _completed_claim(
    event: InferenceCompleted, run: str, imaging_study: str, report_url: str
) -> dict[str, Any]:
    """The run's analysis claim, completed with the report (a conditional update: it also
    records the run when the subscriber did not claim it)."""
    task = analysis_claim_task(
        value=run,
        imaging_study=imaging_study,
        patient=event.study.patient,
        model_id=event.model.id,
        model_version=event.model.version,
        correlation_id=str(event.correlation_id),
        diagnostic_report=report_url,
    )
    return {
        "fullUrl": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, ANALYSIS_CLAIM_SYSTEM + run)}",
        "resource": task,
        "request": {"method": "PUT", "url": f"Task?{analysis_claim_search(run)}"},
    }


def _entry(resource: dict[str, Any], full_url: str, identifier: dict[str, str]) -> dict[str, Any]:
    return conditional_create_entry(resource, full_url, identifier["system"], identifier["value"])


def _tagged_entry(
    resource: dict[str, Any], full_url: str, identifier: dict[str, str]
) -> dict[str, Any]:
    """A conditional create on a `meta.tag` (R4 Provenance has no `identifier` element)."""
    return conditional_entry(
        resource, full_url, f"_tag={identifier['system']}|{identifier['value']}"
    )
