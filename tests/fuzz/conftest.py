"""Fixtures of the fuzz suites: one real study (a small head CT in the PACS, its order, patient and
ImagingStudy on the FHIR server) that the valid inputs the hostile ones are mutated from are
about, so that a valid input is taken, and a mutation is refused for what it changed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from samples.load import LoadResult
from shared.fhir import FhirClient
from shared.identifiers import DICOM_UID_SYSTEM
from shared.settings import FhirSettings
from tests.conftest import Infrastructure
from tests.integration.sample_studies import delete_study, load_fresh_study, require_orthanc


@dataclass(frozen=True)
class FuzzStudy:
    loaded: LoadResult
    imaging_study: dict[str, Any]  # as the FHIR server has it

    def unannounced(self) -> tuple[str, dict[str, Any]]:
        """(a new Study Instance UID, the ImagingStudy under it): a study no FHIR server holds
        under that UID, so no other mesh on the shared servers (a developer's `make mesh-up`,
        the e2e suites; their Subscription hears of every new ImagingStudy) analyses it first,
        and the subscriber announces it when it is valid."""
        uid = f"2.25.{uuid.uuid4().int}"
        identifiers = [
            {**identifier, "value": f"urn:oid:{uid}"}
            if identifier.get("system") == DICOM_UID_SYSTEM
            else identifier
            for identifier in self.imaging_study["identifier"]
        ]
        return uid, {**self.imaging_study, "identifier": identifiers}


@pytest.fixture(scope="module")
async def fuzz_study(infra: Infrastructure) -> AsyncIterator[FuzzStudy]:
    """A fresh head CT (10 slices of 64×64: the ICH model's selector takes it) in the PACS and
    on the FHIR server, one per module (the queue suite posts its results, after which the
    subscriber would rightly announce it no more); deleted from the PACS afterwards."""
    require_orthanc(infra)
    loaded = await asyncio.to_thread(load_fresh_study, infra, "head-bleed", slices=10, size=64)
    assert loaded.imaging_study_id is not None
    fhir = FhirClient(FhirSettings(base_url=infra.fhir_base_url))
    try:
        imaging_study = dict(await fhir.read_resource(loaded.imaging_study_id))
    finally:
        await fhir.close()
    try:
        yield FuzzStudy(loaded, imaging_study)
    finally:
        await asyncio.to_thread(
            delete_study, infra.orthanc_url, infra.orthanc_auth, loaded.study_instance_uid
        )
