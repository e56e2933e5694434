"""inference.completed → FHIR transaction (+ DICOM SR to the PACS) → results.posted;
finding.verified → the verified SR that supersedes the preliminary one in the PACS;
finding.rejected → an IOCM rejection note for it.

- Rollout `shadow`: the findings are logged (keys, present/absent, probability — nothing about the
  patient) and nothing is written anywhere clinical; no event follows.
- `preliminary` / `active`: every resource is validated, then posted in one transaction Bundle of
  conditional creates (a redelivered message finds the resources the first delivery made), then
  the TID 1500 SR (built meanwhile) is stored with STOW-RS under deterministic UIDs, then
  `results.posted` carries the references the server answered with.

The FHIR record comes first: it is what clinicians and the notifier act on. An SR failure that a
retry can fix (PACS down) retries the whole message — the transaction is idempotent, so that is
safe. An SR failure that no retry can fix (the source series is not in the PACS, its metadata
cannot be an SR's evidence) is logged as an error and does not hold back `results.posted`: a
critical finding must still reach the notifier.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from pydicom import Dataset
from pydicom.filewriter import dcmwrite

from services.mapper.fhir_mapping import MappedRun, build_run
from services.mapper.fhir_validation import validate_bundle
from services.mapper.key_images import key_image_selection, key_images_uids
from services.mapper.rejection_note import rejection_note, rejection_note_uids
from services.mapper.segmentation import build_segmentation, segmentation_uids
from services.mapper.structured_report import (
    build_structured_report,
    dataset_from_metadata,
    evidence_from_manifest,
    sr_uids,
    tracking_uid,
)
from services.mapper.verified_report import (
    Amendment,
    verified_sr_uid,
    verified_structured_report,
)
from shared.claims import RETRACTED_CLAIM_STATUS
from shared.dicomweb import DicomWebClient
from shared.errors import InvalidMessage, PermanentError, RemoteRejected
from shared.fhir import FhirClient, reference_of
from shared.identifiers import (
    ANALYSIS_CLAIM_SYSTEM,
    FindingValue,
    StudyRun,
    radmesh_identifier_value,
)
from shared.iocm import IOCM_TITLES, QUALITY
from shared.messages import (
    Event,
    FindingRejected,
    FindingVerified,
    InferenceCompleted,
    PostedFinding,
    ResultsPosted,
    ResultsRetracted,
)
from shared.provenance import pin_provenance_targets
from shared.registry import Algorithm, ImportedAlgorithm, Registry
from shared.telemetry import without_quoted_values

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
    """Handler of inference.completed: one model run → the clinical record → results.posted.
    A run retracted while it ran (its claim cancelled, services/verification/retractions.py)
    posts nothing and says so."""

    def __init__(
        self, registry: Registry, fhir: FhirClient, dicomweb: DicomWebClient | None
    ) -> None:
        self.registry = registry
        self.fhir = fhir
        self.dicomweb = dicomweb  # None: no SR is written

    async def _retracted(self, event: InferenceCompleted) -> bool:
        value = event.model.run_value(event.study.study_instance_uid)
        found = await self.fhir.execute(
            "Task", "get", params={"identifier": f"{ANALYSIS_CLAIM_SYSTEM}|{value}"}
        )
        return any(
            (entry.get("resource") or {}).get("status") == RETRACTED_CLAIM_STATUS
            for entry in found.get("entry", [])
        )

    async def __call__(self, event: InferenceCompleted) -> Sequence[Event]:
        return await self.post(event, cause=event)

    async def post(self, event: InferenceCompleted, *, cause: Event) -> Sequence[Event]:
        """Post one run's results; `cause` is the message they follow (the event itself, or
        the SR detection an imported run was read from: services/mapper/imports.py)."""
        try:
            model = self.registry.algorithm(event.model.id, event.model.version)
        except KeyError as error:
            raise PermanentError(f"{error}; message dead-lettered") from error
        unknown = sorted({f.finding_key for f in event.findings} - {m.key for m in model.findings})
        if unknown:
            raise InvalidMessage(
                f"findings.finding_key {[key[:40] for key in unknown[:3]]} not among the findings "
                f"of {model.id} {model.version} in the registry; message dead-lettered"
            )
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
        if await self._retracted(event):
            log.warning(
                "retracted_results_not_posted",
                model=model.id,
                version=model.version,
                reason="the run's claim was cancelled while it ran: its images were deleted or "
                "rejected in the PACS, or the study moved to another patient",
                findings=_finding_labels(event),
            )
            return []
        # an imported run's SR (and any SEG) is the product's own, already in the PACS
        dicomweb = self.dicomweb if event.source_report is None else None
        segmentation = (
            await segmentation_of(event, model, dicomweb) if dicomweb is not None else None
        )
        mapped = build_run(
            event,
            model,
            recorded=datetime.now(UTC),
            segmentation=str(segmentation.SOPInstanceUID) if segmentation is not None else None,
        )
        # the SR is built while the FHIR server takes the transaction, stored only after it
        preparing = (
            asyncio.ensure_future(prepare_structured_report(event, model, dicomweb, segmentation))
            if dicomweb is not None
            else None
        )
        try:
            # validating every resource is CPU in proportion to the findings: off the event loop
            await asyncio.to_thread(validate_bundle, mapped.bundle)
            response = await self.fhir.transaction(mapped.bundle, representation=True)
            references = references_by_full_url(mapped, response)
            await pin_provenance_targets(self.fhir, mapped.bundle, response)
            if preparing is not None and dicomweb is not None:
                await store_prepared_report(await preparing, model, dicomweb, segmentation)
        finally:
            if preparing is not None:
                await _settled(preparing)
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
            imported=event.source_report is not None,
            diagnostic_report=references[mapped.diagnostic_report_url],
            findings=_finding_labels(event),
            critical=sum(finding.critical for finding in posted),
        )
        return [
            cause.follow(
                ResultsPosted,
                message_id=mapped.results_posted_id,  # the verification Task names it
                study=event.study,
                model=event.model,
                diagnostic_report=references[mapped.diagnostic_report_url],
                device=references[mapped.device_url],
                provenance=references[mapped.provenance_url],
                findings=posted,
                rollout_mode=model.rollout,
                verification_task=references[mapped.verification_task_url],
            )
        ]


async def segmentation_of(
    event: InferenceCompleted, model: Algorithm, dicomweb: DicomWebClient
) -> Dataset | None:
    """The SEG of the run's segmented finding (segmentation.py), on the images of its mask's
    slices (their WADO-RS metadata); None without one. A SEG no retry can make is logged as an
    error and left out: the results and the SR are written without it."""
    finding = next((f for f in event.findings if f.present and f.mask is not None), None)
    if finding is None or finding.mask is None or finding.series_instance_uid is None:
        return None
    study_uid = event.study.study_instance_uid
    try:
        metadata = await dicomweb.retrieve_series_metadata(study_uid, finding.series_instance_uid)
        by_uid = {
            str((item.get("00080018") or {}).get("Value", [""])[0]): item for item in metadata
        }
        missing = [uid for uid in finding.mask.sop_instance_uids if uid not in by_uid]
        if missing:
            raise PermanentError(
                f"the PACS has no metadata for {len(missing)} of the mask's "
                f"{len(finding.mask.sop_instance_uids)} slices"
            )
        sources = [dataset_from_metadata(by_uid[uid]) for uid in finding.mask.sop_instance_uids]
        # building and encoding the frames take CPU in proportion to the box: off the event loop
        return await asyncio.to_thread(
            build_segmentation, study_uid, model, finding, sources, event.model.generation
        )
    except PermanentError as error:
        log.error(
            "segmentation_not_stored",
            model=model.id,
            reason=str(error),
            action="the results and the SR are written without it",
        )
        return None


@dataclass(frozen=True)
class PreparedReport:
    """A run's SR built and encoded (with its key images and SEG), not yet stored; or why no SR
    can be made (`refused`, logged when it would have been stored)."""

    structured_report: Dataset | None
    encoded: tuple[bytes, ...] = ()
    series_instance_uid: str | None = None
    refused: str | None = None


async def prepare_structured_report(
    event: InferenceCompleted,
    model: Algorithm,
    dicomweb: DicomWebClient,
    segmentation: Dataset | None = None,
) -> PreparedReport:
    """The run's TID 1500 SR and what goes with it, built and encoded but not stored (the
    mapper builds it while the FHIR transaction is under way). What no retry can fix is
    `refused`; a transient failure (the PACS away) is raised."""
    series_uid = next(
        (f.series_instance_uid for f in event.findings if f.series_instance_uid),
        event.evidence[0].series_instance_uid if event.evidence else None,
    )
    if series_uid is None:
        return PreparedReport(None, refused="no source series in the findings")
    try:
        evidence = await _evidence(event, series_uid, dicomweb)
        # building and encoding take CPU in proportion to the instances: off the event loop
        structured_report, encoded = await asyncio.to_thread(
            _encoded_structured_report, event, model, evidence, segmentation
        )
    except PermanentError as error:
        return PreparedReport(None, series_instance_uid=series_uid, refused=str(error))
    return PreparedReport(structured_report, tuple(encoded), series_uid)


async def store_prepared_report(
    prepared: PreparedReport,
    model: Algorithm,
    dicomweb: DicomWebClient,
    segmentation: Dataset | None = None,
) -> bool:
    """Store a prepared SR with STOW-RS (deterministic UIDs: storing it again replaces it);
    whether it was stored. A refusal no retry can fix is logged as an error, not raised (see
    the module's docstring), and the SEG stored alone; a transient one is raised."""
    try:
        if prepared.structured_report is None:
            raise PermanentError(prepared.refused or "no SR was built")
        await dicomweb.store_instances(list(prepared.encoded))
    except PermanentError as error:
        log.error(
            "structured_report_not_stored",
            model=model.id,
            series_instance_uid=prepared.series_instance_uid,
            reason=str(error),
        )
        if segmentation is not None and prepared.series_instance_uid is not None:
            # its Observation names it: stored without the SR
            await _store_segmentation_alone(segmentation, model, dicomweb)
        return False
    structured_report = prepared.structured_report
    log.info(
        "structured_report_stored",
        model=model.id,
        series_instance_uid=str(structured_report.SeriesInstanceUID),
        sop_instance_uid=str(structured_report.SOPInstanceUID),
        key_image_selection=len(prepared.encoded) > (2 if segmentation is not None else 1),
        segmentation=segmentation is not None,
    )
    return True


async def store_structured_report(
    event: InferenceCompleted,
    model: Algorithm,
    dicomweb: DicomWebClient,
    segmentation: Dataset | None = None,
) -> bool:
    """Build and store the run's TID 1500 SR, with its key images and its `segmentation` when
    there are; whether it was stored (`prepare_structured_report`, `store_prepared_report`)."""
    prepared = await prepare_structured_report(event, model, dicomweb, segmentation)
    return await store_prepared_report(prepared, model, dicomweb, segmentation)


async def _settled(task: asyncio.Future[Any]) -> None:
    """A side task over with its caller: cancelled when the caller failed first (the message
    is retried whole), its own failure then retrieved here so that it is not reported as never
    retrieved (the caller's error is the one the message carries)."""
    if not task.done():
        task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _store_segmentation_alone(
    segmentation: Dataset, model: Algorithm, dicomweb: DicomWebClient
) -> None:
    """Store the run's SEG by itself (its SR could not be made); a refusal is logged."""
    buffer = io.BytesIO()
    dcmwrite(buffer, segmentation, enforce_file_format=True)
    try:
        await dicomweb.store_instances([buffer.getvalue()])
    except PermanentError as error:
        log.error(
            "segmentation_not_stored",
            model=model.id,
            reason=str(error),
            action="its Observation names a SEG the PACS does not hold",
        )
        return
    log.info(
        "segmentation_stored",
        model=model.id,
        sop_instance_uid=str(segmentation.SOPInstanceUID),
        without="the SR",
    )


async def _evidence(
    event: InferenceCompleted, series_uid: str, dicomweb: DicomWebClient
) -> list[Dataset]:
    """The SR's evidence: the instances the inference service says the model read, with one
    instance's metadata from the PACS; from a sender that names none, every instance's
    metadata of the findings' series."""
    study_uid = event.study.study_instance_uid
    if event.evidence:
        first = event.evidence[0]
        header = await dicomweb.retrieve_instance_metadata(
            study_uid, first.series_instance_uid, first.sop_instance_uids[0]
        )
        if header is None:
            raise PermanentError(
                f"the PACS has no metadata for an instance of series {first.series_instance_uid}"
            )
        return evidence_from_manifest(dataset_from_metadata(header), study_uid, event.evidence)
    metadata = await dicomweb.retrieve_series_metadata(study_uid, series_uid)
    return [dataset_from_metadata(item) for item in metadata]


def _encoded_structured_report(
    event: InferenceCompleted,
    model: Algorithm,
    evidence: Sequence[Dataset],
    segmentation: Dataset | None = None,
) -> tuple[Dataset, list[bytes]]:
    """The run's SR, and its Part 10 bytes followed by its key-image selection's (when the run
    located a present finding: key_images.py) and its segmentation's. A selection that cannot
    be made is logged as an error and left out: the SR is stored without it."""
    structured_report = build_structured_report(
        event, model, evidence, created=event.created_at, segmentation=segmentation
    )
    documents: list[Dataset] = [structured_report]
    try:
        selection = key_image_selection(event, model, evidence[0])
    except (ValueError, TypeError, AttributeError) as error:
        # highdicom and pydicom quote the header value they refuse (a name, a date)
        log.error(
            "key_image_selection_not_stored",
            model=model.id,
            reason=without_quoted_values(str(error)),
            action="the SR is stored without it",
        )
        selection = None
    if selection is not None:
        documents.append(selection)
    if segmentation is not None:
        documents.append(segmentation)
    encoded = []
    for document in documents:
        buffer = io.BytesIO()
        dcmwrite(buffer, document, enforce_file_format=True)
        encoded.append(buffer.getvalue())
    return structured_report, encoded


def _person_name(practitioner: dict[str, Any]) -> str:
    """DICOM PN (Family^Given) of a Practitioner, from its first name."""
    name = (practitioner.get("name") or [{}])[0]
    family = str(name.get("family") or "")
    given = " ".join(str(g) for g in name.get("given", []))
    if not family and not given:
        return str(name.get("text") or "Unknown")[:64]
    return f"{family}^{given}".rstrip("^")[:64]


class SupersedeReports:
    """The radiologist's verdict reaches the PACS: `on_verified` (finding.verified) stores the
    run's SR again as VERIFIED, with the radiologist as Verifying Observer, the preliminary SR
    as predecessor and any amended measurement corrected (verified_report.py); `on_rejected`
    (finding.rejected) stores an IOCM rejection note for it (rejection_note.py). A run without
    a preliminary SR in the PACS (SR writing off, or the SR could not be made) stores nothing
    and says so."""

    def __init__(
        self, registry: Registry, fhir: FhirClient, dicomweb: DicomWebClient, organization: str
    ) -> None:
        self.registry = registry
        self.fhir = fhir
        self.dicomweb = dicomweb
        self.organization = organization

    async def _run(
        self, diagnostic_report: str
    ) -> tuple[dict[str, Any], StudyRun, Algorithm, Dataset] | None:
        """(the report, its run, its model, the AI's SR), or None (logged) without one."""
        report = await self.fhir.read_resource(diagnostic_report)
        try:
            run = StudyRun.parse(radmesh_identifier_value(report) or "")
        except ValueError as error:
            raise InvalidMessage(f"{diagnostic_report} has no radmesh run identifier") from error
        try:
            model = self.registry.algorithm(run.model_id, run.model_version)
        except KeyError:
            log.error(
                "superseding_report_not_stored",
                reason=f"{run.model_id} {run.model_version} not in registry",
            )
            return None
        if isinstance(model, ImportedAlgorithm):
            log.info(
                "superseding_report_not_stored",
                reason="the results were imported from another product's SR, which radmesh "
                "leaves in the PACS as that product stored it (the FHIR record follows the verdict)",
                model=model.id,
            )
            return None
        preliminary = await self._preliminary(run, model)
        if preliminary is None:
            log.warning(
                "superseding_report_not_stored",
                reason="no preliminary SR of this run in the PACS",
                model=model.id,
            )
            return None
        return report, run, model, preliminary

    async def _store(self, dataset: Dataset) -> None:
        buffer = io.BytesIO()
        dcmwrite(buffer, dataset, enforce_file_format=True)
        await self.dicomweb.store_instances([buffer.getvalue()])

    async def on_verified(self, event: FindingVerified) -> Sequence[Event]:
        found = await self._run(event.diagnostic_report)
        if found is None:
            return []
        report, run, model, preliminary = found
        amendments = await self._amendments(report, run, model)
        verifier = await self.fhir.read_resource(event.verifier)
        verified, applied = verified_structured_report(
            preliminary,
            sop_instance_uid=verified_sr_uid(run.study_instance_uid, model, run.generation),
            verifier_name=_person_name(verifier),
            organization=self.organization,
            verified_at=event.created_at,
            amendments=amendments,
        )
        if len(applied) < len(amendments):
            log.warning(
                "amendment_not_in_structured_report",
                amendments=len(amendments),
                applied=len(applied),
                action="the FHIR record holds the amended value; the SR keeps the AI's",
            )
        await self._store(verified)
        log.info(
            "verified_report_stored",
            model=model.id,
            sop_instance_uid=str(verified.SOPInstanceUID),
            predecessor=str(preliminary.SOPInstanceUID),
            amended=len(applied),
        )
        return []

    async def on_rejected(self, event: FindingRejected) -> Sequence[Event]:
        found = await self._run(event.diagnostic_report)
        if found is None:
            return []
        verifier = await self.fhir.read_resource(event.verifier)
        await self._reject_sr(
            found,
            reason=event.reason or event.reason_code or "rejected",
            verifier_name=_person_name(verifier),
            title=QUALITY,
        )
        return []

    async def on_retracted(self, event: ResultsRetracted) -> Sequence[Event]:
        """The run's results were retracted (its images changed in the PACS, or its study
        changed patient): its SR is rejected in the PACS by a note of the same IOCM reason,
        observed by radmesh. A whole study deleted from the PACS took the SR with it: nothing
        is stored (a note would bring the study back as a lone rejection note)."""
        if not event.sr_in_pacs:
            log.info("rejection_note_not_stored", reason="the study was deleted from the PACS")
            return []
        found = await self._run(event.diagnostic_report)
        if found is None:
            return []
        await self._reject_sr(
            found,
            reason=f"{IOCM_TITLES[event.reason_code]}: {event.reason}",
            verifier_name=None,
            title=event.reason_code,
            source=event.source,
        )
        return []

    async def _reject_sr(
        self,
        found: tuple[dict[str, Any], StudyRun, Algorithm, Dataset],
        *,
        reason: str,
        verifier_name: str | None,
        title: str,
        source: str = "verdict",
    ) -> None:
        """Store the IOCM rejection note of the run's SR, once: a retraction is announced again
        whenever the site's rejection note is read (every stable-study event), and storing the
        note again would make the study change again."""
        _, run, model, preliminary = found
        note_series, note_uid = rejection_note_uids(run.study_instance_uid, model, run.generation)
        if await self._metadata(run.study_instance_uid, note_series, note_uid) is not None:
            log.info("rejection_note_already_stored", sop_instance_uid=note_uid)
            return
        key_images = await self._key_images(run, model)
        segmentation = await self._segmentation(run, model)
        note = rejection_note(
            preliminary,
            model,
            also_rejected=[d for d in (key_images, segmentation) if d is not None],
            reason=reason,
            verifier_name=verifier_name,
            generation=run.generation,
            title=title,
        )
        await self._store(note)
        log.info(
            "rejection_note_stored",
            model=model.id,
            sop_instance_uid=str(note.SOPInstanceUID),
            rejected=str(preliminary.SOPInstanceUID),
            key_images_rejected=key_images is not None,
            segmentation_rejected=segmentation is not None,
            source=source,
        )

    async def _preliminary(self, run: StudyRun, model: Algorithm) -> Dataset | None:
        series_uid, sop_uid = sr_uids(run.study_instance_uid, model, run.generation)
        metadata = await self._metadata(run.study_instance_uid, series_uid, sop_uid)
        return dataset_from_metadata(metadata) if metadata is not None else None

    async def _key_images(self, run: StudyRun, model: Algorithm) -> Dataset | None:
        """The run's key-image selection in the PACS (key_images.py), or None: it listed none."""
        series_uid, sop_uid = key_images_uids(run.study_instance_uid, model, run.generation)
        metadata = await self._metadata(run.study_instance_uid, series_uid, sop_uid)
        return dataset_from_metadata(metadata) if metadata is not None else None

    async def _segmentation(self, run: StudyRun, model: Algorithm) -> Dataset | None:
        """The run's SEG in the PACS (segmentation.py), or None: it segmented nothing."""
        series_uid, sop_uid = segmentation_uids(run.study_instance_uid, model, run.generation)
        metadata = await self._metadata(run.study_instance_uid, series_uid, sop_uid)
        return dataset_from_metadata(metadata) if metadata is not None else None

    async def _metadata(
        self, study_uid: str, series_uid: str, sop_uid: str
    ) -> dict[str, Any] | None:
        """One instance's WADO-RS metadata, or None when the PACS does not have it."""
        try:
            metadata = await self.dicomweb.retrieve_series_metadata(study_uid, series_uid)
        except RemoteRejected as error:
            if error.status == 404:
                return None
            raise
        return next(
            (
                item
                for item in metadata
                if (item.get("00080018") or {}).get("Value", [None])[0] == sop_uid
            ),
            None,
        )

    async def _amendments(
        self, report: dict[str, Any], run: StudyRun, model: Algorithm
    ) -> list[Amendment]:
        """The measurements the radiologist corrected: amended Observations of the report."""
        found: list[Amendment] = []
        for reference in report.get("result", []):
            observation = await self.fhir.read_resource(str(reference.get("reference")))
            quantity = observation.get("valueQuantity") or {}
            measured = quantity.get("value")
            if observation.get("status") != "amended" or measured is None:
                continue
            try:
                finding = FindingValue.parse(radmesh_identifier_value(observation) or "")
            except ValueError:
                continue
            finding_key, index = finding.finding_key, finding.index
            mapping = model.finding(finding_key)
            group = mapping.depends_on or finding_key
            found.append(
                Amendment(
                    tracking_uid=tracking_uid(
                        run.study_instance_uid, model, group, int(index), run.generation
                    ),
                    code_value=mapping.codes[0].code,
                    value=float(measured),
                )
            )
        return found
