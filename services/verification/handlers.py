"""results.posted → a verification Task; HTTP review requests → the review desk → events.

The review API (all routes under /tasks need `Authorization: Bearer <RADMESH_VERIFICATION_API_TOKEN>`):

    GET  /tasks                 open Tasks with their report's findings and links
    POST /tasks/{id}/accept     {"verifier": "Practitioner/<id>"}
    POST /tasks/{id}/reject     {"verifier": "Practitioner/<id>", "reason": "..."}

Every error answer is a FHIR OperationOutcome: 400 bad body, 401 no or wrong token, 404 unknown
Task, 409 Task already decided or changed concurrently, 415 a body not labelled as JSON in UTF-8,
502/503 the FHIR server refused/is down. Bodies are read by `shared.json_input.read_json`
(UTF-8, bounded nesting, no lone surrogates, no numbers out of range): hostile input is a 400.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from datetime import UTC, datetime

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from services.verification.review import ReviewDesk, TaskConflict, TaskNotFound
from services.verification.tasks import verification_task_entry
from services.verification.verdicts import InvalidVerdict, Verdict, parse_verdict
from shared.errors import InvalidMessage, RemoteConflict, RemoteRejected, RemoteUnavailable
from shared.fhir import FhirClient, reference_of, transaction_bundle
from shared.json_input import read_json
from shared.messages import Event, ResultsPosted
from shared.operation_outcome import media_type_refusal, outcome_response

__all__ = ["CreateVerificationTask", "ReviewApi", "bearer_token_middleware"]

log = structlog.get_logger(__name__)


class CreateVerificationTask:
    """Handler of results.posted: one verification Task per report (a repeat creates none)."""

    def __init__(self, fhir: FhirClient) -> None:
        self.fhir = fhir

    async def __call__(self, event: ResultsPosted) -> Sequence[Event]:
        if event.rollout_mode == "shadow":
            log.info("verification_skipped", reason="shadow rollout: nothing clinical is written")
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


def bearer_token_middleware(token: str, prefix: str = "/tasks") -> Middleware:
    """401 with an OperationOutcome unless the request under `prefix` carries the bearer token."""
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def check_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == prefix or request.path.startswith(f"{prefix}/"):
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return outcome_response(
                    401,
                    "login",
                    "a valid bearer token is required (Authorization: Bearer <token>)",
                    headers={"WWW-Authenticate": 'Bearer realm="radmesh-verification"'},
                )
        return await handler(request)

    return check_token


class ReviewApi:
    """The HTTP routes of the review desk."""

    def __init__(self, desk: ReviewDesk) -> None:
        self.desk = desk

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/tasks", self.list_tasks),
            web.post("/tasks/{task_id}/accept", self.accept),
            web.post("/tasks/{task_id}/reject", self.reject),
        ]

    async def list_tasks(self, _request: web.Request) -> web.StreamResponse:
        try:
            return web.json_response(await self.desk.open_tasks())
        except (RemoteUnavailable, RemoteConflict, RemoteRejected) as error:
            return _remote_error_response(error)

    async def accept(self, request: web.Request) -> web.StreamResponse:
        return await self._decide(request, accepted=True)

    async def reject(self, request: web.Request) -> web.StreamResponse:
        return await self._decide(request, accepted=False)

    async def _decide(self, request: web.Request, *, accepted: bool) -> web.StreamResponse:
        task_id = request.match_info["task_id"]
        verdict = await _read_verdict(request, accepted=accepted)
        if isinstance(verdict, web.Response):
            return verdict
        try:
            return web.json_response(await self.desk.decide(task_id, verdict))
        except InvalidVerdict as error:
            return outcome_response(400, "invalid", str(error))
        except TaskNotFound as error:
            return outcome_response(404, "not-found", str(error))
        except TaskConflict as error:
            return outcome_response(409, "conflict", str(error))
        except (RemoteUnavailable, RemoteConflict, RemoteRejected) as error:
            return _remote_error_response(error)


async def _read_verdict(request: web.Request, *, accepted: bool) -> Verdict | web.Response:
    """The verdict in the request body, or the answer refusing the body: 415 when it is not
    labelled as JSON in UTF-8, 400 when it is not JSON (or hostile JSON) or not a verdict."""
    body = await request.read()
    refusal = media_type_refusal(request, body)
    if refusal is not None:
        return refusal
    try:
        value = read_json(body, not_json="the body is not valid JSON")
        return parse_verdict(value, accepted=accepted)
    except (InvalidMessage, InvalidVerdict) as error:
        return outcome_response(400, "invalid", str(error))


def _remote_error_response(
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
