"""Re-driving runs that were claimed and never finished.

A run's claim (shared.claims) stays `in-progress` until the mapper completes it with the
results. One left so for long was lost on the way: a crash between the claim and the publish,
a purged queue, a message dead-lettered by a fault since fixed (a model server down for hours,
a PACS that lost the series for a while). Nothing else would ever start it again: every hook
finds the claim and starts nothing.

At each of the subscriber's sweeps (`reconcile_interval_seconds`), every claim `in-progress`
whose last change is older than `redrive_claims_after_minutes` is taken up:

- its attempt is noted on the claim first, guarded by the version read (of two replicas, one
  re-drives; the note also restarts the claim's clock);
- study.detected is published again for that run alone (its model, version and generation),
  from the ImagingStudy as it is now; every stage is idempotent, so parts already done are
  found, not done twice;
- each re-drive is logged (`run_redriven`, with the earlier run's correlation id) and counted
  (`radmesh_runs_redriven_total{missing="finished-run"}`).

After `redrive_claims_attempts` attempts the claim is set `failed`, saying so: the record shows
visibly that the analysis did not finish (the dead letters say why), and `radmesh rerun` starts
the study afresh. A claim whose ImagingStudy is gone or no longer available fails the same way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from services.subscriber.imaging_study import study_ref
from shared.errors import InvalidMessage, RemoteConflict, RemoteRejected
from shared.fhir import FhirClient
from shared.identifiers import ANALYSIS_CLAIM_SYSTEM, StudyRun
from shared.messages import Event, ModelRef, StudyDetected
from shared.metrics import RUNS_REDRIVEN

__all__ = ["REDRIVE_NOTE", "RedriveClaims"]

log = structlog.get_logger(__name__)

REDRIVE_NOTE = "radmesh re-drove this unfinished analysis"


def _claim_value(claim: dict[str, Any]) -> str:
    return next(
        (
            str(i.get("value"))
            for i in claim.get("identifier", [])
            if i.get("system") == ANALYSIS_CLAIM_SYSTEM
        ),
        "",
    )


def _correlation_id(claim: dict[str, Any]) -> str | None:
    return next(
        (
            str(part["valueString"])
            for part in claim.get("input", [])
            if (part.get("type") or {}).get("text") == "correlation-id" and "valueString" in part
        ),
        None,
    )


def attempts(claim: dict[str, Any]) -> int:
    """How often the claim's run was re-driven (its notes)."""
    return sum(str(n.get("text", "")).startswith(REDRIVE_NOTE) for n in claim.get("note", []))


class RedriveClaims:
    """The sweep of unfinished claims (see the module's docstring)."""

    def __init__(
        self,
        fhir: FhirClient,
        publish: Callable[[Event], Awaitable[None]],
        endpoint_addresses: Callable[[dict[str, Any]], Awaitable[dict[str, str]]],
        *,
        after_minutes: float,
        max_attempts: int,
    ) -> None:
        self.fhir = fhir
        self.publish = publish
        self.endpoint_addresses = endpoint_addresses
        self.after_minutes = after_minutes
        self.max_attempts = max_attempts

    async def sweep(self, now: datetime | None = None, imaging_study: str | None = None) -> int:
        """One round (of one ImagingStudy's claims when given: a server shared with others'
        work); how many runs were announced again."""
        if self.after_minutes <= 0:
            return 0
        now = now or datetime.now(UTC)
        before = now - timedelta(minutes=self.after_minutes)
        params: dict[str, Any] = {
            "identifier": f"{ANALYSIS_CLAIM_SYSTEM}|",
            "status": "in-progress",
            "_lastUpdated": f"le{before.isoformat()}",
            "_count": 50,
        }
        if imaging_study is not None:
            params["focus"] = imaging_study
        bundle: dict[str, Any] | None = await self.fhir.execute("Task", "get", params=params)
        redriven = 0
        while bundle is not None:
            for entry in bundle.get("entry", []):
                if "resource" in entry:
                    redriven += await self._take_up(dict(entry["resource"]), now)
            bundle = await self.fhir.next_page(bundle)
        return redriven

    async def _take_up(self, claim: dict[str, Any], now: datetime) -> int:
        reference = f"Task/{claim['id']}"
        try:
            run = StudyRun.parse(_claim_value(claim))
        except ValueError as error:
            log.info("claim_not_redriven", claim=reference, reason=str(error))
            return 0
        if attempts(claim) >= self.max_attempts:
            await self._fail(
                claim,
                now,
                f"the analysis did not finish after {attempts(claim)} re-drives; the dead "
                "letters say why (radmesh dlq list), radmesh rerun starts it afresh",
            )
            return 0
        imaging_study = await self._imaging_study(claim)
        if imaging_study is None or imaging_study.get("status") != "available":
            await self._fail(claim, now, "its imaging study is gone or no longer available")
            return 0
        try:
            event = StudyDetected(
                study=study_ref(imaging_study, await self.endpoint_addresses(imaging_study)),
                models=(
                    ModelRef(id=run.model_id, version=run.model_version, generation=run.generation),
                ),
                source="reconcile",
            )
        except InvalidMessage as error:
            await self._fail(claim, now, f"its imaging study cannot be announced: {error}")
            return 0
        note = f"{REDRIVE_NOTE} ({attempts(claim) + 1}) on {now.isoformat(timespec='seconds')}"
        if not await self._update(claim, {"note": [*claim.get("note", []), {"text": note}]}):
            return 0
        await self.publish(event)
        RUNS_REDRIVEN.labels(missing="finished-run").inc()
        log.warning(
            "run_redriven",
            missing=["finished-run"],
            claim=reference,
            attempt=attempts(claim) + 1,
            earlier_correlation_id=_correlation_id(claim),
            correlation_id=str(event.correlation_id),
            study_instance_uid=run.study_instance_uid,
        )
        return 1

    async def _imaging_study(self, claim: dict[str, Any]) -> dict[str, Any] | None:
        reference = str((claim.get("focus") or {}).get("reference", ""))
        if not reference.startswith("ImagingStudy/"):
            return None
        try:
            return dict(await self.fhir.read_resource(reference))
        except RemoteRejected as error:
            if error.status in (404, 410):
                return None
            raise

    async def _fail(self, claim: dict[str, Any], now: datetime, why: str) -> None:
        text = f"radmesh gave up on {now.isoformat(timespec='seconds')}: {why}"
        if await self._update(claim, {"status": "failed", "statusReason": {"text": text}}):
            RUNS_REDRIVEN.labels(missing="abandoned").inc()
            log.error("run_abandoned", claim=f"Task/{claim['id']}", reason=why)

    async def _update(self, claim: dict[str, Any], changes: dict[str, Any]) -> bool:
        """Whether this sweep changed the claim (False: another replica, or the mapper, did
        first; it is left to them)."""
        try:
            await self.fhir.update_resource({**claim, **changes})
        except RemoteConflict:
            log.info("claim_changed_meanwhile", claim=f"Task/{claim['id']}")
            return False
        return True
