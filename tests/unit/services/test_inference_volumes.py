"""services.inference.volumes: a stored CT series reads back as the phantom's HU volume."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    JPEG2000,
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

from samples.dicom_series import describe_study, iter_instances
from samples.phantoms import head_ct
from services.inference.volumes import (
    _native_pixels,
    _to_hounsfield,
    first_input_slice,
    prepare_input,
    read_volume,
)
from shared.errors import InvalidMessage
from shared.messages import BlobInstance, SeriesManifest
from shared.registry import Preprocessing
from shared.storage import BlobStore, PixelsGone
from shared.wado_store import SeriesSink


def _stored_series(
    tmp_path: Path, reverse: bool, change: Callable[[Dataset, int], None] | None = None
) -> tuple[SeriesManifest, np.ndarray, tuple[float, float, float]]:
    phantom = head_ct(seed=3, slices=6, size=64)
    info = describe_study(phantom, scenario="volume-test", seed=3)
    store = BlobStore(tmp_path)
    sink = SeriesSink(store, "s")  # as the fetcher stores a series: one blob, the offsets
    for index, dataset in enumerate(iter_instances(phantom, info)):
        if change is not None:
            change(dataset, index)
        encoded = io.BytesIO()
        dataset.save_as(encoded, enforce_file_format=True)
        sink.start({})
        sink.data(memoryview(encoded.getvalue()))
        sink.end()
    sink.finish()
    instances = [stored.blob() for stored in sink.retrieved]
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


def test_the_volume_knows_where_each_voxel_lies_in_the_patient(tmp_path: Path) -> None:
    """Geometry in volume order whatever the instance order: voxel (z, 0, 0) is slice z's Image
    Position (Patient); one step along x or y moves by the pixel spacing along the
    orientation's row and column directions; the series' frame of reference is named."""
    manifest, _, spacing = _stored_series(tmp_path, reverse=True)
    volume = read_volume(BlobStore(tmp_path), manifest)
    datasets = {
        str(ds.SOPInstanceUID): ds
        for ds in (
            pydicom.dcmread(
                io.BytesIO(BlobStore(tmp_path).read_range(i.blob_key, i.offset, i.size_bytes))
            )
            for i in manifest.instances
        )
    }
    geometry = volume.geometry
    assert geometry is not None
    first = datasets[volume.sop_instance_uids[0]]
    assert geometry.frame_of_reference_uid == first.FrameOfReferenceUID
    for z, uid in enumerate(volume.sop_instance_uids):
        position = [float(v) for v in datasets[uid].ImagePositionPatient]
        assert geometry.patient_point((z, 0, 0)) == pytest.approx(position, abs=1e-3)
    row, column = first.ImageOrientationPatient[:3], first.ImageOrientationPatient[3:]
    moved = np.asarray(geometry.patient_point((1, 3, 2))) - geometry.patient_point((1, 0, 0))
    expected = 2 * spacing[2] * np.asarray(row, float) + 3 * spacing[1] * np.asarray(column, float)
    assert moved == pytest.approx(expected, abs=1e-3)
    with pytest.raises(ValueError, match="outside the volume"):
        geometry.patient_point((len(volume.sop_instance_uids), 0, 0))


def test_a_slice_cap_starts_the_input_where_first_input_slice_says(tmp_path: Path) -> None:
    """max_slices 4 of 6: the input is volume slices 1..4, the offset the findings add back."""
    manifest, expected, _ = _stored_series(tmp_path, reverse=False)
    volume = read_volume(BlobStore(tmp_path), manifest)
    capped = Preprocessing(max_slices=4)
    start = first_input_slice(volume, capped)
    assert start == 1
    assert np.array_equal(prepare_input(volume, capped)["volume"], expected[start : start + 4])
    assert first_input_slice(volume, Preprocessing()) == 0


def test_series_of_one_slice_is_an_invalid_message(tmp_path: Path) -> None:
    """A single image cannot make a volume; the message is dead-lettered with that reason."""
    manifest, _, _ = _stored_series(tmp_path, reverse=False)
    single = manifest.model_copy(update={"instances": manifest.instances[:1]})
    with pytest.raises(InvalidMessage, match="has 1 image slices"):
        read_volume(BlobStore(tmp_path), single)


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_losslessly_compressed_series_decode_to_the_same_volume(
    tmp_path: Path, syntax: UID
) -> None:
    """Pixel data a PACS serves as stored (RLE, JPEG 2000 lossless) decodes (pylibjpeg) to the
    very HU of the uncompressed series, and the volume is not called lossy."""

    def compress(dataset: Dataset, _: int) -> None:
        dataset.compress(syntax)

    manifest, expected, _ = _stored_series(tmp_path, reverse=False, change=compress)
    volume = read_volume(BlobStore(tmp_path), manifest)
    assert np.array_equal(volume.hounsfield, expected)
    assert volume.quality.lossy is None


def test_lossy_pixels_are_reported_by_transfer_syntax_or_by_their_history(tmp_path: Path) -> None:
    def lossy(dataset: Dataset, index: int) -> None:
        if index == 0:
            dataset.compress(JPEG2000, j2k_cr=[20])
        else:
            dataset.LossyImageCompression = "01"

    manifest, _, _ = _stored_series(tmp_path, reverse=False, change=lossy)
    quality = read_volume(BlobStore(tmp_path), manifest).quality
    assert quality.lossy is not None and "JPEG 2000" in quality.lossy
    history = manifest.model_copy(update={"instances": manifest.instances[1:]})
    assert "Lossy Image Compression 01" in str(
        read_volume(BlobStore(tmp_path), history).quality.lossy
    )


def test_a_missing_slice_shows_as_a_gap_in_the_spacings(tmp_path: Path) -> None:
    manifest, _, spacing = _stored_series(tmp_path, reverse=False)
    gapped = manifest.model_copy(
        update={"instances": manifest.instances[:2] + manifest.instances[3:]}
    )
    spacings = read_volume(BlobStore(tmp_path), gapped).quality.spacings_mm
    assert sorted(spacings) == pytest.approx([spacing[0]] * 3 + [2 * spacing[0]], abs=1e-3)


def test_mixed_orientations_make_no_volume(tmp_path: Path) -> None:
    def tilt(dataset: Dataset, index: int) -> None:
        if index == 2:
            dataset.ImageOrientationPatient = [1, 0, 0, 0, 0.8, -0.6]

    manifest, _, _ = _stored_series(tmp_path, reverse=False, change=tilt)
    with pytest.raises(InvalidMessage, match="mixes 2 image orientations"):
        read_volume(BlobStore(tmp_path), manifest)


def test_an_enhanced_multi_frame_ct_reads_as_the_same_volume(tmp_path: Path) -> None:
    """One instance whose frames the Per-frame Functional Groups place (and rescale) reads as
    the volume of the single-frame series it was made from."""
    frames: list[Dataset] = []

    def keep(dataset: Dataset, _: int) -> None:
        frames.append(dataset)

    _, expected, spacing = _stored_series(tmp_path, reverse=False, change=keep)
    first = frames[0]
    enhanced = Dataset()
    enhanced.file_meta = first.file_meta
    enhanced.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for keyword in (
        "SOPClassUID",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "Modality",
        "Rows",
        "Columns",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
        "SamplesPerPixel",
        "PhotometricInterpretation",
    ):
        setattr(enhanced, keyword, getattr(first, keyword))
    enhanced.SOPInstanceUID = generate_uid()
    enhanced.NumberOfFrames = len(frames)
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = first.PixelSpacing
    measures.SliceThickness = first.SliceThickness
    orientation = Dataset()
    orientation.ImageOrientationPatient = first.ImageOrientationPatient
    shared.PixelMeasuresSequence = DicomSequence([measures])
    shared.PlaneOrientationSequence = DicomSequence([orientation])
    enhanced.SharedFunctionalGroupsSequence = DicomSequence([shared])
    per_frame = []
    for frame in reversed(frames):  # frame order is not slice order
        group = Dataset()
        position = Dataset()
        position.ImagePositionPatient = frame.ImagePositionPatient
        transform = Dataset()
        transform.RescaleSlope = frame.RescaleSlope
        transform.RescaleIntercept = frame.RescaleIntercept
        group.PlanePositionSequence = DicomSequence([position])
        group.PixelValueTransformationSequence = DicomSequence([transform])
        per_frame.append(group)
    enhanced.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    enhanced.PixelData = b"".join(frame.PixelData for frame in reversed(frames))
    store = BlobStore(tmp_path / "enhanced")
    store.path("e/1.dcm").parent.mkdir(parents=True, exist_ok=True)
    enhanced.save_as(store.path("e/1.dcm"), enforce_file_format=True)
    manifest = SeriesManifest(
        series_instance_uid=str(first.SeriesInstanceUID),
        modality="CT",
        instances=(
            BlobInstance(
                sop_instance_uid=str(enhanced.SOPInstanceUID),
                sop_class_uid=str(enhanced.SOPClassUID),
                blob_key="e/1.dcm",
                size_bytes=store.path("e/1.dcm").stat().st_size,
            ),
        ),
    )
    volume = read_volume(store, manifest)
    assert np.array_equal(volume.hounsfield, expected)
    assert volume.spacing_mm == pytest.approx(spacing)


def test_a_fractional_rescale_and_a_shuffled_series_read_as_the_same_hu(tmp_path: Path) -> None:
    """Stored values written with slope 0.5 and intercept -1024.5 (the float path) and the
    instances in a shuffled order (the in-place reordering) give the phantom's HU, rounded."""

    def halve(dataset: Dataset, index: int) -> None:
        hu = dataset.pixel_array.astype(np.float64) + float(dataset.RescaleIntercept)
        dataset.PixelData = np.rint((hu + 1024.5) / 0.5).astype(np.uint16).tobytes()
        dataset.PixelRepresentation = 0
        dataset.RescaleSlope, dataset.RescaleIntercept = 0.5, -1024.5

    manifest, expected, _ = _stored_series(tmp_path, reverse=False, change=halve)
    shuffled = [manifest.instances[i] for i in (3, 0, 5, 1, 4, 2)]
    volume = read_volume(BlobStore(tmp_path), manifest.model_copy(update={"instances": shuffled}))
    assert np.abs(volume.hounsfield.astype(np.int32) - expected).max() <= 1
    assert volume.sop_instance_uids == tuple(i.sop_instance_uid for i in manifest.instances)


@pytest.mark.parametrize("signed", [0, 1])
@pytest.mark.parametrize("bits_stored", [12, 16])
@pytest.mark.parametrize("frames", [1, 3])
@pytest.mark.parametrize("clean_high_bits", [False, True])
def test_native_pixels_are_what_pydicom_decodes_unused_high_bits_included(
    signed: int, bits_stored: int, frames: int, clean_high_bits: bool
) -> None:
    """Uncompressed 16-bit pixel data read straight from its bytes equals pydicom's
    `pixel_array`, also when the unused high bits carry something (masked when unsigned,
    sign-extended when signed) and for multi-frame data; compressed data is left to pydicom."""
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.Rows, dataset.Columns, dataset.SamplesPerPixel = 4, 5, 1
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, bits_stored, bits_stored - 1
    dataset.PixelRepresentation, dataset.PhotometricInterpretation = signed, "MONOCHROME2"
    if frames > 1:
        dataset.NumberOfFrames = frames
    raw = np.random.default_rng(7).integers(0, 1 << 16, size=frames * 20, dtype=np.uint16)
    if clean_high_bits:  # what the stored bits say already (sign-extended when signed)
        raw = raw & np.uint16((1 << bits_stored) - 1)
        if signed:
            raw = ((raw.view(np.int16) << (16 - bits_stored)) >> (16 - bits_stored)).view(np.uint16)
    dataset.PixelData = raw.astype("<u2").tobytes()
    native = _native_pixels(dataset)
    assert native is not None
    assert native.dtype == dataset.pixel_array.dtype
    np.testing.assert_array_equal(native, dataset.pixel_array)
    dataset.file_meta.TransferSyntaxUID = RLELossless
    assert _native_pixels(dataset) is None


@pytest.mark.parametrize(
    ("dtype", "low", "high", "slope", "intercept"),
    [
        (np.uint16, 0, 4095, 1, -1024),  # CT's usual: one int16 addition
        (np.uint16, 0, 65535, 1, -1024),  # beyond int16 before the intercept: clipped
        (np.int16, -32768, 32767, 1, 1000),  # past int16's top after it: clipped
        (np.int16, -32768, 32767, 1, -1000),  # past its bottom
        (np.int16, -2000, 3000, 1, 0),
        (np.uint16, 0, 65535, 1, -32768),  # fits int16 after it, read as uint16
        (np.uint16, 0, 65535, 1, 40000),  # an intercept no int16 holds
        (np.uint16, 0, 4095, 0.5, -1024.5),  # the float path
    ],
)
def test_stored_values_become_hounsfield_units_clipped_to_int16(
    dtype: type, low: int, high: int, slope: float, intercept: float
) -> None:
    """Whatever path the conversion takes, each value is round(stored × slope + intercept)
    clipped to int16, the extremes included."""
    stored = np.random.default_rng(11).integers(low, high + 1, size=(8, 9), dtype=dtype)
    stored[0, :2] = low, high
    out = np.empty(stored.shape, dtype=np.int16)
    _to_hounsfield(stored, slope, intercept, out)
    expected = np.clip(np.rint(stored.astype(np.float64) * slope + intercept), -32768, 32767)
    np.testing.assert_array_equal(out, expected.astype(np.int16))


def test_a_manifest_naming_another_instance_at_an_offset_is_pixels_gone(tmp_path: Path) -> None:
    """The bytes at an instance's offset are another instance (its blob written anew since):
    PixelsGone, never a slice read under the wrong SOP Instance UID."""
    manifest, _, _ = _stored_series(tmp_path, reverse=False)
    first, second, *rest = manifest.instances
    swapped = (
        first.model_copy(update={"offset": second.offset, "size_bytes": second.size_bytes}),
        second,
        *rest,
    )
    with pytest.raises(PixelsGone, match="holds another instance"):
        read_volume(BlobStore(tmp_path), manifest.model_copy(update={"instances": swapped}))
