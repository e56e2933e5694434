"""Binary HTTP vs JSON transfer of one CT volume through the echo model (radmesh overhead).

Run with the project venv while the server is up:
    .venv/bin/python deploy/model-server/bench.py [--slices 64 --size 512 --repeat 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.http as httpclient

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from samples.phantoms import head_ct


def infer_seconds(
    client: httpclient.InferenceServerClient,
    volume: np.ndarray[Any, Any],
    spacing: tuple[float, float, float],
    *,
    binary: bool,
) -> float:
    vol = httpclient.InferInput("volume", list(volume.shape), "INT16")
    vol.set_data_from_numpy(volume, binary_data=binary)
    sp = httpclient.InferInput("spacing", [3], "FP32")
    sp.set_data_from_numpy(np.asarray(spacing, dtype=np.float32), binary_data=binary)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("shape", "value")]
    started = time.perf_counter()
    result = client.infer("echo", [vol, sp], outputs=outputs)
    took = time.perf_counter() - started
    assert list(result.as_numpy("shape")) == list(volume.shape)
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slices", type=int, default=64)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--url", default=f"127.0.0.1:{os.environ.get('RADMESH_TRITON_HTTP_PORT', '8000')}"
    )
    args = parser.parse_args()

    started = time.perf_counter()
    phantom = head_ct(1, slices=args.slices, size=args.size)
    generated = time.perf_counter() - started
    volume = phantom.volume_hu
    print(
        f"phantom {volume.shape} int16 ({volume.nbytes / 1e6:.0f} MB) generated in "
        f"{generated:.2f} s"
    )
    client = httpclient.InferenceServerClient(
        url=args.url, network_timeout=300.0, connection_timeout=300.0
    )
    for binary in (True, False):
        times = [
            infer_seconds(client, volume, phantom.spacing_mm, binary=binary)
            for _ in range(args.repeat)
        ]
        label = "binary HTTP" if binary else "JSON HTTP  "
        print(
            f"echo {label}: best {min(times):.3f} s, median {float(np.median(times)):.3f} s "
            f"over {args.repeat} requests"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
