"""FHIR OperationOutcome answers for radmesh's HTTP endpoints (4xx that say what was wrong),
and `media_type_refusal`: a non-empty body must be labelled as JSON, in UTF-8 (415 otherwise).
What the JSON itself may be is `shared.json_input.read_json`.

Body size is bounded before any of this: aiohttp refuses a body over the application's
`client_max_size` (shared/runtime.py) with a 413 OperationOutcome.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

__all__ = [
    "ACCEPTED_MEDIA_TYPES",
    "UNLABELLED_MEDIA_TYPES",
    "media_type_refusal",
    "operation_outcome",
    "outcome_response",
    "transaction_response",
]

FHIR_JSON = "application/fhir+json"

# What a JSON body may be labelled: JSON, FHIR JSON (R4), and FHIR JSON's DSTU2 name that
# servers still send.
ACCEPTED_MEDIA_TYPES = frozenset({"application/json", FHIR_JSON, "application/json+fhir"})
# Labels that claim no particular format, taken as JSON too: what HTTP clients send when the
# caller does not say (no header; aiohttp's and requests' default for bytes, application/
# octet-stream; their default for str, text/plain). A label that names another format
# (image/png, application/xml, a form, ...) is refused with 415.
UNLABELLED_MEDIA_TYPES = frozenset({"application/octet-stream", "text/plain"})
_UTF8_NAMES = frozenset({"utf-8", "utf8"})


def operation_outcome(code: str, diagnostics: str, severity: str = "error") -> dict[str, Any]:
    """An OperationOutcome with one issue (`code` from the FHIR issue-type value set)."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}],
    }


def outcome_response(
    status: int, code: str, diagnostics: str, headers: dict[str, str] | None = None
) -> web.Response:
    """An HTTP answer carrying an OperationOutcome."""
    return web.json_response(
        operation_outcome(code, diagnostics, "information" if status < 400 else "error"),
        status=status,
        content_type=FHIR_JSON,
        headers=headers,
    )


def transaction_response(answer: web.Response) -> web.Response:
    """A 2xx OperationOutcome answer as a transaction-response Bundle whose one entry carries it
    (`response.outcome`): for a caller that POSTed a Bundle as a FHIR transaction."""
    outcome = json.loads(answer.body) if isinstance(answer.body, bytes) else {}
    status = f"{answer.status} {answer.reason}"
    return web.json_response(
        {
            "resourceType": "Bundle",
            "type": "transaction-response",
            "entry": [{"response": {"status": status, "outcome": outcome}}],
        },
        status=answer.status,
        content_type=FHIR_JSON,
    )


# -- request bodies ---------------------------------------------------------------------------


def media_type_refusal(request: web.Request, body: bytes) -> web.Response | None:
    """A 415 OperationOutcome when a non-empty body is not labelled as JSON in UTF-8, else None.

    An empty body has no format to check (HAPI's rest-hook without payload POSTs nothing,
    labelled application/x-www-form-urlencoded)."""
    if not body:
        return None
    raw = request.headers.get("Content-Type")
    if raw is None:
        return None
    media_type = request.content_type  # lower-cased; application/octet-stream if unparseable
    if media_type == "application/octet-stream" and not raw.strip().lower().startswith(
        "application/octet-stream"
    ):
        return _unsupported(f"Content-Type {raw[:100]!r} is not a media type")
    if media_type not in ACCEPTED_MEDIA_TYPES | UNLABELLED_MEDIA_TYPES:
        return _unsupported(f"Content-Type {media_type[:100]!r} is not JSON")
    charset = request.charset
    if charset is not None and charset.strip().lower() not in _UTF8_NAMES:
        return _unsupported(f"charset {charset[:40]!r} is not supported: JSON bodies are UTF-8")
    return None


def _unsupported(problem: str) -> web.Response:
    accepted = ", ".join(sorted(ACCEPTED_MEDIA_TYPES))
    return outcome_response(
        415,
        "not-supported",
        f"{problem}; send the body as {accepted} (UTF-8)",
        headers={"Accept": accepted},
    )
