"""radmesh reference model server: PyTriton (Triton Inference Server, CPU) serving the reference
algorithms of ``reference_models`` over the Open Inference Protocol v2 (HTTP and gRPC).

Runs in its own virtual environment (see up.sh); not part of the radmesh package.
Stops Triton cleanly on SIGTERM/SIGINT so no tritonserver process is left behind.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
from pytriton.model_config import ModelConfig, Tensor
from pytriton.models.model import Model
from pytriton.proxy.data import TensorStore
from pytriton.triton import Triton, TritonConfig
from reference_models import echo as echo_model
from reference_models import ich, lung_nodule
from reference_models.common import CLINICAL_USE_LABEL, VolumeInput

LOG = logging.getLogger("radmesh.model_server")

Arrays = dict[str, np.ndarray[Any, Any]]
InferFn = Callable[[Sequence[Mapping[str, np.ndarray[Any, Any]]]], list[Arrays]]

INPUTS = (
    Tensor(name="volume", dtype=np.int16, shape=(-1, -1, -1)),
    Tensor(name="spacing", dtype=np.float32, shape=(3,)),
)

# Shown in /v2/models/<name>/config under "parameters" (string values).
MODEL_PARAMETERS: dict[str, dict[str, str]] = {
    "ich-reference": {
        "intended_use": CLINICAL_USE_LABEL,
        "task": "hyperdense intracranial region (haemorrhage) detection on non-contrast head CT",
        "body_part": "HEAD",
        "modality": "CT",
    },
    "lung-nodule-reference": {
        "intended_use": CLINICAL_USE_LABEL,
        "task": "solid lung nodule detection on chest CT",
        "body_part": "CHEST",
        "modality": "CT",
    },
    "echo": {
        "intended_use": CLINICAL_USE_LABEL,
        "task": "no work: returns the input shape (overhead measurement)",
        "body_part": "ANY",
        "modality": "CT",
    },
}


def _install_parameter_hook() -> None:
    """Adds MODEL_PARAMETERS to the generated config.pbtxt of each model.

    PyTriton (0.7) has no public way to set model-config ``parameters``: it fills them with its
    own backend parameters (workspace-path, ...).  We extend that dict; PyTriton's backend only
    reads its own keys, Triton shows all of them in the model configuration.
    """
    original = Model._get_triton_model_config

    def patched(self: Model) -> Any:
        config = original(self)
        extra = MODEL_PARAMETERS.get(self.model_name, {})
        for key, value in extra.items():
            config.backend_parameters.setdefault(key, value)
        return config

    Model._get_triton_model_config = patched


def _install_empty_tensor_fix() -> None:
    """Lets PyTriton (0.7) return zero-size tensors (e.g. no nodules: centroids [0, 3]).

    Its shared-memory tensor store copies every frame with ``memoryview.cast("B")``, which
    refuses views with a zero in their shape; an empty frame is the same bytes as ``b""``.
    """
    original = TensorStore._copy_frames

    def copy_frames(self: TensorStore, frames: list[Any], shm: Any, offset: int) -> int:
        fixed = [b"" if isinstance(f, memoryview) and f.nbytes == 0 else f for f in frames]
        result: int = original(self, fixed, shm, offset)
        return result

    TensorStore._copy_frames = copy_frames


def _volume_input(request: Mapping[str, np.ndarray[Any, Any]]) -> VolumeInput:
    return VolumeInput.from_arrays(request["volume"], request["spacing"])


def infer_ich(requests: Sequence[Mapping[str, np.ndarray[Any, Any]]]) -> list[Arrays]:
    out: list[Arrays] = []
    for request in requests:
        result = ich.detect(_volume_input(request))
        out.append(
            {
                "probability": np.array([result.probability], dtype=np.float32),
                "volume_ml": np.array([result.volume_ml], dtype=np.float32),
                "centroid": np.array(result.centroid_voxel, dtype=np.float32),
                "bbox": np.array(result.bbox_voxel, dtype=np.int32),
                "mask": np.ascontiguousarray(result.mask, dtype=np.uint8),
            }
        )
    return out


def infer_lung_nodule(requests: Sequence[Mapping[str, np.ndarray[Any, Any]]]) -> list[Arrays]:
    out: list[Arrays] = []
    for request in requests:
        found = lung_nodule.detect(_volume_input(request))
        out.append(
            {
                "centroids": np.array([n.centroid_voxel for n in found], dtype=np.float32).reshape(
                    -1, 3
                ),
                "diameters_mm": np.array([n.diameter_mm for n in found], dtype=np.float32),
                "probabilities": np.array([n.probability for n in found], dtype=np.float32),
            }
        )
    return out


def infer_echo(requests: Sequence[Mapping[str, np.ndarray[Any, Any]]]) -> list[Arrays]:
    out: list[Arrays] = []
    for request in requests:
        shape, constant = echo_model.echo(_volume_input(request))
        out.append(
            {
                "shape": np.array(shape, dtype=np.int64),
                "value": np.array([constant], dtype=np.float32),
            }
        )
    return out


MODELS: dict[str, tuple[InferFn, tuple[Tensor, ...]]] = {
    "ich-reference": (
        infer_ich,
        (
            Tensor(name="probability", dtype=np.float32, shape=(1,)),
            Tensor(name="volume_ml", dtype=np.float32, shape=(1,)),
            Tensor(name="centroid", dtype=np.float32, shape=(3,)),
            Tensor(name="bbox", dtype=np.int32, shape=(6,)),
            Tensor(name="mask", dtype=np.uint8, shape=(-1, -1, -1)),
        ),
    ),
    "lung-nodule-reference": (
        infer_lung_nodule,
        (
            Tensor(name="centroids", dtype=np.float32, shape=(-1, 3)),
            Tensor(name="diameters_mm", dtype=np.float32, shape=(-1,)),
            Tensor(name="probabilities", dtype=np.float32, shape=(-1,)),
        ),
    ),
    "echo": (
        infer_echo,
        (
            Tensor(name="shape", dtype=np.int64, shape=(3,)),
            Tensor(name="value", dtype=np.float32, shape=(1,)),
        ),
    ),
}


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Triton.serve() turns KeyboardInterrupt into a clean stop of tritonserver.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--log-verbose", type=int, default=0)
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    _install_parameter_hook()
    _install_empty_tensor_fix()
    if args.workspace.exists():  # left over by a killed server; PyTriton wants a fresh one
        shutil.rmtree(args.workspace)

    config = TritonConfig(
        http_address=args.address,
        http_port=args.http_port,
        grpc_address=args.address,
        grpc_port=args.grpc_port,
        allow_metrics=False,
        log_verbose=args.log_verbose,
        exit_timeout_secs=5,
    )
    try:
        with Triton(config=config, workspace=args.workspace) as triton:
            for name, (fn, outputs) in MODELS.items():
                triton.bind(
                    model_name=name,
                    infer_func=fn,
                    inputs=INPUTS,
                    outputs=outputs,
                    model_version=1,
                    config=ModelConfig(batching=False),
                    strict=True,
                )
            LOG.info(
                "serving %s on %s (HTTP %d, gRPC %d)",
                ", ".join(MODELS),
                args.address,
                args.http_port,
                args.grpc_port,
            )
            triton.serve()
    except KeyboardInterrupt:
        LOG.info("stopping")
    LOG.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
