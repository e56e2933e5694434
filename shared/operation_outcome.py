"""FHIR OperationOutcome answers for radmesh's HTTP endpoints (4xx that say what was wrong)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

__all__ = ["operation_outcome", "outcome_response"]

FHIR_JSON = "application/fhir+json"


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
