"""Sending generated hostile requests to a running radmesh HTTP service, and judging the answers:
never a 5xx; every 4xx a FHIR OperationOutcome (an HTML page for a browser's request) whose
diagnostics say what was wrong."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from yarl import URL

__all__ = [
    "FHIR_JSON",
    "Answer",
    "Request",
    "Stopwatch",
    "failure_message",
    "logged",
    "problems",
    "send_all",
    "summary",
]

FHIR_JSON = "application/fhir+json"
CONCURRENCY = 8
_SHOWN = 20  # failing cases shown in an assertion message


@dataclass(frozen=True)
class Request:
    """One hostile request: what kind of input it is (`label`), what it is, and what a 400
    answering it must name (`expect`: one of these in its diagnostics; empty: any reason)."""

    label: str
    method: str
    path: str  # percent-encoded as it is sent
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    expect: tuple[str, ...] = ()
    browser: bool = False  # the client asks for HTML: a 4xx is a page saying why

    def __repr__(self) -> str:
        headers = dict(self.headers)
        return (
            f"<{self.label}: {self.method} {self.path[:100]} headers={headers!r:.300} "
            f"body={self.body[:200]!r}{'...' if len(self.body) > 200 else ''}>"
        )


@dataclass(frozen=True)
class Answer:
    request: Request
    status: int
    content_type: str
    body: bytes = field(repr=False)
    diagnostics: str = ""


async def _send(http: aiohttp.ClientSession, base_url: str, request: Request) -> Answer:
    url = URL(base_url + request.path, encoded=True)
    async with http.request(
        request.method,
        url,
        data=request.body,
        headers=dict(request.headers),
        # exactly the headers of the case: no Content-Type of aiohttp's own
        skip_auto_headers=["Content-Type"],
    ) as response:
        body = await response.read()
        return Answer(request, response.status, response.content_type, body, _diagnostics(body))


def _diagnostics(body: bytes) -> str:
    """The diagnostics of an OperationOutcome answer, or of the one a transaction-response
    Bundle carries (what the subscriber answers a notification Bundle with)."""
    try:
        answer = json.loads(body)
        if answer.get("resourceType") == "Bundle":
            answer = answer["entry"][0]["response"]["outcome"]
        return str(answer["issue"][0]["diagnostics"])
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return ""


async def send_all(
    base_url: str, requests: Sequence[Request], concurrency: int = CONCURRENCY
) -> list[Answer]:
    """Every request's answer, `concurrency` requests in flight at a time."""
    slots = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def one(request: Request) -> Answer:
            async with slots:
                return await _send(http, base_url, request)

        return list(await asyncio.gather(*(one(request) for request in requests)))


# aiohttp's HTTP parser refuses a request line or header longer than this before any
# application code runs, with its own text/plain 400 (aiohttp.http_parser, max_line_size)
AIOHTTP_MAX_LINE = 8190


def _refused_by_aiohttp(answer: Answer) -> bool:
    """A 400 of aiohttp's own for a request whose line or a header is over its limit."""
    request = answer.request
    longest = max(
        [len(request.method) + len(request.path) + 10]
        + [len(name) + len(value) + 2 for name, value in request.headers]
    )
    return (
        answer.status == 400
        and longest > AIOHTTP_MAX_LINE
        and answer.body.startswith(f"Got more than {AIOHTTP_MAX_LINE} bytes when reading".encode())
    )


def _is_error_outcome(answer: Answer) -> str | None:
    """Why a 4xx answer is not an error OperationOutcome with diagnostics, or None."""
    if answer.content_type != FHIR_JSON:
        return f"Content-Type {answer.content_type!r}, not {FHIR_JSON}"
    try:
        outcome = json.loads(answer.body)
        issue = outcome["issue"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        return f"not an OperationOutcome: {answer.body[:200]!r}"
    if outcome.get("resourceType") != "OperationOutcome" or issue.get("severity") != "error":
        return f"not an error OperationOutcome: {answer.body[:200]!r}"
    if not isinstance(issue.get("diagnostics"), str) or len(issue["diagnostics"]) < 12:
        return f"diagnostics say nothing: {issue.get('diagnostics')!r}"
    if "internal error" in issue["diagnostics"]:
        return f"diagnostics name no problem: {issue['diagnostics']!r}"
    return None


def _is_refusal_page(answer: Answer) -> str | None:
    """Why a 4xx answer to a browser is neither an HTML page saying why nor an OperationOutcome
    (what a route that is no page answers, e.g. the router's 404), or None."""
    if answer.content_type == FHIR_JSON:
        return _is_error_outcome(answer)
    if answer.content_type != "text/html":
        return f"Content-Type {answer.content_type!r}, not text/html"
    if b"<p>" not in answer.body:
        return f"the page says nothing: {answer.body[:200]!r}"
    return None


def problems(
    answers: Iterable[Answer], rules: Mapping[int, tuple[str, ...]] | None = None
) -> list[str]:
    """What is wrong with each answer that breaks the rules (empty: none does): a 5xx; a 4xx
    that is not an OperationOutcome with diagnostics (or, to a browser, a page saying why); a
    400 whose diagnostics name none of what its case expects; a 4xx of a status in `rules`
    whose diagnostics name none of what that status must say."""
    found = []
    for answer in answers:
        request = answer.request
        if answer.status >= 500:
            found.append(f"{answer.status} {answer.diagnostics[:200]!r} for {request!r}")
            continue
        if answer.status < 400:
            continue
        if _refused_by_aiohttp(answer):
            continue  # never reached radmesh (see AIOHTTP_MAX_LINE)
        wrong = _is_refusal_page(answer) if request.browser else _is_error_outcome(answer)
        expected = request.expect if answer.status == 400 else (rules or {}).get(answer.status, ())
        page = request.browser and answer.content_type == "text/html"
        said = answer.body.decode(errors="replace") if page else answer.diagnostics
        if wrong is None and expected and not any(part in said for part in expected):
            wrong = f"diagnostics {said[:300]!r} name none of {expected}"
        if wrong is not None:
            found.append(f"{answer.status}: {wrong} for {request!r}")
    return found


def summary(endpoint: str, answers: Sequence[Answer], seconds: float, waited: float) -> str:
    """One line per endpoint: cases, the time sending them took (and waiting for the last of
    them to be drawn), and the answers by status."""
    statuses = Counter(answer.status for answer in answers)
    by_status = ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items()))
    return (
        f"{endpoint}: {len(answers)} cases in {seconds:.1f} s (+{waited:.1f} s drawing them) "
        f"({by_status})"
    )


def failure_message(endpoint: str, found: Sequence[str]) -> str:
    shown = "\n".join(found[:_SHOWN])
    more = f"\n... and {len(found) - _SHOWN} more" if len(found) > _SHOWN else ""
    return f"{endpoint}: {len(found)} answers break the rules:\n{shown}{more}"


def logged(logs: Iterable[MutableMapping[str, Any]], *events: str) -> list[str]:
    """The log lines of these events (what a service logs when something in it failed that
    its answer does not show: an unrecorded AuditEvent, an exception turned into a 500)."""
    return [
        f"{line['event']}: "
        f"{str(line.get('error') or line.get('reason') or line.get('exc_info') or '')[:300]}"
        for line in logs
        if line.get("event") in events
    ]


class Stopwatch:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started
