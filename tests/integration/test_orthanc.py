"""The local PACS (deploy/orthanc): auth, STOW-RS, QIDO-RS, WADO-RS and the stable-study webhook.

Needs Orthanc started by deploy/orthanc/up.sh. Each run stores a fresh synthetic study (random
seed), receives the webhook on the host:port of infra.pacs_hook_url, and deletes the study at
the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import io
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import numpy as np
import pydicom
import pytest
import requests
from aiohttp import web
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import UID

from samples import dicom_series, phantoms
from samples.dicom_series import StudyInfo
from samples.dicomweb import DicomWebClient
from tests.conftest import Infrastructure
from tests.integration.sample_studies import delete_study, require_orthanc

pytestmark = pytest.mark.integration

SLICES = 6
SIZE = 64
EVENT_TIMEOUT_S = 30.0
RETRIEVE_URL = "00081190"


@dataclass
class HookReceiver:
    """A test webhook receiver: keeps every request's raw body and headers."""

    requests: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(self, study_uid: str, count: int = 1) -> list[tuple[bytes, dict[str, str]]]:
        """The first `count` requests about `study_uid` (fails after EVENT_TIMEOUT_S)."""
        timeout = EVENT_TIMEOUT_S
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            matching = [
                (body, headers)
                for body, headers in self.requests
                if json.loads(body).get("study_instance_uid") == study_uid
            ]
            if len(matching) >= count:
                return matching[:count]
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                pytest.fail(
                    f"{count} stable-study event(s) for {study_uid} not received in {timeout} s "
                    f"(got {len(matching)}); is deploy/orthanc/up.sh using this hook URL?"
                )
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), timeout=min(remaining, 0.5))


@dataclass(frozen=True)
class StoredStudy:
    phantom: phantoms.Phantom
    info: StudyInfo
    stored: int


@pytest.fixture(scope="module")
def orthanc(infra: Infrastructure) -> Infrastructure:
    """Fails clearly when Orthanc is not running."""
    require_orthanc(infra)
    return infra


@pytest.fixture(scope="module")
async def hook(orthanc: Infrastructure) -> AsyncIterator[HookReceiver]:
    """An aiohttp server on the host:port and path of infra.pacs_hook_url."""
    receiver = HookReceiver()
    url = urlsplit(orthanc.pacs_hook_url)

    async def handle(request: web.Request) -> web.Response:
        receiver.requests.append((await request.read(), dict(request.headers)))
        receiver.arrived.set()
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post(url.path or "/", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, url.hostname, url.port or 80)
    await site.start()
    yield receiver
    await runner.cleanup()


@pytest.fixture(scope="module")
def client(orthanc: Infrastructure) -> DicomWebClient:
    return DicomWebClient(orthanc.orthanc_dicomweb_url, orthanc.orthanc_auth)


@pytest.fixture(scope="module")
async def study(
    orthanc: Infrastructure, hook: HookReceiver, client: DicomWebClient
) -> AsyncIterator[StoredStudy]:
    """A fresh synthetic head CT stored with STOW-RS (after the hook receiver is listening)."""
    seed = random.randrange(10**9)
    phantom = phantoms.head_ct(seed, slices=SLICES, size=SIZE, bleed=True)
    info = dicom_series.describe_study(phantom, scenario="test-orthanc", seed=seed)
    progress = await asyncio.to_thread(
        client.store, dicom_series.iter_encoded(phantom, info), batch_size=4
    )
    yield StoredStudy(phantom, info, progress.instances)
    await asyncio.to_thread(
        delete_study, orthanc.orthanc_url, orthanc.orthanc_auth, info.study_instance_uid
    )


def _dicomweb_client(infra: Infrastructure) -> DICOMwebClient:
    session = requests.Session()
    session.auth = infra.orthanc_auth
    return DICOMwebClient(url=infra.orthanc_dicomweb_url, session=session)


def _tag(item: dict[str, Any], tag: str) -> Any:
    return item.get(tag, {}).get("Value", [None])[0]


def test_rest_and_dicomweb_require_authentication(orthanc: Infrastructure) -> None:
    """Without (or with wrong) credentials Orthanc answers 401; with them 200."""
    # one study each: listing every study the shared PACS holds can outlast the timeout
    for path in ("/system", "/dicom-web/studies?limit=1", "/studies?since=0&limit=1"):
        url = f"{orthanc.orthanc_url}{path}"
        assert requests.get(url, timeout=5).status_code == 401, path
        wrong = (orthanc.orthanc_auth[0], "not-the-password")
        assert requests.get(url, auth=wrong, timeout=5).status_code == 401, path
        assert requests.get(url, auth=orthanc.orthanc_auth, timeout=5).status_code == 200, path


def test_stow_rs_stores_every_instance_of_the_series(
    orthanc: Infrastructure, study: StoredStudy
) -> None:
    """Batched STOW-RS stores the whole series: Orthanc counts every instance."""
    assert study.stored == SLICES
    found = DicomWebClient(orthanc.orthanc_dicomweb_url, orthanc.orthanc_auth).qido(
        "studies", f"StudyInstanceUID={study.info.study_instance_uid}&includefield=00201208"
    )
    assert len(found) == 1
    assert _tag(found[0], "00201208") == SLICES  # NumberOfStudyRelatedInstances


def test_qido_rs_finds_study_series_and_instances_with_retrieve_urls_with_port(
    orthanc: Infrastructure, study: StoredStudy
) -> None:
    """Exact-match QIDO-RS (dicomweb-client) finds the study, series and instances by UID;
    RetrieveURLs carry the host:port of DicomWeb.Host."""
    dw = _dicomweb_client(orthanc)
    info = study.info
    studies = dw.search_for_studies(search_filters={"StudyInstanceUID": info.study_instance_uid})
    assert [_tag(s, "0020000D") for s in studies] == [info.study_instance_uid]
    by_accession = dw.search_for_studies(search_filters={"AccessionNumber": info.accession_number})
    assert [_tag(s, "0020000D") for s in by_accession] == [info.study_instance_uid]
    series = dw.search_for_series(study_instance_uid=info.study_instance_uid)
    assert [_tag(s, "0020000E") for s in series] == [info.series_instance_uid]
    assert _tag(series[0], "00080060") == "CT"
    instances = dw.search_for_instances(
        study_instance_uid=info.study_instance_uid,
        series_instance_uid=info.series_instance_uid,
    )
    assert sorted(_tag(i, "00080018") for i in instances) == sorted(
        info.sop_instance_uid(k) for k in range(SLICES)
    )
    prefix = f"{orthanc.orthanc_dicomweb_url}/studies/{info.study_instance_uid}"
    for item in [*studies, *series, *instances]:
        retrieve_url = _tag(item, RETRIEVE_URL)
        assert retrieve_url is not None
        assert retrieve_url.startswith(prefix), retrieve_url


def test_qido_rs_wildcard_and_person_name_match_with_a_raw_query_string(
    orthanc: Infrastructure, study: StoredStudy, client: DicomWebClient
) -> None:
    """Orthanc 1.10 does not percent-decode: a raw `PatientName=FAMILY^*` query matches."""
    family = study.info.patient.name.split("^")[0]
    accession_prefix = study.info.accession_number[:-3]
    found = client.qido(
        "studies",
        f"PatientName={family}^*&AccessionNumber={accession_prefix}*"
        f"&StudyInstanceUID={study.info.study_instance_uid}",
    )
    assert [_tag(s, "0020000D") for s in found] == [study.info.study_instance_uid]
    nothing = client.qido(
        "studies",
        f"PatientName=NOBODY^*&StudyInstanceUID={study.info.study_instance_uid}",
    )
    assert nothing == []


async def test_wado_rs_retrieves_instances_with_the_same_pixel_data(
    orthanc: Infrastructure, study: StoredStudy
) -> None:
    """WADO-RS series retrieve, read part by part, gives back the phantom's HU exactly."""
    info = study.info
    url = (
        f"{orthanc.orthanc_dicomweb_url}/studies/{info.study_instance_uid}"
        f"/series/{info.series_instance_uid}"
    )
    headers = {
        "Accept": 'multipart/related; type="application/dicom"',
        "Authorization": aiohttp.encode_basic_auth(*orthanc.orthanc_auth),
    }
    received: dict[str, pydicom.Dataset] = {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers=headers) as response,
    ):
        assert response.status == 200, await response.text()
        reader = aiohttp.MultipartReader.from_response(response)
        while True:
            part = await reader.next()
            if part is None:
                break
            assert isinstance(part, aiohttp.BodyPartReader)
            instance = pydicom.dcmread(io.BytesIO(await part.read(decode=False)))
            received[str(instance.SOPInstanceUID)] = instance
    assert len(received) == SLICES
    for index in range(SLICES):
        ds = received[info.sop_instance_uid(index)]
        hu = ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
        np.testing.assert_array_equal(hu, study.phantom.volume_hu[index].astype(np.int32))


def _verify(body: bytes, headers: dict[str, str], secret: str) -> None:
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert headers.get("Content-Type", "").startswith("application/json")
    assert hmac.compare_digest(headers.get("X-Radmesh-Signature", ""), expected)


async def test_stable_study_event_is_signed_and_has_no_patient_data(
    orthanc: Infrastructure, hook: HookReceiver, study: StoredStudy
) -> None:
    """Once stable, the study is announced with a valid HMAC signature and no name/ID."""
    ((body, headers),) = await hook.wait_for(study.info.study_instance_uid)
    _verify(body, headers, orthanc.pacs_hook_secret)
    event = json.loads(body)
    assert event["event"] == "stable-study"
    assert event["accession_number"] == study.info.accession_number
    assert event["instance_count"] == SLICES
    assert event["series_count"] == 1
    assert event["modalities"] == ["CT"]
    assert event["sop_class_uids"] == ["1.2.840.10008.5.1.4.1.1.2"]
    assert event["series"][0]["series_instance_uid"] == study.info.series_instance_uid
    assert event["orthanc_study_id"]
    assert headers.get("X-Radmesh-Event-Id") == event["event_id"]
    patient = study.info.patient
    text = body.decode()
    for secret in (patient.patient_id, patient.name, *patient.name.split("^")):
        assert secret not in text
    assert patient.birth_date not in text
    # a tampered body does not verify
    with pytest.raises(AssertionError):
        _verify(body.replace(b"stable-study", b"stable-studz"), headers, orthanc.pacs_hook_secret)


async def test_stable_study_event_fires_again_when_an_instance_is_added(
    orthanc: Infrastructure, hook: HookReceiver, study: StoredStudy, client: DicomWebClient
) -> None:
    """Storing one more instance (e.g. radmesh's own output) into the study fires a new event
    that shows the new series, so a subscriber can recognise its own output."""
    await hook.wait_for(study.info.study_instance_uid)
    derived = replace(
        study.info,
        series_instance_uid=dicom_series.derive_uid(study.info.study_instance_uid, "derived"),
        series_number=900,
        series_description="radmesh derived",
    )
    datasets = dicom_series.iter_instances(study.phantom, derived)
    first = next(datasets)
    first.Manufacturer = "radmesh"
    first.SOPInstanceUID = first.file_meta.MediaStorageSOPInstanceUID = UID(
        dicom_series.derive_uid(derived.series_instance_uid, "instance", 0)
    )
    await asyncio.to_thread(client.store_batch, [dicom_series.encode(first)])
    events = await hook.wait_for(study.info.study_instance_uid, count=2)
    body, headers = events[1]
    _verify(body, headers, orthanc.pacs_hook_secret)
    event = json.loads(body)
    assert event["instance_count"] == SLICES + 1
    assert event["series_count"] == 2
    assert event["event_id"] != json.loads(events[0][0])["event_id"]
    by_uid = {s["series_instance_uid"]: s for s in event["series"]}
    assert by_uid[derived.series_instance_uid]["manufacturer"] == "radmesh"
    assert by_uid[derived.series_instance_uid]["instance_count"] == 1
    assert by_uid[study.info.series_instance_uid]["instance_count"] == SLICES
