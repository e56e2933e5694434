"""A fetched CT series → one volume in Hounsfield units, slice 0 most inferior, with its spacing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom

from shared.errors import InvalidMessage
from shared.messages import SeriesManifest
from shared.registry import Preprocessing
from shared.storage import BlobStore

__all__ = ["Volume", "prepare_input", "read_volume"]


@dataclass(frozen=True)
class Volume:
    hounsfield: npt.NDArray[np.int16]  # (slices, rows, columns)
    spacing_mm: tuple[float, float, float]  # (slice, row, column)
    sop_instance_uids: tuple[str, ...]  # per slice, in volume order


def read_volume(store: BlobStore, series: SeriesManifest) -> Volume:
    """Read every instance, order slices along the patient axis, convert stored values to HU."""
    slices: list[tuple[float, str, npt.NDArray[np.int16]]] = []
    pixel_spacing: Sequence[Any] | None = None
    for instance in series.instances:
        dataset = pydicom.dcmread(store.existing_path(instance.blob_key))
        if "PixelData" not in dataset:
            continue
        position = dataset.get("ImagePositionPatient")
        if position is None:
            raise InvalidMessage(
                f"instance {instance.sop_instance_uid} has no ImagePositionPatient"
            )
        pixel_spacing = dataset.get("PixelSpacing", pixel_spacing)
        slope = float(dataset.get("RescaleSlope", 1))
        intercept = float(dataset.get("RescaleIntercept", 0))
        hounsfield = dataset.pixel_array.astype(np.float32) * slope + intercept
        # Kept as int16 per slice: a 300×512×512 series needs 150 MB, not 300 MB of float32.
        slices.append(
            (
                float(position[2]),
                instance.sop_instance_uid,
                np.rint(np.clip(hounsfield, -32768, 32767)).astype(np.int16),
            )
        )
    if len(slices) < 2 or pixel_spacing is None:
        raise InvalidMessage(
            f"series {series.series_instance_uid} has {len(slices)} image slices; a volume needs 2+"
        )
    slices.sort(key=lambda item: item[0])
    shapes = {item[2].shape for item in slices}
    if len(shapes) != 1:
        raise InvalidMessage(
            f"series {series.series_instance_uid} mixes image sizes {sorted(shapes)}"
        )
    gaps = np.diff([item[0] for item in slices])
    slice_spacing = float(np.median(np.abs(gaps)))
    if slice_spacing <= 0:
        raise InvalidMessage(f"series {series.series_instance_uid} has coincident slice positions")
    return Volume(
        hounsfield=np.stack([item[2] for item in slices]),
        spacing_mm=(slice_spacing, float(pixel_spacing[0]), float(pixel_spacing[1])),
        sop_instance_uids=tuple(item[1] for item in slices),
    )


def prepare_input(volume: Volume, preprocessing: Preprocessing) -> dict[str, npt.NDArray[Any]]:
    """The model's input tensors as the registry declares them (window, slice cap, datatype)."""
    data: npt.NDArray[Any] = volume.hounsfield
    if preprocessing.max_slices is not None and data.shape[0] > preprocessing.max_slices:
        start = (data.shape[0] - preprocessing.max_slices) // 2
        data = data[start : start + preprocessing.max_slices]
    if preprocessing.window is not None:
        center, width = preprocessing.window
        low, high = center - width / 2, center + width / 2
        data = (np.clip(data.astype(np.float32), low, high) - low) / (high - low)
    tensors: dict[str, npt.NDArray[Any]] = {
        preprocessing.input_name: data.astype(
            np.int16 if preprocessing.datatype == "INT16" else np.float32
        )
    }
    if preprocessing.spacing_input_name is not None:
        tensors[preprocessing.spacing_input_name] = np.asarray(volume.spacing_mm, dtype=np.float32)
    return tensors
