"""The synthetic CT phantom generator (samples/phantoms/)."""

from __future__ import annotations

import numpy as np
import pytest

from samples.phantoms import Phantom, chest_ct, head_ct


def _values_at(phantom: Phantom, center: tuple[float, float, float]) -> np.ndarray:
    """The 3x3 in-plane neighbourhood around the voxel nearest to ``center``."""
    z, y, x = (round(c) for c in center)
    return phantom.volume_hu[z, y - 1 : y + 2, x - 1 : x + 2]


def test_same_seed_gives_identical_volumes_and_truth() -> None:
    """Generation is deterministic: the same seed and arguments give the same phantom."""
    a, b = head_ct(3, bleed=True), head_ct(3, bleed=True)
    assert np.array_equal(a.volume_hu, b.volume_hu)
    assert a.lesions == b.lesions and a.spacing_mm == b.spacing_mm
    c, d = chest_ct(3, nodules=2), chest_ct(3, nodules=2)
    assert np.array_equal(c.volume_hu, d.volume_hu)
    assert c.lesions == d.lesions


def test_different_seeds_give_different_volumes() -> None:
    """Another seed changes the anatomy and the noise."""
    assert not np.array_equal(head_ct(1).volume_hu, head_ct(2).volume_hu)


@pytest.mark.parametrize(("slices", "size"), [(32, 256), (8, 64), (40, 128)])
def test_shapes_dtypes_and_spacing(slices: int, size: int) -> None:
    """Volumes are int16 (slices, size, size); spacing keeps a realistic field of view."""
    head = head_ct(0, slices=slices, size=size)
    chest = chest_ct(0, slices=slices, size=size)
    for phantom, fov in ((head, 220.0), (chest, 350.0)):
        assert phantom.volume_hu.dtype == np.int16
        assert phantom.volume_hu.shape == (slices, size, size)
        dz, dy, dx = phantom.spacing_mm
        assert dy == dx == pytest.approx(fov / size)
        assert dz * slices == pytest.approx(160.0)
    assert head.body_part == "HEAD" and chest.body_part == "CHEST"
    assert head_ct(0, slices=32).spacing_mm[0] == pytest.approx(5.0)


def test_head_has_air_skull_and_brain_densities() -> None:
    """Corners are air, the skull reaches bone density, the brain centre is 20-45 HU."""
    head = head_ct(4)
    vol = head.volume_hu
    assert vol[:, :4, :4].mean() < -950
    assert vol.max() > 700
    mid = vol[12, 118:138, 118:138]
    assert 20 <= float(np.median(mid)) <= 45
    assert head.lesions == ()


@pytest.mark.parametrize("seed", range(5))
def test_bleed_ground_truth_is_inside_the_volume_and_hyperdense(seed: int) -> None:
    """The bleed's centroid lies inside the volume, its voxels read 55-80 HU, it is a few mL."""
    head = head_ct(seed, bleed=True)
    (bleed,) = head.lesions
    assert bleed.kind == "bleed"
    for c, n in zip(bleed.center_voxel, head.volume_hu.shape, strict=True):
        assert 0 <= c <= n - 1
    assert 50 <= float(np.median(_values_at(head, bleed.center_voxel))) <= 90
    assert 1.0 <= bleed.volume_ml <= 15.0
    expected = 2 * (3 * bleed.volume_ml * 1000 / (4 * np.pi)) ** (1 / 3)
    assert bleed.diameter_mm == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(4))
def test_nodules_are_inside_the_lungs_at_soft_tissue_density(seed: int) -> None:
    """Each nodule's centroid is inside the volume, 4-20 mm, denser than the surrounding lung."""
    chest = chest_ct(seed, nodules=3)
    assert len(chest.lesions) == 3
    for nodule in chest.lesions:
        assert nodule.kind == "nodule"
        for c, n in zip(nodule.center_voxel, chest.volume_hu.shape, strict=True):
            assert 0 <= c <= n - 1
        assert 3.5 <= nodule.diameter_mm <= 21.0
        core = float(np.max(_values_at(chest, nodule.center_voxel)))
        assert core > -450  # the partial volume of thick slices dims the smallest ones
        if nodule.diameter_mm >= 10:
            assert -120 <= float(np.median(_values_at(chest, nodule.center_voxel))) <= 130
        # lung parenchyma ~16 mm away along the row is air-like
        z, y, x = (round(c) for c in nodule.center_voxel)
        ring = [chest.volume_hu[z, y, x + s] for s in (-12, 12) if 0 <= x + s < 256]
        assert min(ring) < -500


def test_clean_chest_has_lungs_bone_and_no_lesions() -> None:
    """A chest without nodules: lung-density voxels (~-850 HU), spine bone, no ground truth."""
    chest = chest_ct(9)
    vol = chest.volume_hu
    assert chest.lesions == ()
    lung = vol[(vol < -700) & (vol > -950)]
    assert lung.size > 0.05 * vol.size
    assert -880 <= float(np.median(lung)) <= -800
    assert vol.max() > 500


def test_large_volume_generation_is_vectorised_enough() -> None:
    """A 64 x 512 x 512 head builds in well under a minute (300 slices scale linearly)."""
    import time  # noqa: PLC0415

    started = time.perf_counter()
    head = head_ct(1, slices=64, size=512, bleed=True)
    assert head.volume_hu.shape == (64, 512, 512)
    assert time.perf_counter() - started < 30
