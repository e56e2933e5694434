"""Model outputs → findings, as the registry maps them (pure logic, no I/O).

- presence finding, one per study: present when the output probability reaches the threshold;
- presence finding per lesion: one finding per lesion at or above the threshold (in the model's
  order); when there is none, one negative finding (index 0) carrying the highest probability;
- quantity finding: its value, only where the presence finding it depends on is present (the
  hemorrhage volume of a present bleed; the diameter of each reported nodule).

A present finding with a location (its centre voxel, z y x in the model's input) is placed in
the series volume (slices ordered by position; the input may start further in, when the
registry caps the slices), names the SOP Instance UID of the slice it lies on and, when the
series has one frame of reference, its centre in patient coordinates (mm); a quantity finding
names the slice of the finding it measures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from services.inference.volumes import Geometry
from shared.errors import PermanentError
from shared.masks import box_shape, pack_mask
from shared.messages import Finding, FindingMask
from shared.registry import FindingMapping, ModelEntry

__all__ = ["Placement", "decode_findings", "output_names"]


@dataclass(frozen=True)
class Placement:
    """Where the model's input lies in the series: the volume's slices (their SOP Instance
    UIDs, in volume order), the slice the input starts at, and the volume's geometry."""

    sop_instance_uids: tuple[str, ...]
    first_slice: int = 0
    geometry: Geometry | None = None


def output_names(model: ModelEntry) -> list[str]:
    """Every output tensor the registry reads for this model."""
    names: list[str] = []
    for mapping in model.findings:
        for name in (
            mapping.output,
            mapping.location_output,
            mapping.mask_output,
            mapping.mask_box_output,
        ):
            if name is not None and name not in names:
                names.append(name)
    return names


def _tensor(
    outputs: dict[str, npt.NDArray[Any]], name: str | None, model: ModelEntry
) -> npt.NDArray[Any]:
    try:
        return outputs[name or ""]  # a model's findings all name one (ModelEntry checks)
    except KeyError:
        raise PermanentError(
            f"model {model.id} {model.version} returned no output {name!r} "
            f"(got {sorted(outputs)}); the registry mapping does not fit the model"
        ) from None


def _centre(locations: npt.NDArray[Any] | None, row: int) -> tuple[float, float, float] | None:
    if locations is None or locations.size == 0:
        return None
    point = np.asarray(locations, dtype=np.float64).reshape(-1, 3)[row]
    return (float(point[0]), float(point[1]), float(point[2]))


def decode_findings(
    model: ModelEntry,
    outputs: dict[str, npt.NDArray[Any]],
    series_instance_uid: str,
    placement: Placement,
) -> tuple[Finding, ...]:
    """The findings of one model run, in registry order."""
    positive_rows: dict[str, list[int]] = {}
    slices: dict[str, list[tuple[str, ...]]] = {}  # finding key → key slice of each positive row
    findings: list[Finding] = []
    for mapping in model.findings:
        values = np.asarray(_tensor(outputs, mapping.output, model), dtype=np.float64).ravel()
        locations = (
            _tensor(outputs, mapping.location_output, model) if mapping.location_output else None
        )
        if mapping.value_type == "presence":
            found = _presence(mapping, values, locations, positive_rows, series_instance_uid)
            found = [_placed(finding, placement) for finding in found]
            if mapping.mask_output is not None and found[0].present:
                found[0] = _masked(found[0], mapping, outputs, model, placement)
            slices[mapping.key] = [f.sop_instance_uids for f in found if f.present]
            findings.extend(found)
        else:
            measured = slices.get(mapping.depends_on or "", [])
            findings.extend(
                finding.model_copy(update={"sop_instance_uids": measured[finding.index]})
                if finding.index < len(measured)
                else finding
                for finding in _quantity(mapping, values, positive_rows, series_instance_uid)
            )
    return tuple(findings)


def _placed(finding: Finding, placement: Placement) -> Finding:
    """The finding with its centre in volume indices, the SOP Instance UID of the slice it lies
    on and its centre in patient coordinates (none without a centre; a centre outside the
    volume is the model's error, and no slice is named for it)."""
    if finding.center_voxel is None:
        return finding
    z, y, x = finding.center_voxel
    centre = (z + placement.first_slice, y, x)
    update: dict[str, Any] = {"center_voxel": centre}
    uids = placement.sop_instance_uids
    if not 0 <= round(centre[0]) < len(uids):
        return finding.model_copy(update=update)
    update["sop_instance_uids"] = (uids[round(centre[0])],)
    geometry = placement.geometry
    if geometry is not None and geometry.frame_of_reference_uid is not None:
        update["center_patient"] = geometry.patient_point(centre)
        update["frame_of_reference_uid"] = geometry.frame_of_reference_uid
    return finding.model_copy(update=update)


def _masked(
    finding: Finding,
    mapping: FindingMapping,
    outputs: dict[str, npt.NDArray[Any]],
    model: ModelEntry,
    placement: Placement,
) -> Finding:
    """The finding with the mask the model segmented it by, its box in volume indices and the
    image of each of its slices (unchanged when the model gives an empty mask)."""
    mask = np.asarray(_tensor(outputs, mapping.mask_output, model))
    box = [int(v) for v in np.asarray(_tensor(outputs, mapping.mask_box_output, model)).ravel()]
    if len(box) != 6 or min(box) < 0 or not mask.any():
        return finding
    z0, y0, x0, z1, y1, x1 = box
    z0, z1 = z0 + placement.first_slice, z1 + placement.first_slice
    if mask.shape != box_shape((z0, y0, x0, z1, y1, x1)) or z1 >= len(placement.sop_instance_uids):
        raise PermanentError(
            f"model {model.id} {model.version} returned a {mask.shape} mask for the box {box} of "
            f"a {len(placement.sop_instance_uids)}-slice volume; the registry mapping does not "
            "fit the model"
        )
    return finding.model_copy(
        update={
            "mask": FindingMask(
                box=(z0, y0, x0, z1, y1, x1),
                sop_instance_uids=placement.sop_instance_uids[z0 : z1 + 1],
                bits=pack_mask(mask),
            )
        }
    )


def _presence(
    mapping: FindingMapping,
    values: npt.NDArray[np.float64],
    locations: npt.NDArray[Any] | None,
    positive_rows: dict[str, list[int]],
    series_instance_uid: str,
) -> list[Finding]:
    threshold = mapping.threshold if mapping.threshold is not None else 0.5
    rows = [row for row, value in enumerate(values) if value >= threshold]
    if not mapping.per_lesion:
        rows = rows[:1]
    positive_rows[mapping.key] = rows
    if not rows:
        highest = float(values.max()) if values.size else 0.0
        return [
            Finding(
                finding_key=mapping.key,
                index=0,
                present=False,
                probability=round(highest, 4),
                series_instance_uid=series_instance_uid,
            )
        ]
    return [
        Finding(
            finding_key=mapping.key,
            index=index,
            present=True,
            probability=round(float(values[row]), 4),
            center_voxel=_centre(locations, row),
            series_instance_uid=series_instance_uid,
        )
        for index, row in enumerate(rows)
    ]


def _quantity(
    mapping: FindingMapping,
    values: npt.NDArray[np.float64],
    positive_rows: dict[str, list[int]],
    series_instance_uid: str,
) -> list[Finding]:
    rows = positive_rows.get(mapping.depends_on or "", [])
    return [
        Finding(
            finding_key=mapping.key,
            index=index,
            present=True,
            value=round(float(values[row]), 2),
            unit=mapping.unit,
            series_instance_uid=series_instance_uid,
        )
        for index, row in enumerate(rows)
        if row < values.size
    ]
