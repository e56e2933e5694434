"""A fetched CT series → one volume in Hounsfield units, slice 0 most inferior, with its spacing
and what a reader should know about its quality (compression, slice spacing).

Single-frame series (one instance per slice) and enhanced multi-frame CT (one instance, its
frames placed by the Per-frame Functional Groups' Plane Position) are both read. Compressed
pixel data is decoded by pydicom's plugins (pylibjpeg: JPEG baseline/lossless/LS, JPEG 2000,
RLE). What cannot make one volume (fewer than 2 slices, mixed image sizes or orientations,
coincident positions) is an InvalidMessage saying so."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from services.inference.image_header import ImageHeader, image_header
from shared.errors import InvalidMessage
from shared.messages import SeriesManifest
from shared.registry import Preprocessing
from shared.storage import BlobStore, PixelsGone

__all__ = [
    "Geometry",
    "InputQuality",
    "Volume",
    "first_input_slice",
    "prepare_input",
    "read_volume",
]

# Transfer syntaxes whose compression loses information (PS3.5 §8, Annex A.4).
LOSSY_TRANSFER_SYNTAXES = {
    "1.2.840.10008.1.2.4.50": "JPEG Baseline",
    "1.2.840.10008.1.2.4.51": "JPEG Extended",
    "1.2.840.10008.1.2.4.81": "JPEG-LS Near-Lossless",
    "1.2.840.10008.1.2.4.91": "JPEG 2000",
    "1.2.840.10008.1.2.4.203": "High-Throughput JPEG 2000",
}

_NATIVE_LITTLE_ENDIAN = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})


@dataclass(frozen=True)
class InputQuality:
    """Facts about the input a model's input checks judge (services/inference/input_checks.py)."""

    lossy: str | None = None  # why the pixels are lossy-compressed; None: they are not
    spacings_mm: tuple[float, ...] = ()  # the distances between consecutive slices


@dataclass(frozen=True)
class Geometry:
    """Where the volume lies in the patient: each slice's Image Position (Patient), in volume
    order, and the in-plane axes and spacing every slice shares (PS3.3 C.7.6.2.1.1)."""

    positions: tuple[tuple[float, float, float], ...]  # mm, of each slice's first pixel
    row_direction: tuple[float, float, float]  # along a row: increasing column index (x)
    column_direction: tuple[float, float, float]  # down a column: increasing row index (y)
    row_spacing_mm: float  # between rows (Pixel Spacing's first value)
    column_spacing_mm: float  # between columns (its second)
    frame_of_reference_uid: str | None

    def patient_point(self, voxel: tuple[float, float, float]) -> tuple[float, float, float]:
        """A (z, y, x) voxel position, fractions allowed, in the DICOM patient coordinate
        system (mm): between two slices the position is interpolated; outside the volume,
        ValueError."""
        z, y, x = voxel
        last = len(self.positions) - 1
        if not 0 <= z <= last:
            raise ValueError(f"slice {z:g} is outside the volume's {last + 1} slices")
        below = min(int(z), last - 1) if last else 0
        weight = z - below
        origin = (1 - weight) * np.asarray(self.positions[below]) + weight * np.asarray(
            self.positions[min(below + 1, last)]
        )
        point = (
            origin
            + x * self.column_spacing_mm * np.asarray(self.row_direction)
            + y * self.row_spacing_mm * np.asarray(self.column_direction)
        )
        return (round(float(point[0]), 3), round(float(point[1]), 3), round(float(point[2]), 3))


@dataclass(frozen=True)
class Volume:
    hounsfield: npt.NDArray[np.int16]  # (slices, rows, columns)
    spacing_mm: tuple[float, float, float]  # (slice, row, column)
    sop_instance_uids: tuple[str, ...]  # per slice, in volume order
    quality: InputQuality = InputQuality()
    geometry: Geometry | None = None


@dataclass(frozen=True)
class _Slice:
    """Where one slice lies; its pixels are in the volume buffer, in the same reading order."""

    position: tuple[float, float, float]
    orientation: tuple[float, ...]
    sop_instance_uid: str
    shape: tuple[int, ...]


def _to_hounsfield(
    stored: npt.NDArray[Any], slope: float, intercept: float, out: npt.NDArray[np.int16]
) -> None:
    """Stored values → HU, written into `out` (one slice of the volume): integer arithmetic
    for the usual slope 1 and whole intercept, float32 otherwise; clipped to int16. When every
    16-bit value plus the intercept stays within int16 (CT's usual case, told by the slice's
    own minimum and maximum), one int16 addition straight into `out`, no temporary."""
    if slope == 1 and float(intercept).is_integer():
        shift = int(intercept)
        if (
            stored.dtype.kind in "iu"
            and stored.dtype.itemsize == 2
            and stored.dtype.isnative  # the view below reads the bytes as they lie
            and -32768 <= shift <= 32767
        ):
            low, high = int(stored.min()), int(stored.max())
            if low + shift >= -32768 and high + shift <= 32767:
                # int16 addition wraps modulo 2**16: exact when the true sum fits, whichever
                # way the 16 stored bits are read
                np.add(stored.view(np.int16), np.int16(shift), out=out)
                return
        whole = stored.astype(np.int32)
        whole += int(intercept)
        np.clip(whole, -32768, 32767, out=whole)
        out[...] = whole
        return
    scaled = stored.astype(np.float32)
    np.multiply(scaled, np.float32(slope), out=scaled)
    np.add(scaled, np.float32(intercept), out=scaled)
    np.rint(scaled, out=scaled)
    np.clip(scaled, -32768, 32767, out=scaled)
    out[...] = scaled


def _triple(value: Any, what: str, sop: str) -> tuple[float, ...]:
    if value is None:
        raise InvalidMessage(f"instance {sop} has no {what}")
    return tuple(float(v) for v in value)


def _native_pixels(dataset: Dataset) -> npt.NDArray[Any] | None:
    """The stored values of uncompressed little-endian 16-bit single-sample pixel data (CT's
    usual form), read straight from its bytes: what `pixel_array` returns for it (unused high
    bits masked, or sign-extended when signed), without the decoder's per-instance set-up.
    None for any other form (pydicom decodes those)."""
    file_meta = getattr(dataset, "file_meta", None)
    syntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if (
        syntax not in _NATIVE_LITTLE_ENDIAN
        or dataset.get("BitsAllocated") != 16
        or dataset.get("SamplesPerPixel", 1) != 1
    ):
        return None
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    rows, columns = int(dataset.Rows), int(dataset.Columns)
    data = dataset.PixelData
    if len(data) < frames * rows * columns * 2:
        return None  # too short: pydicom says what is wrong
    shape = (rows, columns) if frames == 1 else (frames, rows, columns)
    signed = dataset.get("PixelRepresentation", 0) == 1
    return _stored_values(data, 0, shape, signed, int(dataset.get("BitsStored", 16)))


def _stored_values(
    data: bytes, offset: int, shape: tuple[int, ...], signed: bool, bits_stored: int
) -> npt.NDArray[Any]:
    """Little-endian 16-bit stored values from `offset` of `data`, as `pixel_array` gives them
    (unused high bits masked, or sign-extended when signed)."""
    count = int(np.prod(shape))
    values = np.frombuffer(data, dtype="<i2" if signed else "<u2", count=count, offset=offset)
    values = values.reshape(shape)
    if 0 < bits_stored < 16 and not _within_bits(values, bits_stored, signed=signed):
        unused = 16 - bits_stored
        values = (values << unused) >> unused if signed else values & ((1 << bits_stored) - 1)
    return values


def _within_bits(values: npt.NDArray[Any], bits_stored: int, *, signed: bool) -> bool:
    """Whether every value already is what its low `bits_stored` bits say (the usual case: no
    overlay or garbage in the high bits), so nothing needs masking or sign extension."""
    low, high = int(values.min()), int(values.max())
    if signed:
        return -(1 << (bits_stored - 1)) <= low and high < 1 << (bits_stored - 1)
    return high < 1 << bits_stored


def _pixels(dataset: Dataset, sop: str) -> npt.NDArray[Any]:
    native = _native_pixels(dataset)
    if native is not None:
        return native
    try:
        return dataset.pixel_array
    except Exception as error:  # a decoder's own error types; the message names the syntax
        syntax = UID(str(dataset.file_meta.get("TransferSyntaxUID", "")))
        raise InvalidMessage(
            f"instance {sop}: pixel data in {syntax.name or syntax} cannot be decoded ({error})"
        ) from error


@dataclass(frozen=True)
class _Frame:
    position: tuple[float, float, float]
    orientation: tuple[float, ...]
    pixels: npt.NDArray[Any]  # stored values
    slope: float
    intercept: float


def _frames(dataset: Dataset, sop: str) -> Iterator[_Frame]:
    """The slices of one instance: itself, or each frame of an enhanced multi-frame image."""
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    pixels = _pixels(dataset, sop)
    if frames == 1 or "PerFrameFunctionalGroupsSequence" not in dataset:
        yield _Frame(
            _triple(dataset.get("ImagePositionPatient"), "ImagePositionPatient", sop),  # type: ignore[arg-type]
            _triple(dataset.get("ImageOrientationPatient", [1, 0, 0, 0, 1, 0]), "", sop),
            pixels,
            float(dataset.get("RescaleSlope", 1)),
            float(dataset.get("RescaleIntercept", 0)),
        )
        return
    shared = (dataset.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]
    for index, frame in enumerate(dataset.PerFrameFunctionalGroupsSequence):

        def group(name: str, frame: Dataset = frame) -> Dataset:
            found = frame.get(name) or shared.get(name)
            return found[0] if found else Dataset()

        position = group("PlanePositionSequence").get("ImagePositionPatient")
        orientation = group("PlaneOrientationSequence").get("ImageOrientationPatient")
        transform = group("PixelValueTransformationSequence")
        yield _Frame(
            _triple(position, f"ImagePositionPatient for frame {index + 1}", sop),  # type: ignore[arg-type]
            _triple(orientation or [1, 0, 0, 0, 1, 0], "", sop),
            pixels[index],
            float(transform.get("RescaleSlope", 1)),
            float(transform.get("RescaleIntercept", 0)),
        )


class _VolumeBuffer:
    """The volume's int16 array, allocated once at the first slice for as many slices as the
    series can hold (instances × frames of the first), filled slice by slice in reading order;
    grown only when a later instance holds more frames than the first."""

    def __init__(self) -> None:
        self.array: npt.NDArray[np.int16] | None = None
        self.count = 0

    def add(self, frame: _Frame, capacity: int) -> None:
        if self.array is None:
            self.array = np.empty((capacity, *frame.pixels.shape), dtype=np.int16)
        elif frame.pixels.shape != self.array.shape[1:]:
            return  # told apart by the caller (mixed image sizes)
        elif self.count == len(self.array):
            grown = np.empty((2 * len(self.array), *self.array.shape[1:]), dtype=np.int16)
            grown[: self.count] = self.array
            self.array = grown
        _to_hounsfield(frame.pixels, frame.slope, frame.intercept, self.array[self.count])
        self.count += 1


def _reorder_in_place(array: npt.NDArray[Any], order: Sequence[int]) -> None:
    """array[i] = array[order[i]] for every i, moving slices along the permutation's cycles
    with one slice of scratch space (no second volume)."""
    placed = [False] * len(order)
    for start in range(len(order)):
        if placed[start] or order[start] == start:
            continue
        scratch = array[start].copy()
        position = start
        while True:
            placed[position] = True
            source = order[position]
            if source == start:
                array[position] = scratch
                break
            array[position] = array[source]
            position = source


def _pixel_spacing(dataset: Dataset) -> Sequence[Any] | None:
    if "PixelSpacing" in dataset:
        return dataset.PixelSpacing  # type: ignore[no-any-return]
    shared = (dataset.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]
    measures = shared.get("PixelMeasuresSequence")
    return measures[0].get("PixelSpacing") if measures else None


def _lossy(dataset: Dataset) -> str | None:
    return _lossy_text(
        str(dataset.file_meta.get("TransferSyntaxUID", "")),
        str(dataset.get("LossyImageCompression", "")),
        dataset.get("LossyImageCompressionRatio"),
    )


def _lossy_text(syntax: str, lossy_image_compression: str | None, ratio: Any) -> str | None:
    """Why the pixels are lossy-compressed (the transfer syntax, or Lossy Image Compression
    01 from earlier in their life); None when they are not."""
    if syntax in LOSSY_TRANSFER_SYNTAXES:
        return f"{LOSSY_TRANSFER_SYNTAXES[syntax]} compression (transfer syntax {syntax})"
    if lossy_image_compression == "01":
        return "lossy compression earlier in its life (Lossy Image Compression 01" + (
            f", ratio {ratio})" if ratio else ")"
        )
    return None


@dataclass(frozen=True)
class _Instance:
    """One instance's slices and what the volume takes from it."""

    frames: Sequence[_Frame]
    frame_count: int  # frames of the instance: how many slices the volume may need per instance
    pixel_spacing: Sequence[Any] | None
    frame_of_reference_uid: str | None
    lossy: str | None


def _walked_instance(header: ImageHeader, data: bytes) -> _Instance:
    """The usual CT slice, from its walked header (image_header.py) and its bytes."""
    pixels = _stored_values(
        data,
        header.pixel_offset,
        (header.rows, header.columns),
        header.signed,
        header.bits_stored,
    )
    if header.position is None:
        raise InvalidMessage(f"instance {header.sop_instance_uid} has no ImagePositionPatient")
    frame = _Frame(header.position, header.orientation, pixels, header.slope, header.intercept)
    return _Instance(
        frames=(frame,),
        frame_count=1,
        pixel_spacing=header.pixel_spacing,
        frame_of_reference_uid=header.frame_of_reference_uid,
        lossy=_lossy_text(
            str(ExplicitVRLittleEndian),
            header.lossy_image_compression,
            header.lossy_image_compression_ratio,
        ),
    )


def _read_instance(data: bytes, expected_sop_instance_uid: str) -> tuple[str, _Instance | None]:
    """(the SOP Instance UID the bytes hold, its slices; None when it has no pixel data),
    walked for the usual CT slice, through pydicom for any other."""
    header = image_header(data)
    if header is not None:
        if header.sop_instance_uid != expected_sop_instance_uid:
            return header.sop_instance_uid, None
        return header.sop_instance_uid, _walked_instance(header, data)
    dataset = pydicom.dcmread(io.BytesIO(data))
    sop = str(dataset.get("SOPInstanceUID", ""))
    if sop != expected_sop_instance_uid or "PixelData" not in dataset:
        return sop, None
    return sop, _Instance(
        frames=list(_frames(dataset, expected_sop_instance_uid)),
        frame_count=int(dataset.get("NumberOfFrames", 1) or 1),
        pixel_spacing=_pixel_spacing(dataset),
        frame_of_reference_uid=str(dataset.FrameOfReferenceUID)
        if dataset.get("FrameOfReferenceUID")
        else None,
        lossy=_lossy(dataset),
    )


def read_volume(store: BlobStore, series: SeriesManifest) -> Volume:
    """Read every instance, order slices along the patient axis, convert stored values to HU,
    into one preallocated int16 array (the volume's only full-size copy)."""
    slices: list[_Slice] = []
    buffer = _VolumeBuffer()
    pixel_spacing: Sequence[Any] | None = None
    lossy: str | None = None
    frames_of_reference: set[str] = set()
    for instance in series.instances:
        data = store.read_range(instance.blob_key, instance.offset, instance.size_bytes)
        sop, read = _read_instance(data, instance.sop_instance_uid)
        if sop != instance.sop_instance_uid:
            raise PixelsGone(
                f"blob {instance.blob_key} at offset {instance.offset} holds another instance "
                f"than {instance.sop_instance_uid}, the one its manifest names: the model does "
                "not read it; replay the study's study.detected to fetch its pixels again"
            )
        if read is None:
            continue
        pixel_spacing = read.pixel_spacing or pixel_spacing
        if read.frame_of_reference_uid:
            frames_of_reference.add(read.frame_of_reference_uid)
        lossy = lossy or read.lossy
        capacity = len(series.instances) * read.frame_count
        for frame in read.frames:
            slices.append(
                _Slice(
                    frame.position,
                    frame.orientation,
                    instance.sop_instance_uid,
                    tuple(frame.pixels.shape),
                )
            )
            buffer.add(frame, capacity)
        del data, read  # the pixel data is in the volume now
    uid = series.series_instance_uid
    if len(slices) < 2 or pixel_spacing is None or buffer.array is None:
        raise InvalidMessage(f"series {uid} has {len(slices)} image slices; a volume needs 2+")
    orientations = {tuple(round(v, 3) for v in s.orientation) for s in slices}
    if len(orientations) != 1:
        raise InvalidMessage(f"series {uid} mixes {len(orientations)} image orientations")
    shapes = {item.shape for item in slices}
    if len(shapes) != 1:
        raise InvalidMessage(f"series {uid} mixes image sizes {sorted(shapes)}")
    normal = np.cross(np.asarray(slices[0].orientation[:3]), np.asarray(slices[0].orientation[3:]))
    along = [float(np.dot(normal, item.position)) for item in slices]
    order = sorted(range(len(slices)), key=along.__getitem__)
    hounsfield = buffer.array[: len(slices)]
    _reorder_in_place(hounsfield, order)
    spacings = np.abs(np.diff([along[index] for index in order]))
    slice_spacing = float(np.median(spacings))
    if slice_spacing <= 0 or float(spacings.min()) <= 0:
        raise InvalidMessage(f"series {uid} has coincident slice positions")
    orientation = slices[0].orientation
    geometry = Geometry(
        positions=tuple(slices[index].position for index in order),
        row_direction=(orientation[0], orientation[1], orientation[2]),
        column_direction=(orientation[3], orientation[4], orientation[5]),
        row_spacing_mm=float(pixel_spacing[0]),
        column_spacing_mm=float(pixel_spacing[1]),
        # one frame of reference, or none to name (coordinates would be ambiguous)
        frame_of_reference_uid=frames_of_reference.pop() if len(frames_of_reference) == 1 else None,
    )
    return Volume(
        hounsfield=hounsfield,
        spacing_mm=(slice_spacing, float(pixel_spacing[0]), float(pixel_spacing[1])),
        sop_instance_uids=tuple(slices[index].sop_instance_uid for index in order),
        quality=InputQuality(lossy=lossy, spacings_mm=tuple(round(float(s), 4) for s in spacings)),
        geometry=geometry,
    )


def first_input_slice(volume: Volume, preprocessing: Preprocessing) -> int:
    """The volume slice the model's input starts at: the middle `max_slices` when the registry
    caps them, else 0 (the model's z indices are counted from here)."""
    slices = volume.hounsfield.shape[0]
    cap = preprocessing.max_slices
    return (slices - cap) // 2 if cap is not None and slices > cap else 0


def prepare_input(volume: Volume, preprocessing: Preprocessing) -> dict[str, npt.NDArray[Any]]:
    """The model's input tensors as the registry declares them (window, slice cap, datatype)."""
    data: npt.NDArray[Any] = volume.hounsfield
    if preprocessing.max_slices is not None:
        start = first_input_slice(volume, preprocessing)
        data = data[start : start + preprocessing.max_slices]
    if preprocessing.window is not None:
        center, width = preprocessing.window
        low, high = center - width / 2, center + width / 2
        data = (np.clip(data.astype(np.float32), low, high) - low) / (high - low)
    tensors: dict[str, npt.NDArray[Any]] = {
        # no copy when the volume already has the declared datatype
        preprocessing.input_name: data.astype(
            np.int16 if preprocessing.datatype == "INT16" else np.float32, copy=False
        )
    }
    if preprocessing.spacing_input_name is not None:
        tensors[preprocessing.spacing_input_name] = np.asarray(volume.spacing_mm, dtype=np.float32)
    return tensors
