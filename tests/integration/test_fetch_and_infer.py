"""fetcher and inference handlers against the real Orthanc and Triton: a study in the PACS becomes
findings. Also the OIP v2 client's binary and JSON paths against the real server."""

from __future__ import annotations

import asyncio
import io
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import gdcm
import numpy as np
import numpy.typing as npt
import pydicom
import pytest
from pydicom import Dataset
from pydicom.uid import JPEG2000, JPEGLosslessSV1

from samples.dicom_series import describe_study, iter_instances
from samples.load import SCENARIOS
from services.fetcher.handlers import FetchStudy
from services.fetcher.retention import RetentionSweep
from services.inference.handlers import RunModel
from shared.errors import PermanentError, RemoteRejected
from shared.inference_protocol import InferenceClient
from shared.messages import (
    InferenceCompleted,
    ModelRef,
    SeriesManifest,
    StudyDetected,
    StudyFetched,
    StudyRef,
)
from shared.registry import load_registry
from shared.settings import StorageSettings
from shared.storage import BlobStore, PixelsGone
from tests.conftest import Infrastructure
from tests.integration.sample_studies import dicomweb_client, load_fresh_study

pytestmark = pytest.mark.integration

REGISTRY = load_registry(Path(__file__).resolve().parents[2] / "registry" / "models.yaml")


async def _fetch_and_infer(
    infra: Infrastructure, tmp_path: Path, scenario: str, model: str
) -> tuple[StudyFetched, InferenceCompleted]:
    loaded = await asyncio.to_thread(load_fresh_study, infra, scenario, with_fhir=False)
    detected = StudyDetected(
        study=StudyRef(study_instance_uid=loaded.study_instance_uid),
        models=(ModelRef(id=model, version="1"),),
        source="manual",
    )
    store = BlobStore(tmp_path)
    dicomweb = dicomweb_client(infra)
    run_model = RunModel(REGISTRY, store)
    try:
        (fetched,) = await FetchStudy(REGISTRY, dicomweb, store)(detected)
        (completed,) = await run_model(fetched)  # type: ignore[arg-type]
    finally:
        await dicomweb.close()
        await run_model.close()
    assert isinstance(fetched, StudyFetched) and isinstance(completed, InferenceCompleted)
    return fetched, completed


async def test_head_ct_with_bleed_is_fetched_and_the_hemorrhage_found(
    infra: Infrastructure, tmp_path: Path
) -> None:
    """The fetcher streams all 32 instances into the blob store; the ICH model finds the bleed
    and its volume; both events stay in the same run."""
    fetched, completed = await _fetch_and_infer(infra, tmp_path, "head-bleed", "ich-reference")
    assert len(fetched.series) == 1 and len(fetched.series[0].instances) == 32
    assert all((tmp_path / i.blob_key).is_file() for i in fetched.series[0].instances)
    series = fetched.series[0]
    key = (
        f"{fetched.correlation_id}/{fetched.study.study_instance_uid}/{series.series_instance_uid}"
    )
    manifest = BlobStore(tmp_path).read_bytes(f"{key}/manifest.json")
    assert SeriesManifest.model_validate_json(manifest) == series
    findings = {f.finding_key: f for f in completed.findings}
    assert findings["intracranial-hemorrhage"].present
    assert findings["intracranial-hemorrhage"].probability is not None
    assert findings["intracranial-hemorrhage"].probability >= 0.5
    assert (
        findings["hemorrhage-volume"].value is not None and findings["hemorrhage-volume"].value > 0
    )
    assert completed.correlation_id == fetched.correlation_id
    assert completed.causation_id == fetched.message_id


async def test_normal_head_ct_gives_a_negative_finding(
    infra: Infrastructure, tmp_path: Path
) -> None:
    """A clean head: one absent hemorrhage finding, no volume."""
    _, completed = await _fetch_and_infer(infra, tmp_path, "head-normal", "ich-reference")
    assert [(f.finding_key, f.present) for f in completed.findings] == [
        ("intracranial-hemorrhage", False)
    ]


async def test_chest_ct_nodules_are_found_with_diameters(
    infra: Infrastructure, tmp_path: Path
) -> None:
    """Three seeded nodules: nodule findings each with a diameter in mm."""
    _, completed = await _fetch_and_infer(infra, tmp_path, "chest-nodules", "lung-nodule-reference")
    nodules = [f for f in completed.findings if f.finding_key == "lung-nodule" and f.present]
    diameters = [f for f in completed.findings if f.finding_key == "lung-nodule-diameter"]
    assert len(nodules) >= 1  # of 3 seeded; sensitivity is measured in test_reference_models.py
    assert len(diameters) == len(nodules)
    assert all(d.unit == "mm" and d.value is not None and 3 < d.value < 30 for d in diameters)


async def test_model_that_matches_no_series_is_a_permanent_error(
    infra: Infrastructure, tmp_path: Path
) -> None:
    """Asking the lung model to read a head CT dead-letters the message with the reason."""
    loaded = await asyncio.to_thread(load_fresh_study, infra, "head-normal", with_fhir=False)
    detected = StudyDetected(
        study=StudyRef(study_instance_uid=loaded.study_instance_uid),
        models=(ModelRef(id="lung-nodule-reference", version="1"),),
        source="manual",
    )
    dicomweb = dicomweb_client(infra)
    try:
        with pytest.raises(PermanentError, match=r"no series of study .* matches the selector"):
            await FetchStudy(REGISTRY, dicomweb, BlobStore(tmp_path))(detected)
    finally:
        await dicomweb.close()


async def test_binary_and_json_tensors_give_the_same_outputs(infra: Infrastructure) -> None:
    """The OIP client's binary-extension path and its JSON path agree; a wrong input is a 4xx."""
    volume = np.random.default_rng(5).integers(-1000, 1000, size=(4, 16, 16), dtype=np.int16)
    inputs: dict[str, npt.NDArray[Any]] = {
        "volume": volume,
        "spacing": np.array([5.0, 0.9, 0.9], dtype=np.float32),
    }
    binary = InferenceClient(infra.triton_http_url)
    plain = InferenceClient(infra.triton_http_url, binary_tensors=False)  # as without the extension
    try:
        assert await binary.supports_binary_tensors()
        from_binary = await binary.infer("echo", inputs, ["shape", "value"])
        from_json = await plain.infer("echo", inputs, ["shape", "value"])
        with pytest.raises(RemoteRejected):
            await binary.infer("echo", {"volume": volume.astype(np.float32)}, ["shape"])
    finally:
        await binary.close()
        await plain.close()
    assert from_binary["shape"].tolist() == [4, 16, 16] == from_json["shape"].tolist()
    assert np.array_equal(from_binary["value"], from_json["value"])


async def test_swept_pixels_are_deleted_and_a_late_message_says_to_replay(
    infra: Infrastructure, tmp_path: Path
) -> None:
    """A fetched run whose files are older than the retention time is deleted whole by the
    fetcher's sweep (pixel data with patient data does not stay); a study.fetched that arrives
    for it afterwards is refused as permanent, saying to replay study.detected, not a crash."""
    loaded = await asyncio.to_thread(load_fresh_study, infra, "head-normal", with_fhir=False)
    detected = StudyDetected(
        study=StudyRef(study_instance_uid=loaded.study_instance_uid),
        models=(ModelRef(id="ich-reference", version="1"),),
        source="manual",
    )
    store = BlobStore(tmp_path)
    dicomweb = dicomweb_client(infra)
    try:
        (fetched,) = await FetchStudy(REGISTRY, dicomweb, store)(detected)
    finally:
        await dicomweb.close()
    assert isinstance(fetched, StudyFetched)
    run_dir = tmp_path / str(detected.correlation_id)
    two_hours_ago = time.time() - 7200
    for path in run_dir.rglob("*"):
        os.utime(path, (two_hours_ago, two_hours_ago))
    sweep = RetentionSweep(store, StorageSettings(blob_dir=tmp_path, retention_minutes=60))
    assert await sweep.sweep_once() == 1
    assert not run_dir.exists()
    run_model = RunModel(REGISTRY, store)
    try:
        with pytest.raises(PixelsGone, match=r"replay the study's study\.detected"):
            await run_model(fetched)
    finally:
        await run_model.close()


async def _stored_compressed(infra: Infrastructure, syntax: str) -> str:
    """A head CT with a bleed stored to Orthanc compressed in `syntax` (encoded here: JPEG
    Lossless SV1 by GDCM's Python bindings, lossy JPEG 2000 by pydicom's openjpeg plugin), as
    a PACS holds what a modality sent; its Study Instance UID."""
    seed = random.randrange(10**6, 10**7)
    phantom = SCENARIOS["head-bleed"].make(seed, 32, 256)
    info = describe_study(phantom, scenario="head-bleed", seed=seed)
    encoded = []
    for dataset in iter_instances(phantom, info):
        if syntax == JPEGLosslessSV1:
            encoded.append(_gdcm_jpeg_lossless(dataset))
            continue
        dataset.compress(syntax, j2k_cr=[15])
        buffer = io.BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        encoded.append(buffer.getvalue())
    dicomweb = dicomweb_client(infra)
    try:
        await dicomweb.store_instances(encoded)
    finally:
        await dicomweb.close()
    return info.study_instance_uid


def _gdcm_jpeg_lossless(dataset: Dataset) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        plain, packed = Path(folder, "plain.dcm"), Path(folder, "packed.dcm")
        dataset.save_as(plain, enforce_file_format=True)
        reader = gdcm.ImageReader()
        reader.SetFileName(str(plain))
        assert reader.Read()
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
        change.SetInput(reader.GetImage())
        assert change.Change()
        writer = gdcm.ImageWriter()
        writer.SetFileName(str(packed))
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        assert writer.Write()
        return packed.read_bytes()


async def _fetched(infra: Infrastructure, tmp_path: Path, study_uid: str) -> StudyFetched:
    detected = StudyDetected(
        study=StudyRef(study_instance_uid=study_uid),
        models=(ModelRef(id="ich-reference", version="1"),),
        source="manual",
    )
    dicomweb = dicomweb_client(infra)
    try:
        (fetched,) = await FetchStudy(REGISTRY, dicomweb, BlobStore(tmp_path))(detected)
    finally:
        await dicomweb.close()
    assert isinstance(fetched, StudyFetched)
    return fetched


async def test_a_jpeg_lossless_series_served_as_stored_is_decoded_and_analysed(
    infra: Infrastructure, tmp_path: Path
) -> None:
    """A head CT the PACS holds as JPEG Lossless, Process 14 SV1 (what many CT modalities
    send) is fetched as stored and decoded: the bleed is found as in the uncompressed study,
    and the result carries no input-quality note (the compression is lossless)."""
    fetched = await _fetched(infra, tmp_path, await _stored_compressed(infra, JPEGLosslessSV1))
    first = fetched.series[0].instances[0]
    stored = pydicom.dcmread(
        io.BytesIO(BlobStore(tmp_path).read_range(first.blob_key, first.offset, first.size_bytes))
    )
    assert stored.file_meta.TransferSyntaxUID == JPEGLosslessSV1
    run_model = RunModel(REGISTRY, BlobStore(tmp_path))
    try:
        (completed,) = await run_model(fetched)
    finally:
        await run_model.close()
    assert isinstance(completed, InferenceCompleted)
    findings = {f.finding_key: f for f in completed.findings}
    assert findings["intracranial-hemorrhage"].present
    assert completed.input_notes == ()


async def test_a_lossy_series_is_refused_by_default_saying_why(
    infra: Infrastructure, tmp_path: Path
) -> None:
    """The same head CT stored as lossy JPEG 2000: the ICH model's default input check refuses
    it, naming the compression — no confident answer from degraded pixels."""
    fetched = await _fetched(infra, tmp_path, await _stored_compressed(infra, JPEG2000))
    run_model = RunModel(REGISTRY, BlobStore(tmp_path))
    try:
        with pytest.raises(
            PermanentError, match="not analysed by ich-reference 1: lossy input: JPEG 2000"
        ):
            await run_model(fetched)
    finally:
        await run_model.close()
