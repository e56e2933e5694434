"""inference.completed → FHIR transaction (+ DICOM SR to the PACS) → results.posted.

- Rollout `shadow`: the findings are logged (keys, present/absent, probability — nothing about the
  patient) and nothing is written anywhere clinical; no event follows.
- `preliminary` / `active`: every resource is validated, then posted in one transaction Bundle of
  conditional creates (a redelivered message finds the resources the first delivery made), then
  the TID 1500 SR is stored with STOW-RS under deterministic UIDs, then `results.posted` carries
  the references the server answered with.

The FHIR record comes first: it is what clinicians and the notifier act on. An SR failure that a
retry can fix (PACS down) retries the whole message — the transaction is idempotent, so that is
safe. An SR failure that no retry can fix (the source series is not in the PACS, its metadata
cannot be an SR's evidence) is logged as an error and does not hold back `results.posted`: a
critical finding must still reach the notifier.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
from pydicom.filewriter import dcmwrite

from services.mapper.fhir_mapping import MappedRun, build_run
from services.mapper.fhir_validation import validate_bundle
from services.mapper.structured_report import build_structured_report, dataset_from_metadata
from shared.dicomweb import DicomWebClient
from shared.errors import InvalidMessage, PermanentError
from shared.fhir import FhirClient, reference_of
from shared.messages import Event, InferenceCompleted, PostedFinding, ResultsPosted
from shared.registry import ModelEntry, Registry

log = structlog.get_logger(__name__)


def _finding_labels(event: InferenceCompleted) -> list[str]:
    return [
        f"{f.finding_key}[{f.index}]={'present' if f.present else 'absent'}"
        + (f" p={f.probability:.2f}" if f.probability is not None else "")
        + (f" {f.value:g}{f.unit or ''}" if f.value is not None else "")
        for f in event.findings
    ]


def references_by_full_url(mapped: MappedRun, response: dict[str, Any]) -> dict[str, str]:
    """fullUrl of each request entry → 'Type/id' from the transaction-response (same order)."""
    requests = mapped.bundle["entry"]
    answers = response.get("entry") or []
    if len(answers) != len(requests):
        raise PermanentError(
            f"FHIR transaction answered {len(answers)} entries for {len(requests)} sent; "
            "message dead-lettered"
        )
    return {
        str(request["fullUrl"]): reference_of(answer)
        for request, answer in zip(requests, answers, strict=True)
    }


class MapResults:
    """Handler of inference.completed: one model run → the clinical record → results.posted."""

    def __init__(
        self, registry: Registry, fhir: FhirClient, dicomweb: DicomWebClient | None
    ) -> None:
        self.registry = registry
        self.fhir = fhir
        self.dicomweb = dicomweb  # None: no SR is written

    async def __call__(self, event: InferenceCompleted) -> Sequence[Event]:
        try:
            model = self.registry.get(event.model.id, event.model.version)
        except KeyError as error:
            raise PermanentError(f"{error}; message dead-lettered") from error
        if model.rollout == "shadow":
            log.info(
                "shadow_results_not_posted",
                model=model.id,
                version=model.version,
                findings=_finding_labels(event),
            )
            return []
        if event.study.patient is None:
            raise InvalidMessage(
                f"study {event.study.study_instance_uid} has no Patient reference; AI results "
                "are not posted without a subject; message dead-lettered"
            )
        mapped = build_run(event, model, recorded=datetime.now(UTC))
        validate_bundle(mapped.bundle)
        response = await self.fhir.transaction(mapped.bundle)
        references = references_by_full_url(mapped, response)
        if self.dicomweb is not None:
            await self._store_structured_report(event, model, self.dicomweb)
        posted = tuple(
            PostedFinding(
                finding_key=finding.finding_key,
                index=finding.index,
                observation=references[url],
                present=finding.present,
                probability=finding.probability,
                critical=model.finding(finding.finding_key).critical and finding.present,
            )
            for finding, url in zip(event.findings, mapped.observation_urls, strict=True)
        )
        log.info(
            "results_posted",
            model=model.id,
            version=model.version,
            rollout=model.rollout,
            diagnostic_report=references[mapped.diagnostic_report_url],
            findings=_finding_labels(event),
            critical=sum(finding.critical for finding in posted),
        )
        return [
            event.follow(
                ResultsPosted,
                study=event.study,
                model=event.model,
                diagnostic_report=references[mapped.diagnostic_report_url],
                device=references[mapped.device_url],
                provenance=references[mapped.provenance_url],
                findings=posted,
                rollout_mode=model.rollout,
            )
        ]

    async def _store_structured_report(
        self, event: InferenceCompleted, model: ModelEntry, dicomweb: DicomWebClient
    ) -> None:
        series_uid = next(
            (f.series_instance_uid for f in event.findings if f.series_instance_uid), None
        )
        if series_uid is None:
            log.error("structured_report_not_stored", reason="no source series in the findings")
            return
        try:
            metadata = await dicomweb.retrieve_series_metadata(
                event.study.study_instance_uid, series_uid
            )
            evidence = [dataset_from_metadata(item) for item in metadata]
            structured_report = build_structured_report(
                event, model, evidence, created=event.created_at
            )
            buffer = io.BytesIO()
            dcmwrite(buffer, structured_report, enforce_file_format=True)
            await dicomweb.store_instances([buffer.getvalue()])
        except PermanentError as error:
            log.error(
                "structured_report_not_stored",
                model=model.id,
                series_instance_uid=series_uid,
                reason=str(error),
            )
            return
        log.info(
            "structured_report_stored",
            model=model.id,
            series_instance_uid=str(structured_report.SeriesInstanceUID),
            sop_instance_uid=str(structured_report.SOPInstanceUID),
        )
