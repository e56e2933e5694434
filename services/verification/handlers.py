"""results.posted → a verification Task; HTTP review requests → the review desk → events.

The review API. Every route under /tasks, /reports and /ops needs an OpenID Connect access
token (`Authorization: Bearer <JWT>`, see shared/auth.py), and a role:

    GET  /tasks                 radiologist  open Tasks with their report's findings and links
    GET  /tasks/{id}            radiologist  one Task (open or decided) with its findings
    GET  /tasks/{id}/images/{series}/{sop}
                                radiologist  a key image (PNG, windowed) a finding lies on
    POST /tasks/{id}/accept     radiologist  {}
    POST /tasks/{id}/reject     radiologist  {"reason": <code>, "note": <text>}
    POST /tasks/{id}/amend      radiologist  {"observation": "Observation/<id>", "value": <n>,
                                              "note": <text>}
    GET  /reports/{id}          clinician or radiologist when final; radiologist only while
                                preliminary (AI results nobody verified yet)
    GET  /ops/worklist          operator     open Tasks per priority and the oldest; no patient data
    GET  /alerts                clinician or radiologist  open critical alerts, newest first
    POST /alerts/{id}/acknowledge
                                clinician or radiologist  {} — the alert (CommunicationRequest)
                                was received; a second acknowledgement answers the first

Reject reason codes: false-positive, wrong-location, poor-image-quality, other (needs a note).
The verifier is always the signed-in user; a body naming another verifier is a 400.

Every error answer is a FHIR OperationOutcome: 400 bad body, 401 no or bad token, 403 missing
role, 404 unknown Task, 409 Task already decided or changed concurrently, 415 a body not
labelled as JSON in UTF-8, 502/503 the FHIR server (or the identity provider) refused/is down.
Bodies are read by `shared.json_input.read_json` (UTF-8, bounded nesting, no lone surrogates,
no numbers out of range): hostile input is a 400.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web

from services.verification.acknowledgements import AlertDesk
from services.verification.audit import AuditTrail, Interaction, audit_event
from services.verification.review import ReviewDesk, TaskConflict, TaskNotFound
from services.verification.reviewers import ReviewerDirectory, UnknownReviewer
from services.verification.verdicts import (
    InvalidVerdict,
    Reviewer,
    Verdict,
    VerdictKind,
    parse_verdict,
)
from shared.auth import CLINICIAN, OPERATOR, RADIOLOGIST, Forbidden, Principal, require_role
from shared.errors import InvalidMessage, RemoteConflict, RemoteRejected, RemoteUnavailable
from shared.fhir import FhirClient, reference_of, transaction_bundle
from shared.json_input import read_json
from shared.messages import Event, ResultsPosted
from shared.operation_outcome import media_type_refusal, outcome_response
from shared.verification_task import verification_task_entry

__all__ = ["PROTECTED_PATHS", "CreateVerificationTask", "ReviewApi"]

PROTECTED_PATHS = ("/tasks", "/reports", "/ops", "/alerts")

log = structlog.get_logger(__name__)


class CreateVerificationTask:
    """Handler of results.posted: one verification Task per report (a repeat creates none). The
    mapper writes it with the results (the event names it: nothing to write here); a run redriven
    from the record gets it here (shared/verification_task.py)."""

    def __init__(self, fhir: FhirClient) -> None:
        self.fhir = fhir

    async def __call__(self, event: ResultsPosted) -> Sequence[Event]:
        if event.rollout_mode == "shadow":
            log.info("verification_skipped", reason="shadow rollout: nothing clinical is written")
            return []
        if event.verification_task is not None:
            log.info(
                "verification_task_ready",
                task=event.verification_task,
                created=False,
                written_by="mapper, with the results",
            )
            return []
        entry = verification_task_entry(event, datetime.now(UTC))
        response = await self.fhir.transaction(transaction_bundle([entry]))
        answer = response["entry"][0]
        log.info(
            "verification_task_ready",
            task=reference_of(answer),
            created=str(answer["response"]["status"]).startswith("201"),
            priority=entry["resource"]["priority"],
        )
        return []


class ReviewApi:
    """The HTTP routes of the review desk and of alert acknowledgement; every read of results,
    every verdict and every acknowledgement is audited."""

    def __init__(
        self,
        desk: ReviewDesk,
        reviewers: ReviewerDirectory,
        audit: AuditTrail,
        alerts: AlertDesk | None = None,
    ) -> None:
        self.desk = desk
        self.reviewers = reviewers
        self.audit = audit
        self.alerts = alerts or AlertDesk(desk.fhir, desk.fhir_base_url)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/tasks", self.list_tasks),
            web.get("/tasks/{task_id}", self.show_task),
            web.get("/tasks/{task_id}/images/{series}/{sop}", self.key_image),
            web.post("/tasks/{task_id}/accept", self.accept),
            web.post("/tasks/{task_id}/reject", self.reject),
            web.post("/tasks/{task_id}/amend", self.amend),
            web.get("/reports/{report_id}", self.show_report),
            web.get("/ops/worklist", self.worklist_counts),
            web.get("/alerts", self.list_alerts),
            web.post("/alerts/{request_id}/acknowledge", self.acknowledge),
        ]

    async def _audited(
        self,
        request: web.Request,
        principal: Principal,
        interaction: Interaction,
        work: Awaitable[dict[str, Any]],
        entities: Callable[[dict[str, Any]], list[str]],
        *,
        requested: list[str],
        practitioner: str | None = None,
    ) -> web.StreamResponse:
        """Do `work`, answer its JSON (or why it failed), and record the AuditEvent: the
        resources it returned or changed, else the ones asked for."""
        try:
            body = await work
            response: web.StreamResponse = web.json_response(body)
            touched = entities(body)
        except _DESK_ERRORS as error:
            response = _error_response(error)
            touched = requested
        await self.audit.record(
            audit_event(
                principal,
                interaction,
                touched,
                status=response.status,
                address=request.remote,
                query=request.path_qs if interaction == "search-type" else None,
                practitioner=practitioner,
            )
        )
        return response

    async def list_tasks(self, request: web.Request) -> web.StreamResponse:
        principal = require_role(request, RADIOLOGIST)
        return await self._audited(
            request,
            principal,
            "search-type",
            self.desk.open_tasks(),
            lambda body: [ref for item in body["tasks"] for ref in _item_entities(item)],
            requested=[],
        )

    async def show_task(self, request: web.Request) -> web.StreamResponse:
        principal = require_role(request, RADIOLOGIST)
        task_id = request.match_info["task_id"]
        return await self._audited(
            request,
            principal,
            "read",
            self.desk.task_view(task_id),
            _item_entities,
            requested=[f"Task/{task_id}"],
        )

    async def key_image(self, request: web.Request) -> web.StreamResponse:
        principal = require_role(request, RADIOLOGIST)
        match = request.match_info
        task = f"Task/{match['task_id']}"
        try:
            image = await self.desk.key_image(match["task_id"], match["series"], match["sop"])
            response: web.StreamResponse = web.Response(
                body=image,
                content_type="image/png",
                headers={"Cache-Control": "private, max-age=300"},
            )
        except _DESK_ERRORS as error:
            response = _error_response(error)
        await self.audit.record(
            audit_event(
                principal,
                "read",
                [task],
                status=response.status,
                address=request.remote,
                description=f"key image {match['sop']} of series {match['series']}",
            )
        )
        return response

    async def show_report(self, request: web.Request) -> web.StreamResponse:
        principal = require_role(request, RADIOLOGIST, CLINICIAN)
        report_id = request.match_info["report_id"]

        async def read() -> dict[str, Any]:
            view = await self.desk.report_view(report_id)
            preliminary = view["status"] in ("registered", "partial", "preliminary")
            if preliminary and not principal.has_any([RADIOLOGIST]):
                raise Forbidden(
                    f"{view['diagnostic_report']} is {view['status']}: AI results nobody has "
                    "verified yet are shown to radiologists only"
                )
            return view

        try:
            return await self._audited(
                request,
                principal,
                "read",
                read(),
                lambda view: [view["diagnostic_report"], view.get("patient") or ""],
                requested=[f"DiagnosticReport/{report_id}"],
            )
        except Forbidden:
            await self.audit.record(
                audit_event(
                    principal,
                    "read",
                    [f"DiagnosticReport/{report_id}"],
                    status=403,
                    address=request.remote,
                    description="refused: preliminary results are for radiologists",
                )
            )
            raise

    async def list_alerts(self, request: web.Request) -> web.StreamResponse:
        principal = require_role(request, CLINICIAN, RADIOLOGIST)
        return await self._audited(
            request,
            principal,
            "search-type",
            self.alerts.open_alerts(),
            lambda body: [
                ref
                for item in body["alerts"]
                for ref in (item["communication_request"], item.get("patient") or "")
            ],
            requested=[],
        )

    async def acknowledge(self, request: web.Request) -> web.StreamResponse:
        principal = require_role(request, CLINICIAN, RADIOLOGIST)
        request_id = request.match_info["request_id"]
        reviewer = await self._reviewer(principal)
        if isinstance(reviewer, web.StreamResponse):
            return reviewer
        return await self._audited(
            request,
            principal,
            "update",
            self.alerts.acknowledge(request_id, reviewer, datetime.now(UTC)),
            lambda done: [
                done["communication_request"],
                done.get("acknowledgement") or "",
                done.get("patient") or "",
            ],
            requested=[f"CommunicationRequest/{request_id}"],
            practitioner=reviewer.reference,
        )

    async def _reviewer(self, principal: Principal) -> Reviewer | web.StreamResponse:
        """The signed-in user's Practitioner (the one a decision is recorded in the name of),
        or the answer saying why there is none."""
        try:
            return await self.reviewers.reviewer(principal)
        except UnknownReviewer as error:
            raise Forbidden(str(error)) from error
        except _DESK_ERRORS as error:
            return _error_response(error)

    async def worklist_counts(self, request: web.Request) -> web.StreamResponse:
        require_role(request, OPERATOR)  # no patient data: nothing to audit
        return await _answer(self.desk.open_task_counts())

    async def accept(self, request: web.Request) -> web.StreamResponse:
        return await self._decide(request, "accepted")

    async def reject(self, request: web.Request) -> web.StreamResponse:
        return await self._decide(request, "rejected")

    async def amend(self, request: web.Request) -> web.StreamResponse:
        return await self._decide(request, "amended")

    async def _decide(self, request: web.Request, kind: VerdictKind) -> web.StreamResponse:
        principal = require_role(request, RADIOLOGIST)
        task_id = request.match_info["task_id"]
        reviewer = await self._reviewer(principal)
        if isinstance(reviewer, web.StreamResponse):
            return reviewer
        verdict = await _read_verdict(request, kind, reviewer)
        if isinstance(verdict, web.Response):
            return verdict
        return await self._audited(
            request,
            principal,
            "update",
            self.desk.decide(task_id, verdict),
            lambda done: [
                done["task"],
                done["diagnostic_report"],
                *done["observations"],
                done["provenance"],
            ],
            requested=[f"Task/{task_id}"],
            practitioner=reviewer.reference,
        )


def _item_entities(item: dict[str, Any]) -> list[str]:
    """The resources one worklist item shows: its Task, report and patient."""
    return [item["task"], item["diagnostic_report"]["reference"] or "", item.get("patient") or ""]


_DESK_ERRORS = (
    InvalidVerdict,
    TaskNotFound,
    TaskConflict,
    RemoteUnavailable,
    RemoteConflict,
    RemoteRejected,
)


def _error_response(error: Exception) -> web.StreamResponse:
    """What the caller is told when the desk could not do it; nothing was changed."""
    if isinstance(error, InvalidVerdict):
        return outcome_response(400, "invalid", str(error))
    if isinstance(error, TaskNotFound):
        return outcome_response(404, "not-found", str(error))
    if isinstance(error, TaskConflict):
        return outcome_response(409, "conflict", str(error))
    if isinstance(error, RemoteUnavailable | RemoteConflict | RemoteRejected):
        return remote_error_response(error)
    raise error


async def _answer(work: Awaitable[dict[str, Any]]) -> web.StreamResponse:
    """The JSON of what the desk did or read, or the OperationOutcome of why it could not."""
    try:
        return web.json_response(await work)
    except _DESK_ERRORS as error:
        return _error_response(error)


async def _read_verdict(
    request: web.Request, kind: VerdictKind, reviewer: Reviewer
) -> Verdict | web.Response:
    """The verdict in the request body, or the answer refusing the body: 415 when it is not
    labelled as JSON in UTF-8, 400 when it is not JSON (or hostile JSON) or not a verdict.
    An empty body is the accept's `{}`."""
    body = await request.read()
    refusal = media_type_refusal(request, body)
    if refusal is not None:
        return refusal
    try:
        value = read_json(body, not_json="the body is not valid JSON") if body.strip() else {}
        return parse_verdict(value, kind, reviewer)
    except (InvalidMessage, InvalidVerdict) as error:
        return outcome_response(400, "invalid", str(error))


def remote_error_response(
    error: RemoteUnavailable | RemoteConflict | RemoteRejected,
) -> web.StreamResponse:
    """The FHIR server failed us: 503 (retry later) or 502 (it refused); nothing was changed."""
    log.warning("fhir_request_failed", error=str(error), status=error.status)
    if isinstance(error, RemoteUnavailable | RemoteConflict):
        return outcome_response(
            503,
            "transient",
            "the FHIR server is unavailable; nothing was changed, try again later",
            headers={"Retry-After": "5"},
        )
    return outcome_response(
        502, "exception", f"the FHIR server refused the request; nothing was changed: {error}"
    )
