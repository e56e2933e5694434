"""The signed acknowledgement links of critical alerts (shared/alert_links.py), answered without a
sign-in: the token is the credential, and it names the one alert and the one recipient it acts
for.

    GET  /alert-links/{token}   a small page: the alert's words, its state, and a button
    POST /alert-links/{token}   acknowledge it in the recipient's name (JSON, or the page again
                                for a browser's form post)

A forged, malformed or expired token is 403, an alert that is gone 404, a withdrawn one 409,
each saying why: in a page to a browser (a request accepting text/html), in an OperationOutcome
to any other client. The acknowledgement is the review desk's (acknowledgements.py: recorded
once, the Flag cleared) and every use of a link is audited (an AuditEvent naming the
recipient, "via signed alert link").
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web

from services.verification.acknowledgements import AlertDesk
from services.verification.audit import AuditTrail, audit_event
from services.verification.handlers import remote_error_response
from services.verification.review import TaskConflict, TaskNotFound
from services.verification.verdicts import Reviewer
from shared.alert_links import AlertLink, InvalidAlertLink, read_token
from shared.auth import Principal
from shared.errors import RemoteConflict, RemoteRejected, RemoteUnavailable
from shared.operation_outcome import outcome_response
from shared.settings import AlertLinkSettings

__all__ = ["AlertLinkPage"]

log = structlog.get_logger(__name__)
_ISSUER = "urn:radmesh:alert-link"
_REMOTE_ERRORS = (RemoteUnavailable, RemoteConflict, RemoteRejected)


def _page(title: str, body: str, status: int = 200) -> web.Response:
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;"
        "padding:0 1rem}button{font-size:1.2rem;padding:.6rem 1.2rem}"
        ".alert{border-left:6px solid #b00020;padding:.5rem 1rem;background:#fdecee}</style>"
        f"</head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return web.Response(status=status, text=document, content_type="text/html")


def _principal(link: AlertLink, display: str) -> Principal:
    return Principal(
        issuer=_ISSUER,
        subject=link.recipient,
        username=f"{display} (via signed alert link)",
        name=display,
        given_name=None,
        family_name=None,
        roles=frozenset(),
        fhir_user=link.recipient,
        client="alert-link",
    )


def _display(resource: dict[str, Any], reference: str) -> str:
    names = resource.get("name")
    if isinstance(names, str):
        return names
    for name in names or []:
        if name.get("text"):
            return str(name["text"])
        given = " ".join(name.get("given", []))
        if given or name.get("family"):
            return f"{given} {name.get('family', '')}".strip()
    return reference


def _browser(request: web.Request) -> bool:
    """Whether the client asks for HTML (a browser opening or posting the link: every browser
    navigation accepts text/html); a refusal to any other is an OperationOutcome."""
    return "text/html" in request.headers.get("Accept", "")


class AlertLinkPage:
    def __init__(self, alerts: AlertDesk, audit: AuditTrail, settings: AlertLinkSettings) -> None:
        self.alerts = alerts
        self.audit = audit
        self.settings = settings

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/alert-links/{token}", self.show),
            web.post("/alert-links/{token}", self.acknowledge),
        ]

    def _link(self, request: web.Request) -> AlertLink:
        return read_token(
            request.match_info["token"],
            self.settings.secret.get_secret_value(),
            datetime.now(UTC),
        )

    async def _alert(self, link: AlertLink) -> dict[str, Any]:
        alert = await self.alerts.alert_of(link.alert)
        if alert is None:
            raise TaskNotFound("the alert this link names is not on the FHIR server")
        recipients = {r.get("reference") for r in alert.get("recipient", [])}
        if link.recipient not in recipients:
            raise InvalidAlertLink("the link's recipient is not the alert's recipient")
        return alert

    async def show(self, request: web.Request) -> web.StreamResponse:
        try:
            link = self._link(request)
            alert = await self._alert(link)
        except (InvalidAlertLink, TaskNotFound) as error:
            return self._refusal(error, browser=_browser(request))
        except _REMOTE_ERRORS as error:
            return remote_error_response(error)
        text = next(
            (str(p["contentString"]) for p in alert.get("payload", []) if p.get("contentString")),
            "",
        )
        state = {
            "active": "Not yet acknowledged.",
            "completed": "Already acknowledged.",
        }.get(str(alert.get("status")), f"Withdrawn ({alert.get('status')}): do not act on it.")
        button = (
            '<form method="post"><button type="submit">Acknowledge</button></form>'
            if alert.get("status") == "active"
            else ""
        )
        return _page(
            "Critical AI finding",
            f'<p class="alert">{html.escape(text)}</p><p>{html.escape(state)}</p>{button}',
        )

    async def acknowledge(self, request: web.Request) -> web.StreamResponse:
        browser = _browser(request)
        try:
            link = self._link(request)
            alert = await self._alert(link)
            recipient = await self.alerts.fhir.read_resource(link.recipient)
        except (InvalidAlertLink, TaskNotFound) as error:
            return self._refusal(error, browser=browser)
        except _REMOTE_ERRORS as error:
            return remote_error_response(error)
        reviewer = Reviewer(link.recipient, _display(recipient, link.recipient))
        try:
            done = await self.alerts.acknowledge(str(alert["id"]), reviewer, datetime.now(UTC))
            response: web.StreamResponse = (
                _page("Acknowledged", f"<p>Recorded for {html.escape(reviewer.display)}.</p>")
                if browser
                else web.json_response(done)
            )
            touched = [done["communication_request"], done.get("acknowledgement") or ""]
        except TaskConflict as error:
            response = self._refusal(error, browser=browser)
            touched = [f"CommunicationRequest/{alert['id']}"]
        except _REMOTE_ERRORS as error:
            response = remote_error_response(error)
            touched = [f"CommunicationRequest/{alert['id']}"]
        await self.audit.record(
            audit_event(
                _principal(link, reviewer.display),
                "update",
                [*filter(None, touched), (alert.get("subject") or {}).get("reference") or ""],
                status=response.status,
                address=request.remote,
                description="critical alert acknowledged via signed alert link",
                practitioner=link.recipient,
            )
        )
        return response

    def _refusal(self, error: Exception, *, browser: bool) -> web.StreamResponse:
        status, code = {
            InvalidAlertLink: (403, "forbidden"),
            TaskNotFound: (404, "not-found"),
            TaskConflict: (409, "conflict"),
        }[type(error)]
        log.warning("alert_link_refused", status=status, reason=str(error))
        if browser:
            return _page(
                "This link cannot acknowledge the alert",
                f"<p>{html.escape(str(error))}</p>",
                status,
            )
        return outcome_response(status, code, str(error))
