"""Loading sample studies (python -m samples): images in Orthanc, records on the FHIR server.

Needs deploy/orthanc/up.sh and deploy/hapi-fhir/up.sh. Each run uses a random seed, so the
study is new; the Orthanc copies are deleted at the end (FHIR resources stay: idempotent).
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from samples import fhir_records
from samples.load import REAL_FILES, LoadResult, Settings, load_real, load_study
from tests.conftest import Infrastructure
from tests.integration.sample_studies import delete_study, load_settings, require_orthanc

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SLICES = 5
SIZE = 64


@pytest.fixture(scope="module")
def orthanc_settings(infra: Infrastructure) -> Settings:
    """Fails clearly when Orthanc is not running."""
    require_orthanc(infra)
    return load_settings(infra)


@pytest.fixture(scope="module")
def settings(orthanc_settings: Settings) -> Settings:
    """Fails clearly when the FHIR server is not running either."""
    try:
        metadata = requests.get(f"{orthanc_settings.fhir_base_url}/metadata", timeout=5)
    except requests.RequestException as exc:
        pytest.fail(f"FHIR server not reachable (deploy/hapi-fhir/up.sh): {exc}")
    assert metadata.status_code == 200
    return orthanc_settings


@pytest.fixture(scope="module")
def loaded(settings: Settings) -> Iterator[tuple[LoadResult, int]]:
    """A fresh head-bleed study loaded once (seed random per run)."""
    seed = random.randrange(10**9)
    result = load_study("head-bleed", settings=settings, seed=seed, slices=SLICES, size=SIZE)
    yield result, seed
    delete_study(settings.orthanc_url, settings.orthanc_auth, result.study_instance_uid)


def _fhir(settings: Settings, path: str, **params: str) -> dict[str, Any]:
    response = requests.get(
        f"{settings.fhir_base_url}/{path}",
        params=params,
        headers={"Accept": "application/fhir+json"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _search_count(settings: Settings, kind: str, identifier: str) -> int:
    bundle = _fhir(settings, kind, identifier=identifier)
    return len([e for e in bundle.get("entry", []) if e.get("search", {}).get("mode") != "include"])


def test_loaded_study_is_in_orthanc_with_every_instance(
    settings: Settings, loaded: tuple[LoadResult, int]
) -> None:
    """After a load, Orthanc holds the study with all of its instances."""
    result, _ = loaded
    assert result.instances == SLICES
    response = requests.get(
        f"{settings.dicomweb_root}/studies",
        params={"StudyInstanceUID": result.study_instance_uid, "includefield": "00201208"},
        auth=settings.orthanc_auth,
        timeout=10,
    )
    assert response.status_code == 200
    (study,) = response.json()
    assert study["00201208"]["Value"] == [SLICES]
    assert study["00080050"]["Value"] == [result.accession_number]


def test_loaded_study_has_linked_fhir_records(
    settings: Settings, loaded: tuple[LoadResult, int]
) -> None:
    """The ImagingStudy exists with its series/instances, and points at the order, the patient
    and a DICOMweb Endpoint that are all on the server."""
    result, _ = loaded
    assert result.imaging_study_id is not None
    study = _fhir(settings, result.imaging_study_id)
    assert study["status"] == "available"
    assert {
        "system": "urn:dicom:uid",
        "value": f"urn:oid:{result.study_instance_uid}",
    }.items() <= study["identifier"][0].items()
    assert study["numberOfInstances"] == SLICES
    assert study["series"][0]["uid"] == result.series_instance_uid
    assert len(study["series"][0]["instance"]) == SLICES
    request = _fhir(settings, study["basedOn"][0]["reference"])
    assert request["resourceType"] == "ServiceRequest"
    assert request["status"] == "active"
    assert request["intent"] == "order"
    assert any(
        i["value"] == result.accession_number and i["type"]["coding"][0]["code"] == "ACSN"
        for i in request["identifier"]
    )
    patient = _fhir(settings, study["subject"]["reference"])
    assert patient["resourceType"] == "Patient"
    assert request["subject"]["reference"] == study["subject"]["reference"]
    practitioner = _fhir(settings, request["requester"]["reference"])
    assert practitioner["resourceType"] == "Practitioner"
    endpoint = _fhir(settings, study["endpoint"][0]["reference"])
    assert endpoint["address"] == settings.dicomweb_root
    assert endpoint["connectionType"]["code"] == "dicom-wado-rs"


def test_pacs_only_load_puts_the_order_on_the_fhir_server_but_no_imaging_study(
    settings: Settings,
) -> None:
    """`--pacs-only`: the images are in Orthanc and the order (ServiceRequest with the
    accession, its patient) on the FHIR server, but no ImagingStudy: a site without DICOM-to-FHIR
    sync, where radmesh learns of the study from the PACS alone."""
    result = load_study(
        "head-normal",
        settings=settings,
        seed=random.randrange(10**9),
        slices=SLICES,
        size=SIZE,
        with_imaging_study=False,
    )
    try:
        assert result.imaging_study_id is None
        assert "ServiceRequest" in result.fhir_ids and "Patient" in result.fhir_ids
        uid = f"urn:dicom:uid|urn:oid:{result.study_instance_uid}"
        assert _search_count(settings, "ImagingStudy", uid) == 0
        request = _fhir(settings, result.fhir_ids["ServiceRequest"])
        assert any(i["value"] == result.accession_number for i in request["identifier"])
    finally:
        delete_study(settings.orthanc_url, settings.orthanc_auth, result.study_instance_uid)


def test_loading_twice_creates_no_duplicate_resources(
    settings: Settings, loaded: tuple[LoadResult, int]
) -> None:
    """A second load of the same study finds every resource and creates none."""
    first, seed = loaded
    again = load_study("head-bleed", settings=settings, seed=seed, slices=SLICES, size=SIZE)
    assert again.study_instance_uid == first.study_instance_uid
    assert again.fhir_ids == first.fhir_ids
    assert not any(again.fhir_created.values()), again.fhir_created
    checks = {
        "ImagingStudy": f"urn:dicom:uid|urn:oid:{first.study_instance_uid}",
        "ServiceRequest": f"{fhir_records.ACCESSION_SYSTEM}|{first.accession_number}",
    }
    for kind, identifier in checks.items():
        assert _search_count(settings, kind, identifier) == 1, kind
    patient_id = _fhir(settings, first.fhir_ids["Patient"])["identifier"][0]["value"]
    assert _search_count(settings, "Patient", f"{fhir_records.PATIENT_ID_SYSTEM}|{patient_id}") == 1
    endpoint = _fhir(settings, first.fhir_ids["Endpoint"])["identifier"][0]
    assert _search_count(settings, "Endpoint", f"{endpoint['system']}|{endpoint['value']}") == 1


def test_real_scanner_files_load_into_orthanc(orthanc_settings: Settings) -> None:
    """The real CT/MR files shipped by pydicom(-data) are all accepted by Orthanc."""
    settings = orthanc_settings
    results = load_real(settings=settings)
    assert len(results) == len(REAL_FILES)
    failed = {r.name: r.error for r in results if r.error}
    assert not failed
    for r in results:
        lookup = requests.post(
            f"{settings.orthanc_url}/tools/lookup",
            data=r.sop_instance_uid,
            auth=settings.orthanc_auth,
            timeout=10,
        ).json()
        assert [hit["Type"] for hit in lookup] == ["Instance"], r.name
    assert {r.modality for r in results} == {"CT", "MR"}


def test_cli_prints_uids_and_timing_but_no_patient_identity(settings: Settings) -> None:
    """`python -m samples load` prints the StudyInstanceUID, the ImagingStudy id and a rate,
    never the patient's name or ID."""
    seed = random.randrange(10**9)
    env = {
        **os.environ,
        "RADMESH_ORTHANC_HTTP_PORT": str(settings.orthanc_url.rsplit(":", 1)[1]),
        "RADMESH_FHIR_PORT": settings.fhir_base_url.split(":")[2].split("/")[0],
    }
    args = ["--slices", "4", "--size", "64", "--seed", str(seed)]
    run = subprocess.run(
        [sys.executable, "-m", "samples", "load", "chest-nodules", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    study_uid = next(line.split()[1] for line in lines if line.startswith("StudyInstanceUID "))
    imaging_study = next(line.split()[1] for line in lines if line.startswith("ImagingStudy "))
    assert imaging_study.startswith("ImagingStudy/")
    assert any("inst/s" in line for line in lines)
    patient = _fhir(settings, _fhir(settings, imaging_study)["subject"]["reference"])
    name = patient["name"][0]
    for secret in (patient["identifier"][0]["value"], name["family"], *name.get("given", [])):
        assert not re.search(rf"\b{re.escape(secret)}\b", run.stdout, re.IGNORECASE), secret
    delete_study(settings.orthanc_url, settings.orthanc_auth, study_uid)
