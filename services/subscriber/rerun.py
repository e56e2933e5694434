"""`radmesh rerun STUDY_UID --reason TEXT`: an operator's re-analysis of a study.

A study's run is analysed once (its claim, shared.claims); running it again is an explicit act:

1. the study's live runs (claims `in-progress` or `completed`) are listed; one whose report a
   radiologist already decided is left alone unless `--include-verified` says otherwise;
2. `study.retracted` (source `operator-rerun`, IOCM 113001) goes out: the verification service
   marks the earlier results `entered-in-error` saying why, cancels their Tasks and claims and
   runs still in progress, the notifier withdraws their alerts, the mapper rejects their SRs in
   the PACS — two live AI reports of one study must never disagree;
3. once every claim is cancelled, the study is announced again (`study.detected`, source
   `manual`) and claims the runs' next generation (`…/<version>/g2`), under new identifiers.

It runs in the operator's shell with the subscriber's settings; the other services do the work.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from typing import Any, TextIO

from services.subscriber.handlers import StudyAnnouncer
from services.subscriber.imaging_study import study_ref
from services.subscriber.settings import SubscriberSettings
from shared.bus import Bus
from shared.claims import RETRACTED_CLAIM_STATUS
from shared.dicomweb import DicomWebClient
from shared.fhir import FhirClient
from shared.identifiers import ANALYSIS_CLAIM_SYSTEM, DICOM_UID_SYSTEM
from shared.iocm import SOURCE_CODES
from shared.messages import StudyRetracted
from shared.registry import load_registry
from shared.settings import RadmeshSettings

__all__ = ["LiveRun", "rerun"]

# DiagnosticReport states in which no radiologist has decided the AI's report yet.
_UNDECIDED_REPORT = {"registered", "partial", "preliminary"}
_POLL_SECONDS = 0.5


@dataclass(frozen=True)
class LiveRun:
    """A run of the study whose claim is not cancelled, and its report's status, if any."""

    claim: str
    description: str
    report: str | None
    report_status: str | None

    @property
    def decided(self) -> bool:
        return self.report_status is not None and self.report_status not in _UNDECIDED_REPORT


async def _live_claims(fhir: FhirClient, imaging_study: str) -> list[dict[str, Any]]:
    """The study's claims that no retraction cancelled (one search)."""
    claims = await fhir.execute(
        "Task",
        "get",
        params={"focus": imaging_study, "identifier": f"{ANALYSIS_CLAIM_SYSTEM}|", "_count": 100},
    )
    return [
        entry["resource"]
        for entry in claims.get("entry", [])
        if entry["resource"].get("status") != RETRACTED_CLAIM_STATUS
    ]


async def _live_runs(fhir: FhirClient, imaging_study: str) -> list[LiveRun]:
    """The live claims with their report's status (read once, before the retraction)."""
    runs = []
    for claim in await _live_claims(fhir, imaging_study):
        report = next(
            (
                str(output["valueReference"]["reference"])
                for output in claim.get("output", [])
                if (output.get("valueReference") or {}).get("reference")
            ),
            None,
        )
        status = str((await fhir.read_resource(report)).get("status")) if report else None
        runs.append(
            LiveRun(
                claim=f"Task/{claim['id']}",
                description=str(claim.get("description", "")),
                report=report,
                report_status=status,
            )
        )
    return runs


async def rerun(
    settings: RadmeshSettings,
    study_instance_uid: str,
    reason: str,
    *,
    include_verified: bool = False,
    wait_seconds: float = 120.0,
    out: TextIO = sys.stdout,
) -> int:
    """Re-analyse one study (see the module docstring); the exit status of `radmesh rerun`."""
    own = SubscriberSettings()
    fhir = FhirClient(settings.fhir)
    dicomweb = DicomWebClient(settings.dicomweb)
    bus = Bus(settings.broker, "subscriber")
    try:
        found = (
            await fhir.resources("ImagingStudy")
            .search(identifier=f"{DICOM_UID_SYSTEM}|urn:oid:{study_instance_uid}")
            .limit(1)
            .fetch()
        )
        if not found:
            print(
                f"rerun: the FHIR server has no ImagingStudy for study {study_instance_uid} "
                "(the PACS's stable-study event registers one)",
                file=sys.stderr,
            )
            return 1
        imaging_study = dict(found[0])
        reference = f"ImagingStudy/{imaging_study['id']}"
        runs = await _live_runs(fhir, reference)
        decided = [run for run in runs if run.decided]
        if decided and not include_verified:
            print(
                f"rerun: {len(decided)} run(s) of this study were decided by a radiologist ("
                + ", ".join(f"{run.report} {run.report_status}" for run in decided)
                + "); pass --include-verified to retract those reports too",
                file=sys.stderr,
            )
            return 2
        await bus.start()
        await bus.declare([])  # the exchange (a publisher has no queue)
        if runs:
            for run in runs:
                print(f"retracting {run.description} ({run.report or 'no report yet'})", file=out)
            await bus.publish(
                StudyRetracted(
                    study=study_ref(imaging_study, {}),
                    source="operator-rerun",
                    reason_code=SOURCE_CODES["operator-rerun"],
                    reason=f"re-analysis requested: {reason}",
                )
            )
            if not await _wait_until_cancelled(fhir, reference, len(runs), wait_seconds, out):
                return 1
        announcer = StudyAnnouncer(own, load_registry(settings.registry_path), fhir, dicomweb, bus)
        published = await announcer.announce(imaging_study, "manual")
        if not published:
            print("rerun: nothing announced (no model applies: radmesh route)", file=sys.stderr)
            return 1
        print("announced again: study.detected published (see the subscriber's log)", file=out)
        return 0
    finally:
        await bus.stop()
        await fhir.close()
        await dicomweb.close()


async def _wait_until_cancelled(
    fhir: FhirClient, imaging_study: str, count: int, wait_seconds: float, out: TextIO
) -> bool:
    """Whether the verification service cancelled every claim of the study in time; progress
    every few seconds."""
    loop = asyncio.get_running_loop()
    started = last_said = loop.time()
    while True:
        live = await _live_claims(fhir, imaging_study)
        waited = loop.time() - started
        if not live:
            print(f"{count} run(s) retracted in {waited:.1f} s", file=out)
            return True
        if waited >= wait_seconds:
            print(
                f"rerun: {len(live)} run(s) still not retracted after {wait_seconds:.0f} s; is "
                "the verification service running? (radmesh status)",
                file=sys.stderr,
            )
            return False
        if loop.time() - last_said >= 5:
            print(f"waiting for the verification service: {len(live)} run(s) left", file=out)
            last_said = loop.time()
        await asyncio.sleep(_POLL_SECONDS)
