"""Re-driving runs that were claimed and never announced, or never finished.

A run's claim (shared.claims) is created `ready`, set `in-progress` once study.detected is
published, and stays so until the mapper completes it with the results. Nothing but this module
would ever start a lost run again: every hook finds the claim and starts nothing.

A claim still `ready` after `unannounced_after_seconds` (60) was never announced: its subscriber
stopped (a crash, a kill, a node lost) between creating it and publishing. Every
`unannounced_after_seconds` the subscriber looks for such claims and announces each: the claim
is set `in-progress` first with a note (version-guarded: of two replicas, one announces), then
study.detected is published for that run alone; logged (`run_redriven`) and counted
(`radmesh_runs_redriven_total{missing="announcement"}`). A critical finding waits a minute or
two for its alert, not half an hour.

A claim `in-progress` for long was lost on the way: a purged queue, a message dead-lettered by
a fault since fixed (a model server down for hours, a PACS that lost the series for a while).

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
from shared.claims import ANNOUNCED_CLAIM_STATUS, CLAIMED_STATUS
from shared.errors import InvalidMessage, RemoteConflict, RemoteRejected
from shared.fhir import FhirClient
from shared.identifiers import ANALYSIS_CLAIM_SYSTEM, StudyRun
from shared.messages import Event, ModelRef, StudyDetected
from shared.metrics import RUNS_REDRIVEN

__all__ = ["ANNOUNCE_NOTE", "REDRIVE_NOTE", "RedriveClaims"]

log = structlog.get_logger(__name__)

REDRIVE_NOTE = "radmesh re-drove this unfinished analysis"
ANNOUNCE_NOTE = "radmesh announced this analysis, claimed and never announced"


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
        unannounced_after_seconds: float = 0.0,
    ) -> None:
        self.fhir = fhir
        self.publish = publish
        self.endpoint_addresses = endpoint_addresses
        self.after_minutes = after_minutes
        self.max_attempts = max_attempts
        self.unannounced_after_seconds = unannounced_after_seconds

    async def sweep(self, now: datetime | None = None, imaging_study: str | None = None) -> int:
        """One round (of one ImagingStudy's claims when given: a server shared with others'
        work); how many runs were announced again."""
        if self.after_minutes <= 0:
            return 0
        age = timedelta(minutes=self.after_minutes)
        return await self._each(ANNOUNCED_CLAIM_STATUS, age, self._take_up, now, imaging_study)

    async def announce_unannounced(
        self, now: datetime | None = None, imaging_study: str | None = None
    ) -> int:
        """One look for claims left `ready` past `unannounced_after_seconds` (of one
        ImagingStudy's when given); how many runs were announced."""
        if self.unannounced_after_seconds <= 0:
            return 0
        age = timedelta(seconds=self.unannounced_after_seconds)
        return await self._each(CLAIMED_STATUS, age, self._announce, now, imaging_study)

    async def _each(
        self,
        status: str,
        age: timedelta,
        take: Callable[[dict[str, Any], datetime], Awaitable[int]],
        now: datetime | None,
        imaging_study: str | None,
    ) -> int:
        """`take` each claim of `status` unchanged for longer than `age`; how many it took."""
        now = now or datetime.now(UTC)
        taken = 0
        for claim in await self._claims(status, now - age, imaging_study):
            taken += await take(claim, now)
        return taken

    async def _claims(
        self, status: str, changed_before: datetime, imaging_study: str | None
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {
            "identifier": f"{ANALYSIS_CLAIM_SYSTEM}|",
            "status": status,
            "_lastUpdated": f"le{changed_before.isoformat()}",
            "_count": 50,
        }
        if imaging_study is not None:
            params["focus"] = imaging_study
        claims = []
        bundle: dict[str, Any] | None = await self.fhir.execute("Task", "get", params=params)
        while bundle is not None:
            claims += [dict(e["resource"]) for e in bundle.get("entry", []) if "resource" in e]
            bundle = await self.fhir.next_page(bundle)
        return claims

    async def _take_up(self, claim: dict[str, Any], now: datetime) -> int:
        if attempts(claim) >= self.max_attempts:
            await self._fail(
                claim,
                now,
                f"the analysis did not finish after {attempts(claim)} re-drives; the dead "
                "letters say why (radmesh dlq list), radmesh rerun starts it afresh",
            )
            return 0
        note = f"{REDRIVE_NOTE} ({attempts(claim) + 1}) on {now.isoformat(timespec='seconds')}"
        changes = {"note": [*claim.get("note", []), {"text": note}]}
        return await self._publish(claim, now, changes, "finished-run", attempt=attempts(claim) + 1)

    async def _announce(self, claim: dict[str, Any], now: datetime) -> int:
        note = f"{ANNOUNCE_NOTE} on {now.isoformat(timespec='seconds')}"
        changes = {
            "status": ANNOUNCED_CLAIM_STATUS,
            "note": [*claim.get("note", []), {"text": note}],
        }
        return await self._publish(claim, now, changes, "announcement")

    async def _publish(
        self,
        claim: dict[str, Any],
        now: datetime,
        changes: dict[str, Any],
        missing: str,
        **fields: object,
    ) -> int:
        """Announce the claim's run again after writing `changes` to the claim (only if nobody
        changed it since it was read); 1 if announced."""
        reference = f"Task/{claim['id']}"
        try:
            run = StudyRun.parse(_claim_value(claim))
        except ValueError as error:
            log.info("claim_not_redriven", claim=reference, reason=str(error))
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
        if not await self._update(claim, changes):
            return 0
        await self.publish(event)
        RUNS_REDRIVEN.labels(missing=missing).inc()
        log.warning(
            "run_redriven",
            missing=[missing],
            claim=reference,
            earlier_correlation_id=_correlation_id(claim),
            correlation_id=str(event.correlation_id),
            study_instance_uid=run.study_instance_uid,
            **fields,
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
