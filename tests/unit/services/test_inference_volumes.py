"""services.inference.volumes: a stored CT series reads back as the phantom's HU volume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from samples.dicom_series import describe_study, iter_instances
from samples.phantoms import head_ct
from services.inference.volumes import prepare_input, read_volume
from shared.errors import InvalidMessage
from shared.messages import BlobInstance, SeriesManifest
from shared.registry import Preprocessing
from shared.storage import BlobStore


def _stored_series(
    tmp_path: Path, reverse: bool
) -> tuple[SeriesManifest, np.ndarray, tuple[float, float, float]]:
    phantom = head_ct(seed=3, slices=6, size=64)
    info = describe_study(phantom, scenario="volume-test", seed=3)
    store = BlobStore(tmp_path)
    instances = []
    for dataset in iter_instances(phantom, info):
        key = f"s/{dataset.SOPInstanceUID}.dcm"
        store.path(key).parent.mkdir(parents=True, exist_ok=True)
        dataset.save_as(store.path(key), enforce_file_format=True)
        instances.append(
            BlobInstance(
                sop_instance_uid=str(dataset.SOPInstanceUID),
                sop_class_uid=str(dataset.SOPClassUID),
                instance_number=int(dataset.InstanceNumber),
                blob_key=key,
                size_bytes=store.path(key).stat().st_size,
            )
        )
    if reverse:
        instances.reverse()
    manifest = SeriesManifest(
        series_instance_uid=info.series_instance_uid, modality="CT", instances=tuple(instances)
    )
    return manifest, phantom.volume_hu, phantom.spacing_mm


def test_series_reads_back_as_the_phantom_volume_whatever_the_instance_order(
    tmp_path: Path,
) -> None:
    """Slices are ordered by patient position (not by manifest order) and converted to HU."""
    manifest, expected, spacing = _stored_series(tmp_path, reverse=True)
    volume = read_volume(BlobStore(tmp_path), manifest)
    assert volume.hounsfield.dtype == np.int16
    assert np.array_equal(volume.hounsfield, expected)
    assert volume.spacing_mm == pytest.approx(spacing)


def test_prepare_input_sends_hu_and_spacing_as_declared(tmp_path: Path) -> None:
    """Default preprocessing: INT16 HU volume and FP32 spacing under the registry's names."""
    manifest, expected, spacing = _stored_series(tmp_path, reverse=False)
    tensors = prepare_input(read_volume(BlobStore(tmp_path), manifest), Preprocessing())
    assert tensors["volume"].dtype == np.int16
    assert np.array_equal(tensors["volume"], expected)
    assert tensors["spacing"].dtype == np.float32
    assert tensors["spacing"].tolist() == pytest.approx(list(spacing))


def test_series_of_one_slice_is_an_invalid_message(tmp_path: Path) -> None:
    """A single image cannot make a volume; the message is dead-lettered with that reason."""
    manifest, _, _ = _stored_series(tmp_path, reverse=False)
    single = manifest.model_copy(update={"instances": manifest.instances[:1]})
    with pytest.raises(InvalidMessage, match="has 1 image slices"):
        read_volume(BlobStore(tmp_path), single)
