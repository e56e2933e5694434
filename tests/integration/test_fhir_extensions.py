"""shared.fhir_extensions against the real FHIR server: radmesh's extension definitions are
published once, kept up to date, and the server then checks what radmesh writes against them."""

from __future__ import annotations

import copy
from typing import Any

import aiohttp
import pytest

from shared.fhir import FhirClient
from shared.fhir_extensions import DICOM_IMAGE_REFERENCE_DEFINITION, publish_extension_definitions
from shared.identifiers import DICOM_IMAGE_EXTENSION
from shared.settings import FhirSettings
from tests.conftest import Infrastructure

pytestmark = pytest.mark.integration

SERIES = "urn:oid:1.2.826.0.1.3680043.8.498.11"
SLICE = "urn:oid:1.2.826.0.1.3680043.8.498.12"


def _observation(parts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'},
        "status": "preliminary",
        "code": {"text": "finding"},
        "extension": [{"url": DICOM_IMAGE_EXTENSION, "extension": parts}],
    }


async def _errors(infra: Infrastructure, resource: dict[str, Any]) -> list[str]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{infra.fhir_base_url}/Observation/$validate",
            json=resource,
            headers={"Content-Type": "application/fhir+json"},
        ) as response,
    ):
        outcome = await response.json(content_type=None)
    return [
        str(issue.get("diagnostics"))
        for issue in outcome.get("issue", [])
        if issue.get("severity") in ("error", "fatal")
    ]


async def test_the_image_reference_definition_is_published_once_and_checks_observations(
    infra: Infrastructure,
) -> None:
    """Published twice: one StructureDefinition. The server then accepts the extension as the
    mapper writes it and refuses, naming the definition, a part of the wrong type, a missing
    series and a part the definition does not have."""
    fhir = FhirClient(FhirSettings(base_url=infra.fhir_base_url))
    try:
        first = await publish_extension_definitions(fhir)
        assert await publish_extension_definitions(fhir) == first
        found = await fhir.execute(
            "StructureDefinition", method="get", params={"url": DICOM_IMAGE_EXTENSION}
        )
        assert found["total"] == 1
    finally:
        await fhir.close()
    series = {"url": "seriesInstanceUid", "valueOid": SERIES}
    written = [series, {"url": "sopInstanceUid", "valueOid": SLICE}]
    written.append({"url": "centreVoxel", "valueString": "12 100.5 80"})
    assert await _errors(infra, _observation(written)) == []
    wrong_type = await _errors(
        infra, _observation([{"url": "seriesInstanceUid", "valueString": "1.2"}])
    )
    assert any("allows for the type oid but found type string" in e for e in wrong_type)
    no_series = await _errors(infra, _observation([{"url": "sopInstanceUid", "valueOid": SLICE}]))
    assert any("seriesInstanceUid" in e and "required" in e for e in no_series)
    unknown = await _errors(infra, _observation([series, {"url": "other", "valueString": "x"}]))
    assert any("'other' is not defined" in e for e in unknown)


async def test_a_changed_definition_replaces_the_stored_one(infra: Infrastructure) -> None:
    """A stored definition that differs from radmesh's (an older release's words) is brought up
    to date in place, not published a second time."""
    fhir = FhirClient(FhirSettings(base_url=infra.fhir_base_url))
    try:
        (reference,) = await publish_extension_definitions(fhir)
        stored = dict(await fhir.read_resource(reference))
        stale = {**copy.deepcopy(stored), "description": "an older description"}
        await fhir.update_resource(stale)
        assert await publish_extension_definitions(fhir) == [reference]
        current = dict(await fhir.read_resource(reference))
    finally:
        await fhir.close()
    assert current["description"] == DICOM_IMAGE_REFERENCE_DEFINITION["description"]
