"""Sensitivity and false alarms of the reference models, through the running server, on seeded
synthetic phantoms (samples/phantoms/, 32 x 256 x 256).  Prints the measured figures."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient

from samples.phantoms import Phantom, chest_ct, head_ct
from shared.registry import load_registry
from tests.conftest import Infrastructure

pytestmark = pytest.mark.integration

BLEED_MATCH_MM = 10.0
# The threshold above which the mesh reports a nodule present, as the registry declares it.
PRESENT_THRESHOLD = (
    load_registry(Path(__file__).resolve().parents[2] / "registry" / "models.yaml")
    .get("lung-nodule-reference", "1")
    .finding("lung-nodule")
    .threshold
)


@pytest.fixture(scope="module")
def client(infra: Infrastructure) -> httpclient.InferenceServerClient:
    try:
        requests.get(f"{infra.triton_http_url}/v2/health/ready", timeout=2)
    except requests.ConnectionError:
        pytest.fail(f"model server not reachable at {infra.triton_http_url}; run up.sh")
    return httpclient.InferenceServerClient(
        url=infra.triton_http_url.removeprefix("http://"), network_timeout=120.0
    )


def _infer(
    client: httpclient.InferenceServerClient, model: str, phantom: Phantom
) -> tuple[Any, float]:
    vol = httpclient.InferInput("volume", list(phantom.volume_hu.shape), "INT16")
    vol.set_data_from_numpy(phantom.volume_hu, binary_data=True)
    sp = httpclient.InferInput("spacing", [3], "FP32")
    sp.set_data_from_numpy(np.asarray(phantom.spacing_mm, dtype=np.float32), binary_data=True)
    started = time.perf_counter()
    result = client.infer(model, [vol, sp])
    return result, time.perf_counter() - started


def test_ich_finds_at_least_18_of_20_bleeds_with_at_most_1_false_alarm(
    client: httpclient.InferenceServerClient,
) -> None:
    """20 heads with a bleed and 20 without: a bleed counts as found when the probability is
    > 0.5 and the centroid is within 10 mm of the truth; a false alarm is probability > 0.5 on
    a clean head."""
    found, false_alarms, seconds = 0, 0, 0.0
    for i in range(20):
        bleeding = head_ct(5000 + i, bleed=True)
        result, took = _infer(client, "ich-reference", bleeding)
        seconds += took
        centroid = result.as_numpy("centroid")
        truth = np.array(bleeding.lesions[0].center_voxel)
        distance = float(np.linalg.norm((centroid - truth) * np.array(bleeding.spacing_mm)))
        if float(result.as_numpy("probability")[0]) > 0.5 and distance <= BLEED_MATCH_MM:
            found += 1
        clean = head_ct(6000 + i, bleed=False)
        result, took = _infer(client, "ich-reference", clean)
        seconds += took
        false_alarms += int(float(result.as_numpy("probability")[0]) > 0.5)
    print(
        f"\nich-reference: sensitivity {found}/20, false alarms {false_alarms}/20 clean heads, "
        f"{seconds / 40:.3f} s per 32x256x256 volume (request round trip)"
    )
    assert found >= 18
    assert false_alarms <= 1


def test_lung_nodule_matches_at_least_25_of_30_nodules_with_at_most_2_false_positives(
    client: httpclient.InferenceServerClient,
) -> None:
    """10 chests with 3 nodules each and 10 clean chests: a nodule is matched when a detection
    with a probability above the registry's threshold (0.5) lies within max(6 mm, 0.75 x its
    diameter); any unmatched detection is a false positive."""
    matched, false_positives, nodules, seconds = 0, 0, 0, 0.0
    phantoms = [chest_ct(7000 + i, nodules=3) for i in range(10)]
    phantoms += [chest_ct(8000 + i, nodules=0) for i in range(10)]
    for phantom in phantoms:
        result, took = _infer(client, "lung-nodule-reference", phantom)
        seconds += took
        centroids = result.as_numpy("centroids").reshape(-1, 3)
        assert result.as_numpy("diameters_mm").shape == (len(centroids),)
        probabilities = result.as_numpy("probabilities")
        assert probabilities.shape == (len(centroids),)
        spacing = np.array(phantom.spacing_mm)
        used: set[int] = set()
        for lesion in phantom.lesions:
            nodules += 1
            if len(centroids) == 0:
                continue
            distances = np.linalg.norm(
                (centroids - np.array(lesion.center_voxel)) * spacing, axis=1
            )
            best = int(np.argmin(distances))
            if (
                distances[best] <= max(6.0, 0.75 * lesion.diameter_mm)
                and probabilities[best] > PRESENT_THRESHOLD
                and best not in used
            ):
                matched += 1
                used.add(best)
        false_positives += len(centroids) - len(used)
    print(
        f"\nlung-nodule-reference: sensitivity {matched}/{nodules}, false positives "
        f"{false_positives} in 20 chests, {seconds / len(phantoms):.3f} s per 32x256x256 volume"
    )
    assert nodules == 30
    assert matched >= 25
    assert false_positives <= 2
