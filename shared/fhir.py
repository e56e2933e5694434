"""The FHIR R4 client every service keeps for its lifetime (fhirpy's AsyncFHIRClient).

fhirpy opens a new HTTP session per request and folds every non-2xx answer into one exception
type, which loses the difference between "retry later" (5xx) and "never" (4xx). `FhirClient`
keeps one aiohttp session, sends the bearer token from settings, and raises radmesh's errors
with the server's OperationOutcome attached (`RemoteUnavailable` / `RemoteRejected`), so the bus
can decide retry or dead letter. It adds what radmesh writes with: `transaction` (one atomic
Bundle) and `conditional_create_entry` (an entry with `ifNoneExist` on a business identifier,
so a repeated write returns the existing resource instead of creating a second one).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import structlog
from fhirpy import AsyncFHIRClient
from fhirpy.base.utils import AttrDict

from shared.errors import RemoteUnavailable, TransientError, remote_error_for
from shared.narrative import narrated, with_narrative
from shared.settings import FhirSettings
from shared.smart_auth import SmartBackendAuth
from shared.telemetry import http_client_tracing
from shared.tls import Trust

__all__ = [
    "FhirClient",
    "conditional_create_entry",
    "conditional_entry",
    "reference_of",
    "retried_at_start",
    "transaction_bundle",
]

FHIR_JSON = "application/fhir+json"
T = TypeVar("T")
log = structlog.get_logger(__name__)


class FhirClient(AsyncFHIRClient):
    """fhirpy's async client on one long-lived session, raising radmesh's error tree."""

    def __init__(self, settings: FhirSettings) -> None:
        token = settings.bearer_token.get_secret_value() if settings.bearer_token else None
        super().__init__(
            settings.base_url,
            authorization=f"Bearer {token}" if token else None,
            aiohttp_config={"timeout": aiohttp.ClientTimeout(total=settings.timeout_seconds)},
        )
        self._trust = Trust(settings.ca_bundle)
        self._session: aiohttp.ClientSession | None = None
        # SMART Backend Services: a token per call from the client's signed assertion.
        self._smart = (
            SmartBackendAuth(
                settings.smart, settings.base_url, settings.timeout_seconds, self._trust
            )
            if settings.smart is not None
            else None
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._smart is not None:
            await self._smart.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=self._trust.connector(),
                trace_configs=http_client_tracing("fhir"),
            )
        return self._session

    async def _do_request(
        self,
        method: str,
        path: str,
        data: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        extra_headers: dict[str, str] | None = None,
        *,
        returning_status: bool = False,
    ) -> Any:
        headers = {**self._build_request_headers(), **(extra_headers or {})}
        if data is not None:
            headers["Content-Type"] = FHIR_JSON
            data = narrated(data)  # what the resource says now, in words (shared.narrative)
        url = self._build_request_url(path, params)
        for attempt in (1, 2):
            if self._smart is not None:
                headers["Authorization"] = f"Bearer {await self._smart.token()}"
            text, status = await self._exchange(method, path, url, data, headers)
            if status == 401 and self._smart is not None and attempt == 1:
                self._smart.forget()  # revoked or expired early: one more try, a new token
                continue
            break
        if 200 <= status < 300 or status == 304:
            body = json.loads(text, object_hook=AttrDict) if text else None
            return (body, status) if returning_status else body
        payload: Any
        try:
            payload = json.loads(text)
        except json.JSONDecodeError:
            payload = text[:2000]
        raise remote_error_for(
            status,
            f"FHIR {method.upper()} {path}: {_diagnostics(payload)}",
            url=url,
            payload=payload,
        )

    async def _exchange(
        self,
        method: str,
        path: str,
        url: str,
        data: dict[str, Any] | None,
        headers: dict[str, str],
    ) -> tuple[str, int]:
        """One HTTP exchange: the answer's text and status."""
        try:
            async with self._http().request(
                method,
                url,
                data=json.dumps(data) if data is not None else None,
                headers=headers,
                **self.aiohttp_config,
            ) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientConnectionError, TimeoutError) as error:
            raise RemoteUnavailable(
                f"FHIR {method.upper()} {path} failed: {error!r}", url=url, status=None
            ) from error
        return text, status

    async def create_resource(
        self, resource: dict[str, Any], if_none_exist: str | None = None
    ) -> dict[str, Any]:
        """POST a resource; with `if_none_exist` (a search query) the server returns the existing
        match instead of creating a second one."""
        headers = {"If-None-Exist": if_none_exist} if if_none_exist else None
        created: dict[str, Any] = await self._do_request(
            "post", resource["resourceType"], data=resource, extra_headers=headers
        )
        return created

    async def create_once(
        self, resource: dict[str, Any], if_none_exist: str
    ) -> tuple[dict[str, Any], bool]:
        """Conditional create that says who won: (the resource, True) when this call created it
        (201), (the existing one, False) when the search found one (200). Two concurrent calls
        never both win on a server that keeps conditional URLs unique (HAPI: the loser gets 409,
        a RemoteConflict to retry, and then sees the winner's)."""
        body, status = await self._do_request(
            "post",
            resource["resourceType"],
            data=resource,
            extra_headers={"If-None-Exist": if_none_exist},
            returning_status=True,
        )
        return dict(body), status == 201

    async def update_resource(self, resource: dict[str, Any]) -> dict[str, Any]:
        """PUT a resource read earlier, only if nobody changed it since (If-Match on its
        meta.versionId; a concurrent change is a 412, a RemoteConflict)."""
        reference = f"{resource['resourceType']}/{resource['id']}"
        version = (resource.get("meta") or {}).get("versionId")
        headers = {"If-Match": f'W/"{version}"'} if version else None
        updated: dict[str, Any] = await self._do_request(
            "put", reference, data=resource, extra_headers=headers
        )
        return updated

    async def next_page(self, bundle: dict[str, Any]) -> dict[str, Any] | None:
        """The next page of a searchset Bundle (its `next` link, on this server only), or None
        on the last page. Servers cap `_count` (HAPI: 50 per page), so a search that wants more
        follows these."""
        link = next(
            (str(li["url"]) for li in bundle.get("link", []) if li.get("relation") == "next"),
            None,
        )
        if link is None:
            return None
        page: dict[str, Any] = await self._do_request("get", link)
        return page

    async def read_resource(self, reference: str) -> dict[str, Any]:
        """GET one resource by 'Type/id'."""
        found: dict[str, Any] = await self._do_request("get", reference)
        return found

    async def read_report_with_results(
        self, reference: str
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """A DiagnosticReport and its `result` Observations, in the report's order (one read,
        one search)."""
        report = dict(await self.read_resource(reference))
        ids = [
            str(ref["reference"]).removeprefix("Observation/")
            for ref in report.get("result", [])
            if str(ref.get("reference", "")).startswith("Observation/")
        ]
        found: dict[str, dict[str, Any]] = {}
        if ids:
            bundle = await self.execute(
                "Observation", "get", params={"_id": ",".join(ids), "_count": len(ids)}
            )
            found = {
                str(e["resource"]["id"]): dict(e["resource"])
                for e in bundle.get("entry", [])
                if "resource" in e
            }
        return report, [found[i] for i in ids if i in found]

    async def transaction(
        self,
        bundle: dict[str, Any],
        *,
        replace_security_labels: bool = False,
        representation: bool = False,
    ) -> dict[str, Any]:
        """POST a transaction Bundle to the base URL; returns the transaction-response Bundle.

        FHIR lets a server carry security labels forward across an update (HAPI does); with
        `replace_security_labels` the updates' `meta.security` replaces the previous one
        (HAPI's `X-Meta-Snapshot-Mode: SECURITY_LABEL`), as relabelling an AI result needs.
        With `representation` each entry of the response carries the resource as written
        (`Prefer: return=representation`; shared/provenance.py reads its Provenance)."""
        headers: dict[str, str] = {}
        if replace_security_labels:
            headers["X-Meta-Snapshot-Mode"] = "SECURITY_LABEL"
        if representation:
            headers["Prefer"] = "return=representation"
        response: dict[str, Any] = await self._do_request(
            "post", "", data=bundle, extra_headers=headers or None
        )
        return response


_PROBLEM_SEVERITIES = ("fatal", "error")
_MAX_DIAGNOSTICS = 2000


def _issue_text(issue: dict[str, Any]) -> str:
    text = str(
        issue.get("diagnostics") or issue.get("details", {}).get("text") or issue.get("code")
    )
    where = issue.get("expression") or issue.get("location")
    return f"{text} (at {', '.join(where)})" if where else text


def _diagnostics(payload: Any) -> str:
    """The human part of an OperationOutcome (or the raw text): its errors when it has any (a
    validating server such as HAPI lists every warning beside the one error that refused the
    request), each once, with where it is."""
    if isinstance(payload, dict) and payload.get("resourceType") == "OperationOutcome":
        issues = [issue for issue in payload.get("issue", []) if isinstance(issue, dict)]
        problems = [issue for issue in issues if issue.get("severity") in _PROBLEM_SEVERITIES]
        texts = list(dict.fromkeys(_issue_text(issue) for issue in problems or issues))
        return "; ".join(texts)[:_MAX_DIAGNOSTICS]
    return str(payload)[:500]


def conditional_entry(
    resource: dict[str, Any], full_url: str, if_none_exist: str
) -> dict[str, Any]:
    """A transaction entry that creates `resource` unless the search `if_none_exist` finds one."""
    return {
        "fullUrl": full_url,
        "resource": resource,
        "request": {
            "method": "POST",
            "url": resource["resourceType"],
            "ifNoneExist": if_none_exist,
        },
    }


def conditional_create_entry(
    resource: dict[str, Any], full_url: str, identifier_system: str, identifier_value: str
) -> dict[str, Any]:
    """A transaction entry that creates `resource` unless one with this identifier exists."""
    return conditional_entry(
        resource, full_url, f"identifier={identifier_system}|{identifier_value}"
    )


def versioned_update_entry(resource: dict[str, Any], base_url: str) -> dict[str, Any]:
    """A transaction PUT of a resource read earlier, guarded by the version it was read at
    (`ifMatch`; a concurrent change fails the transaction with 412). meta.versionId and
    lastUpdated are not sent back; the rest of meta (security labels, tags) is. The fullUrl is
    the resource's absolute URL: a transaction entry needs one, and references inside the
    Bundle resolve against it. An Observation's or DiagnosticReport's narrative is made again
    from what it now says (shared.narrative)."""
    resource = with_narrative(resource)
    meta = {
        k: v
        for k, v in (resource.get("meta") or {}).items()
        if k not in ("versionId", "lastUpdated")
    }
    version = (resource.get("meta") or {}).get("versionId")
    body = {key: value for key, value in resource.items() if key != "meta"}
    if meta:
        body["meta"] = meta
    reference = f"{resource['resourceType']}/{resource['id']}"
    request: dict[str, Any] = {"method": "PUT", "url": reference}
    if version is not None:
        request["ifMatch"] = f'W/"{version}"'
    return {"fullUrl": f"{base_url.rstrip('/')}/{reference}", "resource": body, "request": request}


def transaction_bundle(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def reference_of(response_entry: dict[str, Any]) -> str:
    """'Type/id' of a transaction-response entry (from its Location, without the history part)."""
    location = str(response_entry["response"]["location"])
    parts = location.split("/_history/", maxsplit=1)[0].rstrip("/").split("/")
    return f"{parts[-2]}/{parts[-1]}"


async def retried_at_start(
    call: Callable[[], Awaitable[T]], *, seconds: float, retry_event: str, failed_event: str
) -> T:
    """A service's start-up call to the FHIR server, tried again after a transient failure (the
    server down, or a just-booted HAPI too slow to answer; the call must be safe to repeat)
    with a doubling delay (1 s up to 15 s), each logged as `retry_event`, for up to `seconds`;
    then `failed_event` is logged and the error raised: the service exits, naming it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    delay, attempt = 1.0, 1
    while True:
        try:
            return await call()
        except TransientError as error:
            if loop.time() + delay > deadline:
                log.error(
                    failed_event, attempts=attempt, error=str(error), gave_up_after_seconds=seconds
                )
                raise
            log.warning(retry_event, attempt=attempt, error=str(error), retry_in_seconds=delay)
            await asyncio.sleep(delay)
            delay, attempt = min(2 * delay, 15.0), attempt + 1
