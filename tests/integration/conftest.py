"""Fixtures the integration tests share: a FHIR client on the test server that waits until it
answers, and the project's model registry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.fhir import FhirClient
from shared.registry import Registry, load_registry
from tests.conftest import Infrastructure
from tests.integration.fhir_seed import answering_fhir_client

REGISTRY_PATH = Path(__file__).resolve().parents[2] / "registry" / "models.yaml"


@pytest.fixture
async def fhir(infra: Infrastructure) -> AsyncIterator[FhirClient]:
    async with answering_fhir_client(infra) as client:
        yield client


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry(REGISTRY_PATH)
