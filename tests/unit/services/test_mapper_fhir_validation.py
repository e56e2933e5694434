"""services.mapper.fhir_validation: invalid resources never leave the mapper."""

from __future__ import annotations

from typing import Any

import pytest

from services.mapper.fhir_validation import validate_bundle, validate_resource
from shared.errors import PermanentError


def _observation(**fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "identifier": [{"system": "urn:radmesh:observation", "value": "1.2.3/m/1/k/0"}],
        "status": "preliminary",
        "code": {"text": "finding"},
        **fields,
    }


def test_valid_observation_passes() -> None:
    """A minimal valid Observation referencing an ImagingStudy raises nothing."""
    validate_resource(_observation(derivedFrom=[{"reference": "ImagingStudy/1"}]), {})


def test_structural_error_is_permanent_and_names_resource_and_field() -> None:
    """A value of the wrong type is a PermanentError naming the resource, its identifier and
    the field."""
    with pytest.raises(PermanentError) as raised:
        validate_resource(_observation(valueQuantity={"value": "twelve"}), {})
    message = str(raised.value)
    assert "Observation 1.2.3/m/1/k/0" in message
    assert "valueQuantity" in message
    assert "dead-lettered" in message


def test_unknown_element_is_rejected() -> None:
    """An element R4 does not define (a typo) is a PermanentError naming it."""
    with pytest.raises(PermanentError, match="bodysite"):
        validate_resource(_observation(bodysite={"text": "brain"}), {})


def test_reference_to_a_type_r4_does_not_allow_is_rejected() -> None:
    """DiagnosticReport.result must be Observations: a Device there (resolved through the
    Bundle's urn:uuid fullUrls) is a PermanentError naming the field."""
    report = {
        "resourceType": "DiagnosticReport",
        "status": "preliminary",
        "code": {"text": "CT"},
        "result": [{"reference": "urn:uuid:1"}],
    }
    with pytest.raises(PermanentError, match="result references a Device"):
        validate_resource(report, {"urn:uuid:1": "Device"})
    validate_resource(report, {"urn:uuid:1": "Observation"})


def test_bundle_validation_checks_every_entry() -> None:
    """One bad entry among good ones fails the whole Bundle before anything is sent."""
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:a",
                "resource": _observation(),
                "request": {"method": "POST", "url": "Observation"},
            },
            {
                "fullUrl": "urn:uuid:b",
                "resource": _observation(derivedFrom=[{"reference": "Patient/1"}]),
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    with pytest.raises(PermanentError, match="derivedFrom references a Patient"):
        validate_bundle(bundle)
