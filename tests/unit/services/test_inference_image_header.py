"""services.inference.image_header: a CT slice's attributes walked from its bytes are what the
volume reader takes from pydicom, and every instance the walk does not take goes to pydicom."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ImplicitVRLittleEndian

from samples.dicom_series import describe_study, iter_instances
from samples.phantoms import chest_ct, head_ct
from services.inference import volumes
from services.inference.image_header import image_header
from services.inference.volumes import _read_instance


def _encoded(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _instances(kind: str = "head") -> Iterator[Dataset]:
    phantom = (head_ct if kind == "head" else chest_ct)(seed=11, slices=4, size=32)
    yield from iter_instances(phantom, describe_study(phantom, scenario="walk", seed=11))


def _through_pydicom(
    data: bytes, sop: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, volumes._Instance | None]:
    with monkeypatch.context() as patched:
        patched.setattr(volumes, "image_header", lambda _: None)
        return _read_instance(data, sop)


def _same(walked: volumes._Instance | None, read: volumes._Instance | None) -> None:
    assert walked is not None and read is not None
    assert (walked.frame_count, walked.frame_of_reference_uid, walked.lossy) == (
        read.frame_count,
        read.frame_of_reference_uid,
        read.lossy,
    )
    assert walked.pixel_spacing is not None and read.pixel_spacing is not None
    assert tuple(walked.pixel_spacing) == tuple(float(v) for v in read.pixel_spacing)
    ((mine, *_), (theirs, *_)) = (walked.frames, read.frames)
    assert (mine.position, mine.orientation, mine.slope, mine.intercept) == (
        theirs.position,
        theirs.orientation,
        theirs.slope,
        theirs.intercept,
    )
    assert mine.pixels.dtype == theirs.pixels.dtype
    np.testing.assert_array_equal(mine.pixels, theirs.pixels)


@pytest.mark.parametrize("kind", ["head", "chest"])
def test_the_usual_ct_slice_is_walked_to_what_pydicom_reads(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every slice of a head and a chest phantom is walked, and gives the same position,
    orientation, rescale, spacing, frame of reference and stored values as pydicom."""
    for dataset in _instances(kind):
        data, sop = _encoded(dataset), str(dataset.SOPInstanceUID)
        assert image_header(data) is not None
        walked_sop, walked = _read_instance(data, sop)
        assert walked_sop == sop
        _same(walked, _through_pydicom(data, sop, monkeypatch)[1])


def _changed(change: Callable[[Dataset], None]) -> Dataset:
    dataset = next(_instances())
    change(dataset)
    return dataset


def _lossy_history(dataset: Dataset) -> None:
    dataset.LossyImageCompression = "01"
    dataset.LossyImageCompressionRatio = "10"


def _signed_twelve_bits_with_high_bits_set(dataset: Dataset) -> None:
    values = np.frombuffer(dataset.PixelData, dtype="<u2").copy()
    values[::3] |= 0xF000  # overlay bits above the 12 stored
    dataset.PixelData = values.tobytes()
    dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 12, 11, 1


def _odd_rescale(dataset: Dataset) -> None:
    dataset.RescaleSlope, dataset.RescaleIntercept = "0.5", "-1024.25"


@pytest.mark.parametrize(
    "change", [_lossy_history, _signed_twelve_bits_with_high_bits_set, _odd_rescale]
)
def test_less_usual_values_are_walked_to_what_pydicom_reads(
    change: Callable[[Dataset], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lossy history with its ratio, signed 12-bit values with overlay bits above them, a
    fractional rescale: walked, and the same as pydicom's reading."""
    dataset = _changed(change)
    data, sop = _encoded(dataset), str(dataset.SOPInstanceUID)
    assert image_header(data) is not None
    _same(_read_instance(data, sop)[1], _through_pydicom(data, sop, monkeypatch)[1])


def _implicit(dataset: Dataset) -> None:
    dataset.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian


def _sequence_of_undefined_length(dataset: Dataset) -> None:
    item = Dataset()
    item.ReferencedSOPInstanceUID = "1.2.3"
    dataset.ReferencedImageSequence = DicomSequence([item])
    dataset["ReferencedImageSequence"].is_undefined_length = True


def _two_frames(dataset: Dataset) -> None:
    dataset.NumberOfFrames = 2


def _eight_bits(dataset: Dataset) -> None:
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 8, 8, 7


def _empty_slope(dataset: Dataset) -> None:
    dataset.RescaleSlope = None


def _not_a_number(dataset: Dataset) -> None:
    dataset.RescaleIntercept = "nan"


def _two_ratios(dataset: Dataset) -> None:
    dataset.LossyImageCompression = "01"
    dataset.LossyImageCompressionRatio = ["10", "5"]


def _short_pixel_data(dataset: Dataset) -> None:
    dataset.PixelData = dataset.PixelData[:100]


def _functional_groups(dataset: Dataset) -> None:
    dataset.SharedFunctionalGroupsSequence = DicomSequence([Dataset()])


@pytest.mark.parametrize(
    "change",
    [
        _implicit,
        _sequence_of_undefined_length,
        _two_frames,
        _eight_bits,
        _empty_slope,
        _not_a_number,
        _two_ratios,
        _short_pixel_data,
        _functional_groups,
    ],
)
def test_what_the_walk_does_not_take_is_left_to_pydicom(change: Callable[[Dataset], None]) -> None:
    """Implicit VR, a sequence of undefined length before the pixels, more than one frame, 8
    bits allocated, an empty rescale slope, a non-finite number, several ratios, pixel data
    shorter than the image, functional groups: no walked header (pydicom reads them, and says
    what is wrong with those it cannot)."""
    assert image_header(_encoded(_changed(change))) is None


def test_the_walk_names_the_instance_the_bytes_hold() -> None:
    """Bytes of another instance than the manifest names are told apart before any pixel is
    read (the reader raises PixelsGone for them)."""
    dataset = next(_instances())
    sop, read = _read_instance(_encoded(dataset), "1.2.3.4")
    assert (sop, read) == (str(dataset.SOPInstanceUID), None)
