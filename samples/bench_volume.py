"""Benchmark of the inference service's input side: radmesh reading a fetched series into its
HU volume, the model's input tensor and the binary OIP request body as the socket is handed it,
against a lean reader (each instance read once from the series' blob, `np.frombuffer` on its
pixel bytes into one preallocated array, sorted by position), on one synthetic CT series in a
blob store. Each runs in its own process, repeated and interleaved, so peak RSS growth is that
read's alone.

    python -m samples.bench_volume [--slices 300 --size 512 --repeats 3] [--json PATH]

Prints seconds and peak RSS growth (min/median/max), radmesh / lean, and RSS growth as a
multiple of the series' pixel bytes; writes the figures to a JSON file.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from samples import dicom_series, phantoms
from services.inference.volumes import prepare_input, read_volume
from shared import inference_protocol
from shared.messages import SeriesManifest
from shared.registry import load_registry
from shared.storage import BlobStore
from shared.wado_store import SeriesSink

ROOT = Path(__file__).resolve().parents[1]


def _rss_mb() -> float:
    """This process's resident memory now, from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Discard:
    """A stream writer that counts what it is handed (a socket that takes everything at once)."""

    size = 0

    async def write(self, chunk: memoryview) -> None:
        self.size += chunk.nbytes


def _radmesh(store_dir: Path, manifest_json: str) -> int:
    model = load_registry(ROOT / "registry" / "models.yaml").get("ich-reference", "1")
    series = SeriesManifest.model_validate_json(manifest_json)
    volume = read_volume(BlobStore(store_dir), series)
    tensors = prepare_input(volume, model.preprocessing)
    header = json.dumps({"inputs": [{"name": name} for name in tensors]}).encode()
    views = [np.ascontiguousarray(t).data.cast("B") for t in tensors.values()]
    if hasattr(inference_protocol, "TensorBody"):  # the body as the socket is handed it
        sent = _Discard()
        asyncio.run(inference_protocol.TensorBody(header, views).write(sent))  # type: ignore[arg-type]
        return sent.size
    if hasattr(inference_protocol, "_body"):  # radmesh before TensorBody: one assembled body
        return len(inference_protocol._body(header, views))
    payload = bytearray()  # the request body as radmesh built it before _body
    for tensor in tensors.values():
        payload += np.ascontiguousarray(tensor).tobytes()
    return len(header + bytes(payload))


def _lean(store_dir: Path, manifest_json: str) -> int:
    series = json.loads(manifest_json)
    instances = series["instances"]
    blob = (store_dir / instances[0]["blob_key"]).open("rb")  # one blob per series
    with blob:
        head = os.pread(blob.fileno(), instances[0]["size_bytes"], instances[0].get("offset", 0))
        first = pydicom.dcmread(io.BytesIO(head), stop_before_pixels=True)
        volume = np.empty((len(instances), int(first.Rows), int(first.Columns)), dtype=np.int16)
        positions = []
        for index, instance in enumerate(instances):
            data = os.pread(blob.fileno(), instance["size_bytes"], instance.get("offset", 0))
            dataset = pydicom.dcmread(io.BytesIO(data))
            dtype = np.int16 if int(dataset.PixelRepresentation) else np.uint16
            stored = np.frombuffer(dataset.PixelData, dtype=dtype).reshape(volume.shape[1:])
            np.add(stored, np.int16(dataset.RescaleIntercept), out=volume[index], casting="unsafe")
            positions.append(float(dataset.ImagePositionPatient[2]))
    order = np.argsort(positions)
    return int(volume[order].nbytes)


def _child(kind: str, store_dir: str, manifest_path: str) -> None:
    manifest_json = Path(manifest_path).read_text()
    baseline = _rss_mb()
    started = time.perf_counter()
    size = (_radmesh if kind == "radmesh" else _lean)(Path(store_dir), manifest_json)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "rss_growth_mb": _peak_mb() - baseline, "bytes": size}))


def _store(slices: int, size: int, directory: Path) -> tuple[Path, int]:
    """A head CT written into a blob store as the fetcher leaves it; (manifest path, pixel
    bytes)."""
    phantom = phantoms.head_ct(seed=slices, slices=slices, size=size)
    info = dicom_series.describe_study(phantom, scenario="bench-volume", seed=slices)
    pixel_bytes = 0
    sink = SeriesSink(BlobStore(directory), "series")  # as the fetcher writes a series
    for dataset in dicom_series.iter_instances(phantom, info):
        encoded = io.BytesIO()
        dataset.save_as(encoded, enforce_file_format=True)
        pixel_bytes += len(dataset.PixelData)
        sink.start({})
        sink.data(memoryview(encoded.getvalue()))
        sink.end()
    sink.finish()
    instances = [stored.blob() for stored in sink.retrieved]
    instances.reverse()  # not in slice order: the reader sorts
    manifest = SeriesManifest(
        series_instance_uid=info.series_instance_uid, modality="CT", instances=tuple(instances)
    )
    manifest_path = directory / "manifest.json"
    manifest_path.write_text(manifest.model_dump_json())
    return manifest_path, pixel_bytes


def _run(kind: str, directory: Path, manifest: Path, code_root: Path) -> dict[str, Any]:
    done = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            kind,
            str(directory),
            str(manifest),
        ],
        check=False,
        capture_output=True,
        text=True,
        cwd=code_root,
        env={"PYTHONPATH": str(code_root), "PATH": "/usr/bin:/bin"},
    )
    if done.returncode != 0:
        raise SystemExit(f"the {kind} reader failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _spread(values: list[float]) -> list[float]:
    return [round(f(values), 3) for f in (min, statistics.median, max)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m samples.bench_volume")
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=ROOT / ".run" / "bench" / "volume.json")
    parser.add_argument(
        "--code-root",
        type=Path,
        default=ROOT,
        help="the radmesh checkout whose reader runs (one that reads a series blob by offsets)",
    )
    parser.add_argument(
        "--child", nargs=3, metavar=("KIND", "STORE", "MANIFEST"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child)
        return 0
    with tempfile.TemporaryDirectory(prefix="radmesh-bench-volume-") as temporary:
        directory = Path(temporary)
        manifest, pixel_bytes = _store(args.slices, args.size, directory)
        mb = pixel_bytes / 1e6
        print(f"series {args.slices}x{args.size}x{args.size}: {mb:.0f} MB of pixel data")
        runs: dict[str, list[dict[str, Any]]] = {"radmesh": [], "lean": []}
        for _ in range(args.repeats):  # interleaved: a noisy moment hits both
            for kind, results in runs.items():
                results.append(_run(kind, directory, manifest, args.code_root))
    figures: dict[str, Any] = {"series_mb": round(mb, 1), "slices": args.slices, "size": args.size}
    for kind, results in runs.items():
        figures[kind] = {
            "seconds": _spread([r["seconds"] for r in results]),
            "rss_growth_mb": _spread([r["rss_growth_mb"] for r in results]),
        }
        seconds, growth = figures[kind]["seconds"], figures[kind]["rss_growth_mb"]
        print(
            f"{kind:>8}  {'/'.join(f'{s:.2f}' for s in seconds)} s   peak RSS growth"
            f" {'/'.join(f'{g:.0f}' for g in growth)} MB ({growth[1] / mb:.2f}x the series)"
        )
    ratio = figures["radmesh"]["seconds"][1] / figures["lean"]["seconds"][1]
    figures["radmesh_over_lean_seconds"] = round(ratio, 2)
    print(f"radmesh / lean reader: {ratio:.2f}x the time (medians)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"measured_at": datetime.now(UTC).isoformat(), **figures}))
    print(f"figures in {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
