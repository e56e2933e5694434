"""The reference model server (deploy/model-server) over the Open Inference Protocol v2.

Needs the server running (deploy/model-server/up.sh, or `make infra-up`).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from samples.phantoms import head_ct
from tests.conftest import Infrastructure

pytestmark = pytest.mark.integration

MODELS = ("ich-reference", "lung-nodule-reference", "echo")
CLINICAL_USE_LABEL = "reference algorithm, not for clinical use"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(infra: Infrastructure) -> str:
    """The server's HTTP base URL, after checking that it answers."""
    url = infra.triton_http_url
    try:
        requests.get(f"{url}/v2/health/ready", timeout=2)
    except requests.ConnectionError:
        pytest.fail(f"model server not reachable at {url}; run deploy/model-server/up.sh")
    return url


@pytest.fixture(scope="module")
def client(server: str) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(url=server.removeprefix("http://"))


def _inputs(volume: np.ndarray[Any, Any], spacing: tuple[float, float, float]) -> list[Any]:
    vol = httpclient.InferInput("volume", list(volume.shape), "INT16")
    vol.set_data_from_numpy(volume, binary_data=True)
    sp = httpclient.InferInput("spacing", [3], "FP32")
    sp.set_data_from_numpy(np.asarray(spacing, dtype=np.float32), binary_data=True)
    return [vol, sp]


def test_server_and_every_model_are_ready(server: str) -> None:
    """The server is ready and each reference model (version 1) reports ready."""
    assert requests.get(f"{server}/v2/health/ready", timeout=5).status_code == 200
    for model in MODELS:
        r = requests.get(f"{server}/v2/models/{model}/versions/1/ready", timeout=5)
        assert r.status_code == 200, f"{model}: {r.status_code} {r.text}"


@pytest.mark.parametrize("model", MODELS)
def test_metadata_lists_the_common_inputs_and_the_model_outputs(server: str, model: str) -> None:
    """Metadata shows inputs volume INT16 [-1,-1,-1] and spacing FP32 [3] and typed outputs."""
    meta = requests.get(f"{server}/v2/models/{model}", timeout=5).json()
    assert meta["versions"] == ["1"]
    inputs = {t["name"]: (t["datatype"], t["shape"]) for t in meta["inputs"]}
    assert inputs == {"volume": ("INT16", [-1, -1, -1]), "spacing": ("FP32", [3])}
    expected_outputs = {
        "ich-reference": {"probability", "volume_ml", "centroid", "bbox", "mask"},
        "lung-nodule-reference": {"centroids", "diameters_mm", "probabilities"},
        "echo": {"shape", "value"},
    }[model]
    assert {t["name"] for t in meta["outputs"]} == expected_outputs


@pytest.mark.parametrize("model", MODELS)
def test_config_labels_the_model_not_for_clinical_use(server: str, model: str) -> None:
    """The model configuration carries parameters.intended_use = the not-for-clinical-use label."""
    config = requests.get(f"{server}/v2/models/{model}/config", timeout=5).json()
    assert config["parameters"]["intended_use"]["string_value"] == CLINICAL_USE_LABEL
    assert config["max_batch_size"] == 0  # no batching: one volume per request


def test_binary_http_inference_with_tritonclient(client: httpclient.InferenceServerClient) -> None:
    """A head phantom with a bleed sent as binary tensors comes back with binary typed outputs;
    the mask fills its box and holds the volume the model reports."""
    phantom = head_ct(11, bleed=True)
    outputs = [
        httpclient.InferRequestedOutput(name, binary_data=True)
        for name in ("probability", "volume_ml", "centroid", "bbox", "mask")
    ]
    result = client.infer(
        "ich-reference", _inputs(phantom.volume_hu, phantom.spacing_mm), outputs=outputs
    )
    probability = result.as_numpy("probability")
    centroid = result.as_numpy("centroid")
    bbox = result.as_numpy("bbox")
    assert probability is not None and probability.dtype == np.float32
    assert centroid is not None and centroid.shape == (3,)
    assert bbox is not None and bbox.dtype == np.int32 and bbox.shape == (6,)
    assert float(probability[0]) > 0.5
    truth = np.array(phantom.lesions[0].center_voxel)
    assert np.linalg.norm((centroid - truth) * np.array(phantom.spacing_mm)) < 10.0
    mask = result.as_numpy("mask")
    volume_ml = result.as_numpy("volume_ml")
    assert mask is not None and mask.dtype == np.uint8 and volume_ml is not None
    z0, y0, x0, z1, y1, x1 = (int(v) for v in bbox)
    assert mask.shape == (z1 - z0 + 1, y1 - y0 + 1, x1 - x0 + 1)
    assert all(mask.any(axis=axes).all() for axes in ((1, 2), (0, 2), (0, 1)))  # fills its box
    voxel_ml = float(np.prod(phantom.spacing_mm)) / 1000
    assert float(mask.sum()) * voxel_ml == pytest.approx(float(volume_ml[0]), rel=1e-3)


def test_raw_binary_request_gets_a_binary_response(server: str) -> None:
    """A hand-built binary request is answered with binary data (Inference-Header-Content-Length)."""
    volume = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    spacing = np.array([5.0, 0.8, 0.8], dtype=np.float32)
    header = {
        "inputs": [
            {
                "name": "volume",
                "shape": [2, 3, 4],
                "datatype": "INT16",
                "parameters": {"binary_data_size": volume.nbytes},
            },
            {
                "name": "spacing",
                "shape": [3],
                "datatype": "FP32",
                "parameters": {"binary_data_size": spacing.nbytes},
            },
        ],
        "outputs": [
            {"name": "shape", "parameters": {"binary_data": True}},
            {"name": "value", "parameters": {"binary_data": True}},
        ],
    }
    head = json.dumps(header).encode()
    r = requests.post(
        f"{server}/v2/models/echo/infer",
        data=head + volume.tobytes() + spacing.tobytes(),
        headers={
            "Inference-Header-Content-Length": str(len(head)),
            "Content-Type": "application/octet-stream",
        },
        timeout=10,
    )
    assert r.status_code == 200, r.text
    json_len = int(r.headers["Inference-Header-Content-Length"])
    meta = json.loads(r.content[:json_len])
    binary = r.content[json_len:]
    outputs = {o["name"]: o for o in meta["outputs"]}
    assert outputs["shape"]["parameters"]["binary_data_size"] == 24
    shape = struct.unpack("<3q", binary[:24])
    value = struct.unpack("<f", binary[24:28])
    assert shape == (2, 3, 4)
    assert value == (1.0,)


GRPC_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tritonclient.grpc as grpcclient
    c = grpcclient.InferenceServerClient(url=sys.argv[1])
    vol = grpcclient.InferInput("volume", [4, 8, 8], "INT16")
    vol.set_data_from_numpy(np.zeros((4, 8, 8), dtype=np.int16))
    sp = grpcclient.InferInput("spacing", [3], "FP32")
    sp.set_data_from_numpy(np.array([5.0, 1.0, 1.0], dtype=np.float32))
    r = c.infer("echo", [vol, sp])
    print(json.dumps({"ready": c.is_server_ready(), "shape": r.as_numpy("shape").tolist(),
                      "value": r.as_numpy("value").tolist()}))
    """
)


def test_grpc_inference(infra: Infrastructure, server: str) -> None:
    """The echo model answers over gRPC (tritonclient.grpc; from the server's venv if the
    project venv lacks the grpc extra)."""
    try:
        import tritonclient.grpc  # noqa: F401, PLC0415

        python = sys.executable
    except (ImportError, RuntimeError):  # tritonclient raises RuntimeError without grpc
        run_dir = Path(os.environ.get("RADMESH_RUN_DIR", ROOT / ".run"))
        python = str(run_dir / "model-server" / "venv" / "bin" / "python")
    done = subprocess.run(
        [python, "-c", GRPC_SCRIPT, infra.triton_grpc_address],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer == {"ready": True, "shape": [4, 8, 8], "value": [1.0]}


def test_wrong_dtype_is_a_4xx_with_a_message(
    client: httpclient.InferenceServerClient, server: str
) -> None:
    """A FP32 volume (the model wants INT16) is refused with a client error naming the problem."""
    vol = httpclient.InferInput("volume", [2, 4, 4], "FP32")
    vol.set_data_from_numpy(np.zeros((2, 4, 4), dtype=np.float32), binary_data=True)
    sp = httpclient.InferInput("spacing", [3], "FP32")
    sp.set_data_from_numpy(np.ones(3, dtype=np.float32), binary_data=True)
    with pytest.raises(InferenceServerException) as err:
        client.infer("echo", [vol, sp])
    assert "INT16" in str(err.value) or "data-type" in str(err.value)
    r = requests.post(
        f"{server}/v2/models/echo/infer",
        json={
            "inputs": [
                {"name": "volume", "shape": [1, 1, 2], "datatype": "FP32", "data": [0.0, 1.0]},
                {"name": "spacing", "shape": [3], "datatype": "FP32", "data": [1.0, 1.0, 1.0]},
            ]
        },
        timeout=10,
    )
    assert 400 <= r.status_code < 500
    assert r.json()["error"]


def test_wrong_shape_is_a_4xx_with_a_message(server: str) -> None:
    """A 2-D volume and a 4-element spacing are refused with client errors and messages."""
    bad_volume = {
        "inputs": [
            {"name": "volume", "shape": [2, 2], "datatype": "INT16", "data": [0, 1, 2, 3]},
            {"name": "spacing", "shape": [3], "datatype": "FP32", "data": [1.0, 1.0, 1.0]},
        ]
    }
    bad_spacing = {
        "inputs": [
            {"name": "volume", "shape": [1, 1, 2], "datatype": "INT16", "data": [0, 1]},
            {"name": "spacing", "shape": [4], "datatype": "FP32", "data": [1.0, 1.0, 1.0, 1.0]},
        ]
    }
    for body in (bad_volume, bad_spacing):
        r = requests.post(f"{server}/v2/models/ich-reference/infer", json=body, timeout=10)
        assert 400 <= r.status_code < 500, r.text
        assert "shape" in r.json()["error"]
