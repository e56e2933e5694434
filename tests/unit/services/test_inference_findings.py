"""services.inference.findings: model outputs become findings exactly as the registry says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.inference.findings import decode_findings, output_names
from shared.errors import PermanentError
from shared.registry import load_registry

REGISTRY = load_registry(Path(__file__).resolve().parents[3] / "registry" / "models.yaml")
ICH = REGISTRY.get("ich-reference", "1")
NODULES = REGISTRY.get("lung-nodule-reference", "1")


def test_bleed_above_threshold_gives_a_present_finding_with_its_volume() -> None:
    """Probability 0.93 ≥ 0.5: hemorrhage present at the centroid, with its volume in mL."""
    outputs = {
        "probability": np.array([0.93], dtype=np.float32),
        "volume_ml": np.array([4.25], dtype=np.float32),
        "centroid": np.array([12.0, 100.5, 80.0], dtype=np.float32),
        "bbox": np.zeros(6, dtype=np.int32),
    }
    findings = decode_findings(ICH, outputs, "1.2.3", ())
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
    findings = decode_findings(ICH, outputs, "1.2.3", ())
    assert [(f.finding_key, f.present) for f in findings] == [("intracranial-hemorrhage", False)]


def test_each_nodule_above_threshold_is_a_finding_with_its_diameter() -> None:
    """Three candidates, two above threshold: two nodules (index 0, 1) each with a diameter."""
    outputs = {
        "centroids": np.array([[5, 40, 60], [9, 70, 90], [20, 30, 30]], dtype=np.float32),
        "diameters_mm": np.array([8.0, 4.0, 12.5], dtype=np.float32),
        "probabilities": np.array([0.9, 0.3, 0.7], dtype=np.float32),
    }
    findings = decode_findings(NODULES, outputs, "1.2.3", ())
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
    findings = decode_findings(NODULES, outputs, "1.2.3", ())
    assert [(f.finding_key, f.present, f.index) for f in findings] == [("lung-nodule", False, 0)]


def test_missing_output_tensor_is_a_permanent_error_naming_it() -> None:
    """A model that does not return what the registry maps is a mapping error, not a retry."""
    with pytest.raises(PermanentError, match="returned no output 'volume_ml'"):
        decode_findings(
            ICH,
            {"probability": np.array([0.9]), "centroid": np.zeros(3)},
            "1.2.3",
            (),
        )


def test_output_names_lists_every_tensor_the_registry_reads() -> None:
    """The inference request asks for exactly the mapped outputs."""
    assert output_names(ICH) == ["probability", "centroid", "volume_ml"]


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
    findings = decode_findings(NODULES, outputs, "1.2.3", uids)
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
        uids,
    )
    assert [f.sop_instance_uids for f in negative] == [()]
