"""The three FHIR validators the end-to-end suite runs on radmesh's writes (tests/fhir_validators.py)
tell a valid resource from an invalid one, each on its own: a test of the tests' referees."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Infrastructure
from tests.fhir_validators import Findings, fhir_js, fhir_resources, hapi_validate

pytestmark = pytest.mark.integration

VALID: dict[str, Any] = {
    "resourceType": "Observation",
    "status": "preliminary",
    "code": {"coding": [{"system": "http://loinc.org", "code": "24627-2"}], "text": "CT Chest"},
    "valueBoolean": True,
}
INVALID: dict[str, Any] = {
    "resourceType": "Observation",
    "status": "guessed",  # not in the required ObservationStatus value set
    "valueBoolean": True,  # ... and Observation.code (1..1) is missing
}


async def _all_three(infra: Infrastructure, resources: dict[str, dict[str, Any]]) -> list[Findings]:
    return [
        await hapi_validate(infra.fhir_base_url, resources),
        fhir_resources(resources),
        fhir_js(resources),
    ]


async def test_each_validator_passes_a_valid_observation(infra: Infrastructure) -> None:
    for findings in await _all_three(infra, {"valid": VALID}):
        assert findings.errors == {}


async def test_each_validator_finds_the_errors_of_an_invalid_observation(
    infra: Infrastructure,
) -> None:
    for findings in await _all_three(infra, {"invalid": INVALID, "valid": VALID}):
        assert list(findings.errors) == ["invalid"], findings.errors
        assert any("code" in text.lower() for text in findings.errors["invalid"])


def test_fhir_js_counts_an_unknown_property_as_an_error() -> None:
    findings = fhir_js({"extra": {**VALID, "aiScore": 0.9}})
    assert findings.error_lines() == ["extra: Unexpected property (at Observation.aiScore)"]
