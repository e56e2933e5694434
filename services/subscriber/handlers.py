"""Hook requests → the ImagingStudy → the models that apply and are not done yet → study.detected;
a stable study holding another product's SR → structured-report.detected."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

import structlog
from aiohttp import web

from services.subscriber.claims import claim_run, mark_announced
from services.subscriber.hl7_orders import Hl7Order
from services.subscriber.hook_auth import (
    SIGNATURE_HEADER,
    HookRefused,
    ReplayGuard,
    bearer_matches,
    signature_matches,
)
from services.subscriber.hook_bodies import (
    StableSeries,
    StableStudyEvent,
    imaging_study_of,
    parse_imaging_study,
    parse_stable_study_event,
)
from services.subscriber.imaging_study import (
    series_summaries,
    study_instance_uid,
    study_ref,
)
from services.subscriber.in_flight import InFlight, RunNotAnnounced
from services.subscriber.notifications import (
    Notification,
    offers_events_operation,
    parse_notification,
    parse_posted_body,
    subscription_reference,
)
from services.subscriber.pacs_study import find_or_register_imaging_study
from services.subscriber.retractions import (
    deletion_retraction,
    parse_deleted_event,
    patient_change_retraction,
    rejection_note_retractions,
)
from services.subscriber.settings import SubscriberSettings
from services.subscriber.stale_claims import RedriveClaims
from services.subscriber.third_party_reports import ReportInstance, ReportsSeen, new_reports
from shared.bus import Bus
from shared.claims import CLAIMED_STATUS, MAX_RUN_GENERATIONS, RETRACTED_CLAIM_STATUS
from shared.dicomweb import DicomWebClient
from shared.errors import (
    InvalidMessage,
    PermanentError,
    RadmeshError,
    RemoteRejected,
    TransientError,
)
from shared.fhir import FhirClient
from shared.identifiers import ANALYSIS_CLAIM_SYSTEM, business_identifier, study_run_value
from shared.iocm import RejectionNote, rejected_series
from shared.messages import (
    ModelRef,
    StructuredReportDetected,
    StudyDetected,
    StudyRef,
    StudyRetracted,
)
from shared.metrics import NOTIFICATION_GAPS, STUDIES_SKIPPED
from shared.operation_outcome import (
    media_type_refusal,
    outcome_response,
    transaction_response,
)
from shared.registry import ModelEntry, Registry
from shared.routing import study_series
from shared.runtime import Periodic

log = structlog.get_logger(__name__)
# Pauses between attempts to release a claim (a DELETE HAPI may refuse while it writes).
_RELEASE_BACKOFF_SECONDS = (0.2, 0.5, 1.0, 2.0)
_A = TypeVar("_A")
_B = TypeVar("_B")

Source = Literal["fhir-rest-hook", "pacs-stable-study", "hl7-order", "reconcile", "manual"]


async def _together(first: Awaitable[_A], second: Awaitable[_B]) -> tuple[_A, _B]:
    """Two independent reads of remote servers at once. A failure is raised as it is (not in an
    ExceptionGroup, as asyncio.TaskGroup would: the callers answer by its class) and cancels the
    other read."""
    one, two = asyncio.ensure_future(first), asyncio.ensure_future(second)
    try:
        return await one, await two
    except BaseException:
        one.cancel()
        two.cancel()
        await asyncio.gather(one, two, return_exceptions=True)
        raise


def _key(model: ModelEntry) -> tuple[str, str]:
    return model.id, model.version


def _skip_reason(
    candidates: list[ModelEntry], in_flight: list[ModelEntry], rejected: frozenset[str]
) -> tuple[str, str]:
    """(the kind, for the counter; the words, for the log) of a study that starts nothing."""
    if candidates:
        return (
            ("in-flight", "run in flight")
            if in_flight
            else ("already-ran", "every model already ran")
        )
    if rejected:
        return (
            "no-model-applies",
            f"no model applies ({len(rejected)} series rejected in the PACS left out)",
        )
    return "no-model-applies", "no model applies"


def _pacs_state(event: StableStudyEvent) -> frozenset[tuple[str, str | None, int]]:
    """What of a stable study can start or retract a run: every series but SR documents (a new
    image series, a changed instance count, a rejection note's KO series all change it)."""
    return frozenset(
        (series.series_instance_uid, series.modality, series.instance_count)
        for series in event.series
        if series.modality != "SR"
    )


def _imaging_study_state(imaging_study: dict[str, Any]) -> frozenset[tuple[str, str | None, int]]:
    """`_pacs_state` as the ImagingStudy records the study; empty (nothing to compare a PACS
    event with) when a series lacks its UID or its number of instances."""
    state: set[tuple[str, str | None, int]] = set()
    for series in imaging_study.get("series", []):
        modality = (series.get("modality") or {}).get("code")
        if modality == "SR":
            continue
        count = series.get("numberOfInstances")
        if not series.get("uid") or not isinstance(count, int):
            return frozenset()
        state.add((str(series["uid"]), modality, count))
    return frozenset(state)


def _skipped(kind: str, reason: str, *, warning: bool = False, **fields: object) -> None:
    """A study that starts no run: logged with the reason (`study_skipped`) and counted by kind
    (`radmesh_studies_skipped_total{reason}`), never silent."""
    STUDIES_SKIPPED.labels(reason=kind).inc()
    (log.warning if warning else log.info)("study_skipped", reason=reason, kind=kind, **fields)


def _report_failure(event: str) -> Callable[[asyncio.Task[Any]], None]:
    """A done-callback for a background loop: its end by an error is logged as `event`."""

    def report(task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error(event, error=str(task.exception()))

    return report


class StudyAnnouncer:
    """The subscriber's handlers: authenticate, resolve the study, pick models, publish."""

    def __init__(
        self,
        settings: SubscriberSettings,
        registry: Registry,
        fhir: FhirClient,
        dicomweb: DicomWebClient,
        bus: Bus,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.fhir = fhir
        self.dicomweb = dicomweb
        self.bus = bus
        self._last_poll = datetime.now(UTC).isoformat(timespec="milliseconds")
        self._replays = ReplayGuard(settings.pacs_hook_max_age_seconds)
        self._event_counters: dict[str, int] = {}  # Subscription → eventsSinceSubscriptionStart
        self._events_offered: bool | None = None  # the server's `$events`, once known
        self._in_flight = InFlight(settings.reannounce_after_seconds)
        # study UID → (its state in the last stable-study event taken, when): the PACS announces
        # a study again once radmesh's SR is stored into it; that event changes nothing
        self._pacs_states: dict[str, tuple[frozenset[tuple[str, str | None, int]], float]] = {}
        # other products' SR documents announced lately (the PACS announces the study again
        # after each store, and radmesh's own SR store is one)
        self._reports_seen = ReportsSeen(settings.reannounce_after_seconds)
        self._reconciliation: asyncio.Task[int] | None = None
        self.stale_claims = RedriveClaims(
            fhir,
            bus.publish,
            self._endpoint_addresses,
            after_minutes=settings.redrive_claims_after_minutes,
            max_attempts=settings.redrive_claims_attempts,
            unannounced_after_seconds=settings.unannounced_claims_after_seconds,
        )
        self._claim_watch: Periodic | None = None

    # -- HTTP handlers --------------------------------------------------------------------

    def _authorised(self, request: web.Request) -> bool:
        if bearer_matches(
            request.headers.get("Authorization"), self.settings.hook_secret.get_secret_value()
        ):
            return True
        log.warning("hook_refused", status=401, path=request.path, reason="wrong hook secret")
        return False

    async def rest_hook_with_payload(self, request: web.Request) -> web.Response:
        """`PUT {endpoint}/ImagingStudy/{id}` with the resource (channel.payload set)."""
        if not self._authorised(request):
            return outcome_response(401, "login", "missing or wrong hook secret")
        body = await request.read()

        async def announce_one() -> int:
            resource = parse_imaging_study(body)
            if resource.get("id") != request.match_info["id"]:
                raise InvalidMessage("resource id does not match the URL")
            return await self.announce(resource, "fhir-rest-hook")

        return await self._answer(request, announce_one, body)

    async def rest_hook_without_payload(self, request: web.Request) -> web.Response:
        """`POST {endpoint}`: empty (no payload: look up what changed), a Subscriptions
        Backport notification (R4/R4B: handshake, heartbeat, events with full-resource, id-only
        or empty payloads), another Bundle of ImagingStudies, or a bare ImagingStudy."""
        if not self._authorised(request):
            return outcome_response(401, "login", "missing or wrong hook secret")
        body = await request.read()
        if not body.strip():
            return await self._answer(request, lambda: self.poll_updated("fhir-rest-hook"))

        notification: list[Notification] = []

        async def announce_all() -> int:
            notification.append(parse_posted_body(body))
            return await self.announce_notification(notification[0])

        answer = await self._answer(request, announce_all, body)
        if answer.status == 200 and notification and notification[0].bundle:
            # A server delivering a notification Bundle as a FHIR transaction (HAPI's topic
            # Subscriptions) reads a Bundle back; an OperationOutcome alone it takes for a failed
            # delivery and sends again. The outcome rides in the transaction-response.
            return transaction_response(answer)
        return answer

    def _signed(self, request: web.Request, body: bytes) -> web.Response | None:
        """None when the PACS signed the body, else the 401."""
        if signature_matches(
            body,
            request.headers.get(SIGNATURE_HEADER),
            self.settings.pacs_hook_secret.get_secret_value(),
        ):
            return None
        log.warning("hook_refused", status=401, path=request.path, reason="wrong signature")
        return outcome_response(401, "login", f"missing or wrong {SIGNATURE_HEADER}")

    async def pacs_stable_study(self, request: web.Request) -> web.Response:
        """The PACS's signed stable-study webhook."""
        body = await request.read()
        if (refusal := self._signed(request, body)) is not None:
            return refusal

        async def announce_event() -> int:
            event = parse_stable_study_event(body)
            self._replays.check(event.event_id, event.emitted_at)
            published = await self.announce_pacs_study(event)
            self._replays.remember(event.event_id)
            return published

        return await self._answer(request, announce_event, body)

    async def pacs_deleted(self, request: web.Request) -> web.Response:
        """The PACS's signed "deleted" webhook: the AI results read from what went are
        retracted (study.retracted)."""
        body = await request.read()
        if (refusal := self._signed(request, body)) is not None:
            return refusal

        async def retract() -> int:
            event = parse_deleted_event(body)
            self._replays.check(event.event_id, event.emitted_at)
            structlog.contextvars.bind_contextvars(study_instance_uid=event.study_instance_uid)
            await self._publish_retraction(deletion_retraction(event))
            self._replays.remember(event.event_id)
            return 1

        return await self._answer(request, retract, body, published="study.retracted")

    async def _publish_retraction(self, retraction: StudyRetracted) -> None:
        await self.bus.publish(retraction)
        # The study's runs are over: a study sent again must not be taken for one in flight.
        uid = retraction.study.study_instance_uid
        self._in_flight.forget_study(uid)
        self._pacs_states.pop(uid, None)
        log.warning(
            "study_retracted",
            source=retraction.source,
            reason_code=retraction.reason_code,
            series=len(retraction.series_instance_uids) or "all",
            correlation_id=str(retraction.correlation_id),
        )

    async def _answer(
        self,
        request: web.Request,
        action: Callable[[], Awaitable[int]],
        body: bytes = b"",
        *,
        published: str = "study.detected",
    ) -> web.Response:
        """Run the action on an authenticated request: a body not labelled as JSON is 415 and
        one that does not parse or validate 400 (nothing published); the FHIR server or PACS
        unavailable 503."""
        refusal = media_type_refusal(request, body)
        if refusal is not None:
            log.info(
                "hook_refused",
                status=refusal.status,
                path=request.path,
                reason=f"Content-Type {request.headers.get('Content-Type', '')[:100]!r}",
            )
            return refusal
        try:
            count = await action()
        except HookRefused as error:
            log.warning("hook_refused", status=error.status, path=request.path, reason=str(error))
            return outcome_response(error.status, error.code, str(error))
        except InvalidMessage as error:
            log.info("hook_refused", status=400, path=request.path, reason=str(error))
            return outcome_response(400, "invalid", str(error))
        except TransientError as error:
            # The FHIR server or the PACS is unavailable: 503 makes the caller retry the hook.
            log.warning("hook_not_processed", path=request.path, error=str(error))
            return outcome_response(503, "transient", f"not processed, retry later: {error}")
        except PermanentError as error:
            # Not the caller's fault and not fixed by retrying (e.g. the FHIR server refused a
            # request of radmesh's): 500, logged as an error for an operator.
            log.error("hook_failed", path=request.path, error=str(error))
            return outcome_response(500, "processing", f"not processed: {error}")
        return outcome_response(200, "informational", f"{count} {published} published")

    # -- domain -----------------------------------------------------------------------------

    async def poll_updated(self, source: Source, since: str | None = None) -> int:
        """ImagingStudies matching the criteria updated since the last look (HAPI's empty POST;
        the start-up reconciliation passes its own `since`). The watermark moves only after
        the whole search succeeded, so a failed look is repeated, not skipped."""
        started = datetime.now(UTC).isoformat(timespec="milliseconds")
        resource_type, _, query = self.settings.subscription_criteria.partition("?")
        params: dict[str, Any] = dict(
            part.split("=", 1) for part in query.split("&") if "=" in part
        )
        params["_lastUpdated"] = f"ge{since or self._last_poll}"
        params["_count"] = 100
        published = 0
        async for study in self.fhir.resources(resource_type).search(**params):
            try:
                published += await self.announce(dict(study), source)
            except InvalidMessage as error:  # one unusable study must not hide the others
                _skipped(
                    "unusable",
                    str(error),
                    warning=True,
                    imaging_study=f"ImagingStudy/{study['id']}",
                )
        if since is None or since <= self._last_poll:
            self._last_poll = max(self._last_poll, started)
        return published

    def start_reconciliation(self) -> None:
        """In the background (hooks are served meanwhile): the start-up catch-up, then a sweep
        every `reconcile_interval_seconds` of what changed since the last look, so a study whose
        hook never came (a lost notification, a server that gave up retrying) is still
        analysed, and of runs claimed and never finished (stale_claims.py). Failures are logged
        and the next sweep tries again."""
        if self.settings.reconcile_hours <= 0 and self.settings.reconcile_interval_seconds <= 0:
            return

        self._reconciliation = asyncio.create_task(self._reconcile_then_sweep())
        self._reconciliation.add_done_callback(_report_failure("reconcile_failed"))

    async def _reconcile_then_sweep(self) -> int:
        published = await self.reconcile() if self.settings.reconcile_hours > 0 else 0
        interval = self.settings.reconcile_interval_seconds
        while interval > 0:
            await asyncio.sleep(interval)
            try:
                swept = await self.poll_updated("reconcile")
                swept += await self.stale_claims.sweep()
            except RadmeshError as error:  # the FHIR server away: the next sweep looks again
                log.warning("sweep_failed", error=str(error), next_in_seconds=interval)
                continue
            if swept:
                log.info("swept", published=swept)
            published += swept
        return published

    async def start_claim_watch(self) -> None:
        """In the background: at start and every `unannounced_claims_after_seconds`, announce
        the runs claimed and never announced (stale_claims.py). Failures are logged and the
        next look tries again."""
        if not self.settings.claim_runs:
            return
        self._claim_watch = Periodic(
            self.stale_claims.announce_unannounced,
            self.settings.unannounced_claims_after_seconds,
            "claim_watch_failed",
            tolerated=(RadmeshError,),
        )
        await self._claim_watch.start()

    async def stop_reconciliation(self) -> None:
        if self._reconciliation is not None and not self._reconciliation.done():
            self._reconciliation.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconciliation
        if self._claim_watch is not None:
            await self._claim_watch.stop()

    async def reconcile(self) -> int:
        """On start: announce what arrived while no subscriber was listening (the last
        `reconcile_hours`); studies already done are recognised and skipped."""
        since = datetime.now(UTC) - timedelta(hours=self.settings.reconcile_hours)
        published = await self.poll_updated("reconcile", since.isoformat(timespec="milliseconds"))
        log.info("reconciled", hours=self.settings.reconcile_hours, published=published)
        return published

    async def announce(
        self,
        imaging_study: dict[str, Any],
        source: Source,
        notes: list[RejectionNote] | None = None,
    ) -> int:
        """Publish study.detected for the models that apply and have not run; returns 0 or 1.
        Series that a rejection note in the PACS rejects (`notes`, read from the PACS when not
        given) are no model's input."""
        uid = study_instance_uid(imaging_study)
        structlog.contextvars.bind_contextvars(study_instance_uid=uid)
        if imaging_study.get("status") != "available":
            _skipped("not-available", f"status {imaging_study.get('status')}")
            return 0
        opted_out, (candidates, rejected) = await _together(
            self._opted_out(imaging_study), self._candidates(imaging_study, uid, notes)
        )
        if opted_out:
            _skipped("opted-out", "patient opted out (active Consent with deny)")
            return 0
        patient = (imaging_study.get("subject") or {}).get("reference")
        # A run another request is announcing is "in flight" only once that one got through
        # (in_flight.py): had it failed, this request claims the run and tries itself.
        await self._in_flight.settle([(uid, *_key(model), patient) for model in candidates])
        in_flight = [
            model for model in candidates if self._in_flight.get((uid, *_key(model), patient))
        ]
        # Claim the study's runs before the first await: a FHIR server may deliver two hooks
        # for one change at once (HAPI keeps delivering through a deleted Subscription until
        # its next registry refresh; the PACS event arrives within milliseconds too), and both
        # would otherwise pass the check above.
        claimed = {
            model: self._in_flight.begin((uid, *_key(model), patient))
            for model in candidates
            if model not in in_flight
        }
        pending: list[ModelEntry] = []
        published = False
        try:
            not_run = self._not_run(uid, list(claimed), patient)
            endpoints: dict[str, str] = {}
            if claimed:  # the Endpoint is read meanwhile: a run to announce needs it
                (pending, generations, moved), endpoints = await _together(
                    not_run, self._endpoint_addresses(imaging_study)
                )
            else:
                pending, generations, moved = await not_run
            if moved:  # runs on the study name another patient: retract them
                await self._publish_retraction(
                    patient_change_retraction(
                        StudyRef(
                            study_instance_uid=uid,
                            imaging_study=f"ImagingStudy/{imaging_study['id']}",
                            patient=patient,
                        )
                    )
                )

            def model_refs(models: list[ModelEntry]) -> tuple[ModelRef, ...]:
                return tuple(
                    ModelRef(id=m.id, version=m.version, generation=generations[(m.id, m.version)])
                    for m in models
                )

            if not pending:
                _skipped(
                    *_skip_reason(candidates, in_flight, rejected),
                    models=[model.id for model in candidates],
                )
                return 0
            event = StudyDetected(
                study=study_ref(imaging_study, endpoints),
                models=model_refs(pending),
                source=source,
            )
            won: list[dict[str, Any]] = []  # the claim Tasks this call created
            if self.settings.claim_runs:
                pending, won = await self._claim(imaging_study, uid, pending, event, generations)
                if not pending:
                    return 0
                event = event.model_copy(update={"models": model_refs(pending)})
            try:
                await self.bus.publish(event)
            except Exception:
                await self._release_claims(won)  # or no hook would ever start this run again
                raise
            published = True
            if state := _imaging_study_state(imaging_study):
                # the PACS's stable-study event for the same series and counts starts nothing:
                # taken at once, without a lookup (announce_pacs_study)
                self._pacs_states[uid] = (state, time.monotonic())
            await mark_announced(self.fhir, won)
        finally:
            for model, announcement in claimed.items():
                # kept while announced; released when done already, claimed elsewhere or failed
                self._in_flight.finish(announcement, announced=published and model in pending)
        log.info(
            "study_detected",
            correlation_id=str(event.correlation_id),
            source=source,
            models=[model.id for model in pending],
            generations=[generations[(model.id, model.version)] for model in pending],
        )
        return 1

    async def _claim(
        self,
        imaging_study: dict[str, Any],
        uid: str,
        models: list[ModelEntry],
        event: StudyDetected,
        generations: dict[tuple[str, str], int],
    ) -> tuple[list[ModelEntry], list[dict[str, Any]]]:
        """The models whose run this call claimed on the FHIR server, and their claim Tasks;
        a run another hook or replica claimed first is logged and left to it."""
        won_models: list[ModelEntry] = []
        won_tasks: list[dict[str, Any]] = []
        lost: list[str] = []
        unannounced: list[str] = []
        for model in models:
            created, task = await claim_run(
                self.fhir,
                imaging_study,
                uid,
                model,
                str(event.correlation_id),
                generation=generations[(model.id, model.version)],
            )
            if created:
                won_models.append(model)
                won_tasks.append(task)
            elif self._being_announced(task):
                unannounced.append(f"Task/{task['id']}")
            else:
                lost.append(f"{model.id} (Task/{task['id']})")
        if unannounced:
            await self._release_claims(won_tasks)
            raise RunNotAnnounced(
                f"the run is claimed ({', '.join(unannounced)}) by another request or replica "
                "and not announced yet: not announced, retry later (if that one fails, the "
                "retry announces it; if it stopped, the subscriber's claim watch does)"
            )
        if lost:
            _skipped("already-claimed", "run already claimed", claims=lost)
        return won_models, won_tasks

    def _being_announced(self, claim: dict[str, Any]) -> bool:
        """Whether another request or replica claimed the run moments ago and has not announced
        it yet: answered "nothing to do", this request's sender would stop retrying, and the
        other one may still fail. A claim left `ready` longer is the claim watch's to announce
        (stale_claims.py); with the watch off, it is taken as claimed."""
        window = self.settings.unannounced_claims_after_seconds
        if claim.get("status") != CLAIMED_STATUS or window <= 0:
            return False
        try:
            changed = datetime.fromisoformat(claim["meta"]["lastUpdated"])
        except (KeyError, TypeError, ValueError):
            return False
        return (datetime.now(UTC) - changed).total_seconds() < window

    async def _release_claims(self, claims: list[dict[str, Any]]) -> None:
        """Delete the claims of a run that was not announced, so the retried hook can claim it.
        A transient failure (HAPI answers a DELETE racing its own write of the Task with a
        409 version-constraint failure) is retried; an orphaned claim would block the study for
        good, so it is logged as an error naming what to do."""
        for task in (f"Task/{claim['id']}" for claim in claims):
            for attempt, pause in enumerate(_RELEASE_BACKOFF_SECONDS):
                try:
                    await self.fhir.execute(task, method="delete")
                    break
                except TransientError as error:
                    if attempt + 1 < len(_RELEASE_BACKOFF_SECONDS):
                        await asyncio.sleep(pause)
                        continue
                    self._orphaned(task, error)
                except RadmeshError as error:
                    self._orphaned(task, error)
                    break

    def _orphaned(self, task: str, error: Exception) -> None:
        log.error(
            "claim_orphaned",
            claim=task,
            error=str(error),
            action="delete the claim Task by hand, then the next hook starts the run",
        )

    async def _candidates(
        self, imaging_study: dict[str, Any], uid: str, notes: list[RejectionNote] | None
    ) -> tuple[list[ModelEntry], frozenset[str]]:
        """The models whose selectors match a series of the study that no rejection note in
        the PACS rejects, and the rejected series. The series are the ImagingStudy's; one that
        lists none is completed from QIDO-RS (a FHIR server may announce a study before its
        series are recorded, while the PACS has them), which reads the notes on the way."""
        if not imaging_study.get("series"):
            found = await study_series(self.dicomweb, uid)
            log.info(
                "series_from_pacs", reason="the ImagingStudy lists no series", series=len(found)
            )
            rejected = frozenset(i.info.series_instance_uid for i in found if i.rejected)
            summaries = [item.summary for item in found if not item.rejected]
            return self.registry.models_for(summaries), rejected
        if notes is None:
            series = await self.dicomweb.search_series(uid)
            notes = await self.dicomweb.rejection_notes(
                uid, [(info.series_instance_uid, info.modality) for info in series]
            )
        rejected = rejected_series(notes)
        summaries = series_summaries(imaging_study, excluding=rejected)
        return self.registry.models_for(summaries), rejected

    async def _not_run(
        self, uid: str, models: list[ModelEntry], patient: str | None
    ) -> tuple[list[ModelEntry], dict[tuple[str, str], int], bool]:
        """The models whose open generation has no report yet, (model, version) → that
        generation, and whether a run of another patient was passed over."""
        pending: list[ModelEntry] = []
        generations: dict[tuple[str, str], int] = {}
        moved = False
        for model in models:
            generation, passed_over = await self._open_generation(uid, model, patient)
            moved = moved or passed_over
            if not await self._already_done(uid, model, generation):
                pending.append(model)
                generations[(model.id, model.version)] = generation
        return pending, generations, moved

    async def _open_generation(
        self, uid: str, model: ModelEntry, patient: str | None
    ) -> tuple[int, bool]:
        """The generation of the model's run on the study that is not retracted: 1, or the one
        after the last generation whose claim a retraction cancelled (the PACS deleted or
        rejected the images it read) or that was claimed for another patient than the study's
        (its retraction is under way), so a study sent again after a correction is analysed
        afresh under new identifiers; and whether a claim of another patient was passed over."""
        moved = False
        for generation in range(1, MAX_RUN_GENERATIONS + 1):
            value = study_run_value(uid, model.id, model.version, generation)
            claims = (
                await self.fhir.resources("Task")
                .search(identifier=f"{ANALYSIS_CLAIM_SYSTEM}|{value}")
                .limit(1)
                .fetch()
            )
            claim = dict(claims[0]) if claims else None
            if claim is None:
                return generation, moved
            if claim.get("status") == RETRACTED_CLAIM_STATUS:
                continue
            if (claim.get("for") or {}).get("reference") != patient:
                moved = True
                continue
            return generation, moved
        raise InvalidMessage(
            f"{model.id} {model.version} was retracted {MAX_RUN_GENERATIONS} times on this "
            "study; radmesh starts no further run (look at what keeps retracting it)"
        )

    async def _already_done(self, uid: str, model: ModelEntry, generation: int) -> bool:
        identifier = business_identifier(
            "DiagnosticReport", study_run_value(uid, model.id, model.version, generation)
        )
        found = (
            await self.fhir.resources("DiagnosticReport")
            .search(identifier=f"{identifier['system']}|{identifier['value']}")
            .limit(1)
            .fetch()
        )
        return bool(found)

    async def _opted_out(self, imaging_study: dict[str, Any]) -> bool:
        patient = (imaging_study.get("subject") or {}).get("reference")
        if not patient:
            return False
        consents = (
            await self.fhir.resources("Consent").search(patient=patient, status="active").fetch()
        )
        return any(
            (dict(consent).get("provision") or {}).get("type") == "deny" for consent in consents
        )

    async def _endpoint_addresses(self, imaging_study: dict[str, Any]) -> dict[str, str]:
        addresses: dict[str, str] = {}
        for ref in imaging_study.get("endpoint", []):
            reference = ref.get("reference", "")
            if reference.startswith("Endpoint/"):
                endpoint = await self.fhir.read_resource(reference)
                if endpoint.get("address"):
                    addresses[reference] = str(endpoint["address"])
        return addresses

    async def announce_notification(self, notification: Notification) -> int:
        """Act on one POSTed notification: announce the ImagingStudies it carries or names
        (reading id-only focuses), search what changed when it names none (empty payload), and
        recover what the event counter shows was missed (`_recover`)."""
        log.info(
            "notification_received",
            kind=notification.kind,
            subscription=notification.subscription,
            events_since_start=notification.events_since_start,
            events=notification.event_count,
        )
        published = 0
        missed = self._missed_events(notification)
        if missed is not None:
            published += await self._recover(notification.subscription or "", *missed)
        if not notification.carries_events:
            return published  # handshake, heartbeat, query-status: nothing changed
        return published + await self._announce_events(notification)

    async def _announce_events(self, notification: Notification) -> int:
        published = 0
        for study in notification.imaging_studies:
            published += await self.announce(study, "fhir-rest-hook")
        for reference in notification.focus_references:
            try:
                study = imaging_study_of(dict(await self.fhir.read_resource(reference)))
            except RemoteRejected as error:
                if error.status not in (404, 410):
                    raise
                _skipped("gone", "no longer on the server", imaging_study=reference)
                continue
            published += await self.announce(study, "fhir-rest-hook")
        if not notification.imaging_studies and not notification.focus_references:
            published += await self.poll_updated("fhir-rest-hook")  # empty payload
        return published

    def _missed_events(self, notification: Notification) -> tuple[int, int] | None:
        """The event numbers (first, last) the Subscription's counter skipped since its last
        notification (logged; the caller recovers them). The first notification of a
        Subscription sets the base."""
        since, subscription = notification.events_since_start, notification.subscription
        if since is None or subscription is None:
            return None
        last = self._event_counters.get(subscription)
        self._event_counters[subscription] = max(since, last or 0)
        if last is None:
            return None
        carried = notification.event_count if notification.carries_events else 0
        expected = last + carried
        if since <= expected:
            return None
        log.warning(
            "notification_gap",
            subscription=subscription,
            missed_events=since - expected,
        )
        return last + 1, since - carried

    async def _recover(self, subscription: str, first: int, last: int) -> int:
        """Announce what the missed events `first`..`last` named: the Subscription's `$events`
        (the Backport IG's operation) where the server offers it, else a search for the
        ImagingStudies updated since the last look. A failed `$events` falls back to the
        search."""
        reference = subscription_reference(subscription)
        if reference is not None and await self._offers_events():
            try:
                replay = parse_notification(
                    await self.fhir.execute(
                        f"{reference}/$events",
                        "get",
                        params={
                            "eventsSinceNumber": first,
                            "eventsUntilNumber": last,
                            "content": "id-only",
                        },
                    )
                )
            except (RemoteRejected, InvalidMessage) as error:
                log.warning("events_operation_failed", subscription=reference, error=str(error))
            else:
                NOTIFICATION_GAPS.labels(via="$events").inc()
                log.info(
                    "notification_gap_recovered",
                    via="$events",
                    subscription=reference,
                    events=replay.event_count,
                )
                if not replay.imaging_studies and not replay.focus_references:
                    return 0  # the missed events named no ImagingStudy
                return await self._announce_events(replay)
        NOTIFICATION_GAPS.labels(via="search").inc()
        log.info("notification_gap_recovered", via="search", subscription=subscription)
        return await self.poll_updated("fhir-rest-hook")

    async def _offers_events(self) -> bool:
        """Whether the FHIR server's CapabilityStatement offers the Backport IG's `$events` on
        Subscription (read once)."""
        if self._events_offered is None:
            capability = await self.fhir.execute("metadata", "get")
            self._events_offered = offers_events_operation(capability)
            log.info("events_operation", offered=self._events_offered)
        return self._events_offered

    async def announce_hl7_order(self, order: Hl7Order) -> str:
        """An HL7 order saying the study was performed (hl7_orders.py): announce it like a
        PACS stable-study event once the PACS has it; what happened, for the ACK's MSA-3."""
        uid = order.study_instance_uid
        if uid is None:
            assert order.accession_number is not None  # read_order: one of the two is there
            uids = await self.dicomweb.search_studies(order.accession_number)
            if len(uids) > 1:
                raise InvalidMessage(
                    f"{len(uids)} studies in the PACS have this accession number; radmesh "
                    "never guesses which one was performed"
                )
            if not uids:
                return (
                    "accepted; the PACS has no study with this accession number yet (its "
                    "stable-study event starts the analysis)"
                )
            uid = uids[0]
        structlog.contextvars.bind_contextvars(study_instance_uid=uid)
        series = await self.dicomweb.search_series(uid)
        if not series:
            return (
                "accepted; the PACS does not hold the study yet (its stable-study event "
                "starts the analysis)"
            )
        event = StableStudyEvent(
            event_id=f"hl7-{hashlib.sha256(order.control_id.encode()).hexdigest()[:24]}",
            emitted_at=datetime.now(UTC),
            study_instance_uid=uid,
            accession_number=order.accession_number,
            modalities=sorted({info.modality for info in series if info.modality}),
            series=[
                StableSeries(
                    series_instance_uid=info.series_instance_uid,
                    modality=info.modality,
                    series_description=info.series_description,
                    instance_count=info.number_of_instances,
                )
                for info in series
            ],
        )
        published = await self.announce_pacs_study(event, source="hl7-order")
        if published:
            return "accepted; the study's analysis is announced"
        return "accepted; nothing to start (already analysed, in flight, or no model applies)"

    async def announce_pacs_study(
        self, event: StableStudyEvent, source: Source = "pacs-stable-study"
    ) -> int:
        """A stable study from the PACS: find (or create, DICOMcast style) its ImagingStudy."""
        uid = event.study_instance_uid  # a DICOM UID: StableStudyEvent checks it
        structlog.contextvars.bind_contextvars(study_instance_uid=uid)
        reports = await new_reports(self.dicomweb, uid, event.series, self._reports_seen)
        imaging_study = await self._announce_reports(event, reports) if reports else None
        state = _pacs_state(event)
        if self._pacs_state_seen(uid, state):
            _skipped(
                "unchanged-in-pacs",
                "the same series and instance counts (SR objects aside: radmesh's own) as an "
                "event or an announcement this subscriber already took",
            )
            return 0
        notes = await self.dicomweb.rejection_notes(
            uid, [(series.series_instance_uid, series.modality) for series in event.series]
        )
        for retraction in rejection_note_retractions(uid, notes):
            await self._publish_retraction(retraction)
        if event.modalities and set(event.modalities) <= {"SR", "KO", "PR"}:
            _skipped("radmesh-output", "only SR/KO/PR objects (radmesh's own output)")
            return 0
        if imaging_study is None:
            imaging_study = await find_or_register_imaging_study(self.fhir, self.dicomweb, event)
        announced = await self.announce(imaging_study, source, notes)
        if state and self._in_flight.holds_study(uid):  # a run of it is in flight
            self._pacs_states[uid] = (state, time.monotonic())
        return announced

    async def _announce_reports(
        self, event: StableStudyEvent, reports: list[ReportInstance]
    ) -> dict[str, Any]:
        """Publish structured-report.detected for SR documents another product stored in the
        study (third_party_reports.py; the mapper decides whether it imports them); returns the
        study's ImagingStudy. A patient who opted out gets none of them imported either."""
        imaging_study = await find_or_register_imaging_study(self.fhir, self.dicomweb, event)
        if await self._opted_out(imaging_study):
            _skipped(
                "opted-out",
                "patient opted out (active Consent with deny): other products' SRs not imported",
            )
            return imaging_study
        study = study_ref(imaging_study, await self._endpoint_addresses(imaging_study))
        for report in reports:
            await self.bus.publish(
                StructuredReportDetected(
                    study=study,
                    series_instance_uid=report.series_instance_uid,
                    sop_instance_uid=report.sop_instance_uid,
                    sop_class_uid=report.sop_class_uid,
                )
            )
            self._reports_seen.add(report.sop_instance_uid)
            log.info(
                "structured_report_detected",
                series_instance_uid=report.series_instance_uid,
                sop_instance_uid=report.sop_instance_uid,
            )
        return imaging_study

    def _pacs_state_seen(self, uid: str, state: frozenset[tuple[str, str | None, int]]) -> bool:
        """Whether, within the re-announce window, an event for this study state found a run of
        it in flight (radmesh stored its SR since, and Orthanc announced the study again), or
        this subscriber announced a run of it from an ImagingStudy recording the same series
        and instance counts (the FHIR hook came first; this is the PACS's event of the same
        study)."""
        window = self.settings.reannounce_after_seconds
        now = time.monotonic()
        for study, (_, when) in list(self._pacs_states.items()):
            if now - when > window:
                del self._pacs_states[study]
        seen = self._pacs_states.get(uid)
        return seen is not None and seen[0] == state
