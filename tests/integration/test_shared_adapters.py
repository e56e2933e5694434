"""shared.dicomweb and shared.fhir against the real Orthanc and FHIR server."""

from __future__ import annotations

import asyncio
import io
import uuid
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydantic import SecretStr

from samples.dicom_series import describe_study, iter_encoded
from samples.phantoms import head_ct
from shared.cli import _route
from shared.dicomweb import DicomWebClient
from shared.errors import RemoteConflict, RemoteRejected, RemoteUnavailable
from shared.fhir import FhirClient, conditional_create_entry, reference_of, transaction_bundle
from shared.settings import DicomWebSettings, FhirSettings, RadmeshSettings
from shared.storage import BlobStore
from tests.conftest import Infrastructure
from tests.integration.sample_studies import dicomweb_client, load_fresh_study

pytestmark = pytest.mark.integration


async def test_series_stored_then_searched_then_streamed_into_the_blob_store(
    infra: Infrastructure, tmp_path: Path
) -> None:
    """STOW-RS stores a generated head CT; QIDO-RS describes its series and says which SOP
    classes it holds (a search matching a list of UIDs); WADO-RS streams every
    instance into the blob store under its SOP Instance UID with the pixels intact."""
    phantom = head_ct(seed=9100 + uuid.uuid4().int % 1000, slices=8, size=64)
    info = describe_study(phantom, scenario=f"adapter-test-{uuid.uuid4().hex[:6]}", seed=1)
    client = dicomweb_client(infra)
    try:
        await client.store_instances(iter_encoded(phantom, info))
        series = await client.search_series(info.study_instance_uid)
        assert [(s.series_instance_uid, s.modality, s.number_of_instances) for s in series] == [
            (info.series_instance_uid, "CT", 8)
        ]
        assert series[0].body_part_examined == "HEAD"
        holds = [
            await client.series_holds_sop_class(
                info.study_instance_uid, info.series_instance_uid, classes
            )
            for classes in (
                ["1.2.840.10008.5.1.4.1.1.2"],  # CT Image Storage: what the series holds
                ["1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.2"],  # either
                ["1.2.840.10008.5.1.4.1.1.7"],  # Secondary Capture only: not in the series
            )
        ]
        assert holds == [True, True, False]

        store = BlobStore(tmp_path)
        retrieved = await client.retrieve_series(
            info.study_instance_uid, info.series_instance_uid, store, "study/series"
        )
    finally:
        await client.close()
    assert sorted(r.sop_instance_uid for r in retrieved) == sorted(
        info.sop_instance_uid(index) for index in range(8)
    )
    first = min(retrieved, key=lambda r: r.instance_number or 0)
    dataset = pydicom.dcmread(
        io.BytesIO(store.read_range(first.blob_key, first.offset, first.size_bytes))
    )
    hu = dataset.pixel_array * float(dataset.RescaleSlope) + float(dataset.RescaleIntercept)
    assert np.array_equal(hu.astype(np.int16), phantom.volume_hu[0])
    assert [path.name for path in store.path("study/series").iterdir()] == [
        first.blob_key.split("/")[-1]  # one blob for the series, nothing else left
    ]


async def test_unknown_study_search_is_empty_and_bad_credentials_are_rejected(
    infra: Infrastructure,
) -> None:
    """QIDO-RS for a study the PACS does not have returns nothing; wrong credentials raise a
    permanent error (401) rather than a retry."""
    client = dicomweb_client(infra)
    try:
        assert await client.search_series("1.2.3.4.5.6.7.8.9.999") == []
    finally:
        await client.close()
    wrong = DicomWebClient(
        DicomWebSettings(
            base_url=infra.orthanc_dicomweb_url, username="radmesh", password=SecretStr("wrong")
        )
    )
    try:
        with pytest.raises(RemoteRejected) as raised:
            await wrong.search_series("1.2.3")
        assert raised.value.status == 401
    finally:
        await wrong.close()


async def test_conditional_transaction_creates_once(infra: Infrastructure) -> None:
    """The same transaction posted twice with ifNoneExist on a business identifier leaves one
    resource, and both responses point at it."""
    client = FhirClient(FhirSettings(base_url=infra.fhir_base_url))
    value = f"adapter-test-{uuid.uuid4().hex}"
    device = {
        "resourceType": "Device",
        "identifier": [{"system": "urn:radmesh:device", "value": value}],
        "deviceName": [{"name": "ich-reference", "type": "model-name"}],
    }
    bundle = transaction_bundle(
        [conditional_create_entry(device, f"urn:uuid:{uuid.uuid4()}", "urn:radmesh:device", value)]
    )
    try:
        first = await client.transaction(bundle)
        second = await client.transaction(bundle)
        found = (
            await client.resources("Device")
            .search(identifier=f"urn:radmesh:device|{value}")
            .fetch_all()
        )
    finally:
        await client.close()
    assert reference_of(first["entry"][0]) == reference_of(second["entry"][0])
    assert len(found) == 1


async def test_concurrent_conditional_creates_make_one_resource_and_the_loser_retries(
    infra: Infrastructure,
) -> None:
    """Several transactions conditionally creating one Device at the same moment (two studies
    of one model mapped at once): HAPI creates it once and refuses the others with 409, which
    radmesh treats as a conflict to retry; the retries find the Device the winner made."""
    value = f"race-test-{uuid.uuid4().hex}"
    device = {
        "resourceType": "Device",
        "identifier": [{"system": "urn:radmesh:device", "value": value}],
        "deviceName": [{"name": "ich-reference", "type": "model-name"}],
    }
    clients = [FhirClient(FhirSettings(base_url=infra.fhir_base_url)) for _ in range(4)]

    async def create(client: FhirClient) -> str:
        bundle = transaction_bundle(
            [
                conditional_create_entry(
                    device, f"urn:uuid:{uuid.uuid4()}", "urn:radmesh:device", value
                )
            ]
        )
        for _ in range(5):
            try:
                return reference_of((await client.transaction(bundle))["entry"][0])
            except RemoteConflict as conflict:
                assert conflict.status == 409
                conflicts.append(str(conflict))
        raise AssertionError(f"still conflicting after 5 tries: {conflicts[-1]}")

    conflicts: list[str] = []
    try:
        references = await asyncio.gather(*(create(client) for client in clients))
        found = (
            await clients[0]
            .resources("Device")
            .search(identifier=f"urn:radmesh:device|{value}")
            .fetch_all()
        )
    finally:
        for client in clients:
            await client.close()
    assert len(found) == 1
    assert set(references) == {f"Device/{found[0]['id']}"}


async def test_fhir_errors_keep_the_operation_outcome_and_are_classified(
    infra: Infrastructure,
) -> None:
    """An invalid resource is a permanent error carrying the server's OperationOutcome (HAPI
    answers a resource that fails validation with 422, and names the errors, not its warnings,
    in the message); a server that does not answer is a transient error."""
    client = FhirClient(FhirSettings(base_url=infra.fhir_base_url))
    try:
        with pytest.raises(RemoteRejected) as raised:
            await client.execute(
                "Observation",
                method="post",
                data={"resourceType": "Observation", "status": "not-a-status"},
            )
        assert raised.value.status == 422
        assert isinstance(raised.value.payload, dict)
        assert raised.value.payload["resourceType"] == "OperationOutcome"
    finally:
        await client.close()
    down = FhirClient(FhirSettings(base_url="http://127.0.0.1:9/fhir", timeout_seconds=2))
    try:
        with pytest.raises(RemoteUnavailable):
            await down.execute("metadata", method="get")
    finally:
        await down.close()


async def test_radmesh_route_explains_which_model_reads_which_series(
    infra: Infrastructure, capsys: pytest.CaptureFixture[str]
) -> None:
    """`radmesh route <study>` on a head CT in the PACS: the bleed model reads its CT series,
    the chest model does not apply because the body part is HEAD; an unknown study exits 1."""
    loaded = await asyncio.to_thread(
        load_fresh_study, infra, "head-bleed", slices=24, size=32, with_fhir=False
    )
    settings = RadmeshSettings(
        dicomweb=DicomWebSettings(
            base_url=infra.orthanc_dicomweb_url,
            username=infra.orthanc_auth[0],
            password=SecretStr(infra.orthanc_auth[1]),
        )
    )
    assert await _route(settings, loaded.study_instance_uid) == 0
    printed = capsys.readouterr().out
    assert f"ich-reference 1 (active): applies; reads {loaded.series_instance_uid}" in printed
    assert "lung-nodule-reference 1 (active): does not apply" in printed
    assert f"{loaded.series_instance_uid}: body part HEAD is not CHEST/LUNG/THORAX" in printed
    assert await _route(settings, "1.2.826.0.1.3680043.10.999.404") == 1
    assert await _route(settings, "%00") == 2
