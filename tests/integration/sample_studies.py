"""Sample studies in the local PACS for integration tests: load a fresh one (samples.load with a
random seed), reach Orthanc with radmesh's DICOMweb client, fail clearly when Orthanc is down,
and delete a study again."""

from __future__ import annotations

import random

import pytest
import requests
from pydantic import SecretStr

from samples.load import LoadResult, Settings, load_study
from samples.load import delete_study as samples_delete_study
from shared.dicomweb import DicomWebClient
from shared.settings import DicomWebSettings
from tests.conftest import Infrastructure

__all__ = [
    "delete_study",
    "dicomweb_client",
    "load_fresh_study",
    "load_settings",
    "require_orthanc",
]


def load_settings(infra: Infrastructure) -> Settings:
    """Where samples.load stores studies and registers their records: the local servers."""
    return Settings(
        orthanc_url=infra.orthanc_url,
        orthanc_auth=infra.orthanc_auth,
        fhir_base_url=infra.fhir_base_url,
    )


def load_fresh_study(
    infra: Infrastructure,
    scenario: str,
    *,
    seed: int | None = None,
    slices: int = 32,
    size: int = 256,
    with_fhir: bool = True,
    with_imaging_study: bool = True,
) -> LoadResult:
    """`scenario` generated and loaded; a random seed (unless given) makes it a study of its own."""
    return load_study(
        scenario,
        settings=load_settings(infra),
        seed=random.randrange(10**6, 10**7) if seed is None else seed,
        slices=slices,
        size=size,
        with_fhir=with_fhir,
        with_imaging_study=with_imaging_study,
    )


def dicomweb_client(infra: Infrastructure) -> DicomWebClient:
    """radmesh's DICOMweb client on the local Orthanc, with its credentials."""
    user, password = infra.orthanc_auth
    return DicomWebClient(
        DicomWebSettings(
            base_url=infra.orthanc_dicomweb_url, username=user, password=SecretStr(password)
        )
    )


def require_orthanc(infra: Infrastructure) -> None:
    """Fails the test clearly when Orthanc is not running (or refuses the credentials)."""
    try:
        response = requests.get(f"{infra.orthanc_url}/system", auth=infra.orthanc_auth, timeout=3)
    except requests.RequestException as exc:
        pytest.fail(f"Orthanc not reachable at {infra.orthanc_url} (deploy/orthanc/up.sh): {exc}")
    assert response.status_code == 200, response.text


def delete_study(orthanc_url: str, auth: tuple[str, str], study_uid: str) -> None:
    """Remove every Orthanc resource the StudyInstanceUID resolves to."""
    samples_delete_study(
        Settings(orthanc_url=orthanc_url, orthanc_auth=auth, fhir_base_url=""), study_uid
    )
