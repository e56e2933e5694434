"""services.inference.findings: model outputs become findings exactly as the registry says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.inference.findings import Placement, decode_findings, output_names
from services.inference.volumes import Geometry
from shared.errors import PermanentError
from shared.masks import box_shape, unpack_mask
from shared.registry import load_registry

REGISTRY = load_registry(Path(__file__).resolve().parents[3] / "registry" / "models.yaml")
ICH = REGISTRY.get("ich-reference", "1")
NODULES = REGISTRY.get("lung-nodule-reference", "1")
NOWHERE = Placement(())  # no slices named: the tests of decoding alone


def test_bleed_above_threshold_gives_a_present_finding_with_its_volume() -> None:
    """Probability 0.93 ≥ 0.5: hemorrhage present at the centroid, with its volume in mL."""
    outputs: dict[str, np.ndarray[Any, Any]] = {
        "probability": np.array([0.93], dtype=np.float32),
        "volume_ml": np.array([4.25], dtype=np.float32),
        "centroid": np.array([12.0, 100.5, 80.0], dtype=np.float32),
        "bbox": np.zeros(6, dtype=np.int32),
        "mask": np.zeros((1, 1, 1), dtype=np.uint8),  # empty: no segmentation
    }
    findings = decode_findings(ICH, outputs, "1.2.3", NOWHERE)
    assert [(f.finding_key, f.present) for f in findings] == [
        ("intracranial-hemorrhage", True),
        ("hemorrhage-volume", True),
    ]
    assert findings[0].probability == pytest.approx(0.93, abs=1e-4)
    assert findings[0].center_voxel == (12.0, 100.5, 80.0)
    assert findings[1].value == 4.25
    assert findings[1].unit == "mL"


def test_clean_head_gives_one_negative_finding_and_no_volume() -> None:
    """Below threshold: one absent hemorrhage finding, no volume observation."""
    outputs = {
        "probability": np.array([0.02], dtype=np.float32),
        "volume_ml": np.array([0.0], dtype=np.float32),
        "centroid": np.zeros(3, dtype=np.float32),
    }
    findings = decode_findings(ICH, outputs, "1.2.3", NOWHERE)
    assert [(f.finding_key, f.present) for f in findings] == [("intracranial-hemorrhage", False)]


def test_each_nodule_above_threshold_is_a_finding_with_its_diameter() -> None:
    """Three candidates, two above threshold: two nodules (index 0, 1) each with a diameter."""
    outputs = {
        "centroids": np.array([[5, 40, 60], [9, 70, 90], [20, 30, 30]], dtype=np.float32),
        "diameters_mm": np.array([8.0, 4.0, 12.5], dtype=np.float32),
        "probabilities": np.array([0.9, 0.3, 0.7], dtype=np.float32),
    }
    findings = decode_findings(NODULES, outputs, "1.2.3", NOWHERE)
    nodules = [f for f in findings if f.finding_key == "lung-nodule"]
    diameters = [f for f in findings if f.finding_key == "lung-nodule-diameter"]
    assert [(f.index, f.center_voxel) for f in nodules] == [
        (0, (5.0, 40.0, 60.0)),
        (1, (20.0, 30.0, 30.0)),
    ]
    assert [(f.index, f.value) for f in diameters] == [(0, 8.0), (1, 12.5)]


def test_no_nodules_gives_one_negative_finding() -> None:
    """An empty candidate list is a negative result, not an empty report."""
    outputs = {
        "centroids": np.zeros((0, 3), dtype=np.float32),
        "diameters_mm": np.zeros(0, dtype=np.float32),
        "probabilities": np.zeros(0, dtype=np.float32),
    }
    findings = decode_findings(NODULES, outputs, "1.2.3", NOWHERE)
    assert [(f.finding_key, f.present, f.index) for f in findings] == [("lung-nodule", False, 0)]


def test_missing_output_tensor_is_a_permanent_error_naming_it() -> None:
    """A model that does not return what the registry maps is a mapping error, not a retry."""
    with pytest.raises(PermanentError, match="returned no output 'volume_ml'"):
        decode_findings(
            ICH,
            {
                "probability": np.array([0.9]),
                "centroid": np.zeros(3),
                "bbox": np.full(6, -1),
                "mask": np.zeros((1, 1, 1), dtype=np.uint8),
            },
            "1.2.3",
            NOWHERE,
        )


def test_output_names_lists_every_tensor_the_registry_reads() -> None:
    """The inference request asks for exactly the mapped outputs."""
    assert output_names(ICH) == ["probability", "centroid", "mask", "bbox", "volume_ml"]


def test_a_segmented_bleed_carries_its_mask_box_and_the_image_of_each_box_slice() -> None:
    """The model's mask of its box becomes the finding's mask: the box moved to volume slices
    (the model read from slice 4), the SOP Instance UID of each of its slices, the voxels
    intact; a mask that does not fit its box is the model's error, not a retry."""
    uids = tuple(f"1.2.3.4.{z}" for z in range(24))
    mask = np.zeros((3, 4, 5), dtype=np.uint8)
    mask[1, 1:3, 2:4] = 1
    outputs: dict[str, np.ndarray[Any, Any]] = {
        "probability": np.array([0.9], dtype=np.float32),
        "volume_ml": np.array([1.5], dtype=np.float32),
        "centroid": np.array([6.0, 11.0, 22.0], dtype=np.float32),
        "bbox": np.array([5, 10, 20, 7, 13, 24], dtype=np.int32),
        "mask": mask,
    }
    (bleed, _) = decode_findings(ICH, outputs, "1.2.3", Placement(uids, first_slice=4))
    assert bleed.mask is not None
    assert bleed.mask.box == (9, 10, 20, 11, 13, 24)
    assert bleed.mask.sop_instance_uids == uids[9:12]
    assert (unpack_mask(bleed.mask.bits, box_shape(bleed.mask.box)) == mask).all()
    outputs["mask"] = np.ones((2, 4, 5), dtype=np.uint8)
    with pytest.raises(PermanentError, match="mask for the box"):
        decode_findings(ICH, outputs, "1.2.3", Placement(uids, first_slice=4))


def test_each_located_finding_and_its_measurement_name_the_slice_its_centre_lies_on() -> None:
    """Nodules centred on slices 5 and 20 (of 24, ordered by position) name those slices'
    SOP Instance UIDs, and so do their diameters; a centre outside the volume names none; a
    negative finding names none."""
    uids = tuple(f"1.2.3.4.{z}" for z in range(24))
    outputs = {
        "centroids": np.array([[5.4, 40, 60], [19.6, 30, 30], [31, 1, 1]], dtype=np.float32),
        "diameters_mm": np.array([8.0, 12.5, 3.0], dtype=np.float32),
        "probabilities": np.array([0.9, 0.7, 0.8], dtype=np.float32),
    }
    findings = decode_findings(NODULES, outputs, "1.2.3", Placement(uids))
    slices = [(f.finding_key, f.index, f.sop_instance_uids) for f in findings]
    assert slices == [
        ("lung-nodule", 0, ("1.2.3.4.5",)),
        ("lung-nodule", 1, ("1.2.3.4.20",)),
        ("lung-nodule", 2, ()),
        ("lung-nodule-diameter", 0, ("1.2.3.4.5",)),
        ("lung-nodule-diameter", 1, ("1.2.3.4.20",)),
        ("lung-nodule-diameter", 2, ()),
    ]
    negative = decode_findings(
        NODULES,
        {
            "centroids": np.zeros((0, 3), dtype=np.float32),
            "diameters_mm": np.zeros(0, dtype=np.float32),
            "probabilities": np.zeros(0, dtype=np.float32),
        },
        "1.2.3",
        Placement(uids),
    )
    assert [f.sop_instance_uids for f in negative] == [()]


def _axial_geometry(slices: int, frame_of_reference_uid: str | None = "1.2.3.9") -> Geometry:
    """Axial slices 2.5 mm apart from z = -40 mm, 0.5 mm pixels, first pixel at (-64, -64)."""
    return Geometry(
        positions=tuple((-64.0, -64.0, -40.0 + 2.5 * z) for z in range(slices)),
        row_direction=(1.0, 0.0, 0.0),
        column_direction=(0.0, 1.0, 0.0),
        row_spacing_mm=0.5,
        column_spacing_mm=0.5,
        frame_of_reference_uid=frame_of_reference_uid,
    )


def test_a_located_finding_has_its_centre_in_patient_coordinates_in_the_series_frame() -> None:
    """Centre (z 4.5, y 40, x 60): x = -64 + 60·0.5, y = -64 + 40·0.5, z halfway between slices
    4 and 5 (-30 and -27.5 mm); the finding names the frame of reference."""
    uids = tuple(f"1.2.3.4.{z}" for z in range(24))
    outputs = {
        "centroids": np.array([[4.5, 40, 60]], dtype=np.float32),
        "diameters_mm": np.array([8.0], dtype=np.float32),
        "probabilities": np.array([0.9], dtype=np.float32),
    }
    (nodule, _) = decode_findings(
        NODULES, outputs, "1.2.3", Placement(uids, geometry=_axial_geometry(24))
    )
    assert nodule.center_patient == (-34.0, -44.0, -28.75)
    assert nodule.frame_of_reference_uid == "1.2.3.9"


def test_a_series_without_one_frame_of_reference_gets_no_patient_coordinates() -> None:
    """Coordinates without a frame of reference could not be placed: none are given."""
    uids = tuple(f"1.2.3.4.{z}" for z in range(24))
    outputs = {
        "centroids": np.array([[4, 40, 60]], dtype=np.float32),
        "diameters_mm": np.array([8.0], dtype=np.float32),
        "probabilities": np.array([0.9], dtype=np.float32),
    }
    geometry = _axial_geometry(24, frame_of_reference_uid=None)
    (nodule, _) = decode_findings(NODULES, outputs, "1.2.3", Placement(uids, geometry=geometry))
    assert (nodule.center_patient, nodule.frame_of_reference_uid) == (None, None)
    assert nodule.sop_instance_uids == ("1.2.3.4.4",)


def test_a_model_reading_the_middle_slices_places_its_finding_on_the_right_slice() -> None:
    """The registry capped the input at the middle slices (it starts at volume slice 8): the
    model's slice 3 is volume slice 11, in the voxel centre, the slice named and the point."""
    uids = tuple(f"1.2.3.4.{z}" for z in range(24))
    outputs = {
        "centroids": np.array([[3, 40, 60]], dtype=np.float32),
        "diameters_mm": np.array([8.0], dtype=np.float32),
        "probabilities": np.array([0.9], dtype=np.float32),
    }
    placement = Placement(uids, first_slice=8, geometry=_axial_geometry(24))
    (nodule, diameter) = decode_findings(NODULES, outputs, "1.2.3", placement)
    assert nodule.center_voxel == (11.0, 40.0, 60.0)
    assert nodule.sop_instance_uids == diameter.sop_instance_uids == ("1.2.3.4.11",)
    assert nodule.center_patient == (-34.0, -44.0, -12.5)
