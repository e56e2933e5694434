"""Benchmark of the fetcher's transport: radmesh's streaming WADO-RS (shared.dicomweb, part by
part into the blob store) beside curl (the wire speed: the response thrown away; and the same
response written to one file on the blob store's file system, the least storing it costs) and
dicomweb-client's `iter_series` (streaming) and `retrieve_series` (the whole series in memory),
on synthetic CT series in the local Orthanc. Each transfer runs in its own process, so its peak
RSS growth (peak minus the process's size before the transfer) is its own; the kinds take turns,
repeated.

    python -m samples.bench_fetch [--slices 300,1000 --size 512 --repeats 3]

Prints MB/s (min/median/max), the ratios to both curls and the peak RSS growth per kind and
series size, and writes them to .run/bench/fetch.json; the studies are deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import requests
from dicomweb_client.api import DICOMwebClient
from pydantic import SecretStr

from samples import dicom_series, phantoms
from samples.dicomweb import DicomWebClient as StowClient
from samples.load import Settings, delete_study
from shared.dicomweb import DicomWebClient
from shared.settings import DicomWebSettings
from shared.storage import BlobStore


def _radmesh(settings: Settings, study: str, series: str, directory: Path) -> int:
    client = DicomWebClient(
        DicomWebSettings(
            base_url=settings.dicomweb_root,
            username=settings.orthanc_auth[0],
            password=SecretStr(settings.orthanc_auth[1]),
        )
    )

    async def fetch() -> int:
        try:
            instances = await client.retrieve_series(study, series, BlobStore(directory), "s")
        finally:
            await client.close()
        return sum(instance.size_bytes for instance in instances)

    return asyncio.run(fetch())


def _dicomweb_client(settings: Settings, study: str, series: str, *, stream: bool) -> int:
    session = requests.Session()
    session.auth = settings.orthanc_auth
    client = DICOMwebClient(url=settings.dicomweb_root, session=session)
    if stream:  # one dataset at a time, each dropped once counted
        return sum(len(ds.PixelData) for ds in client.iter_series(study, series))
    return sum(len(dataset.PixelData) for dataset in client.retrieve_series(study, series))


def _curl(settings: Settings, study: str, series: str, output: str) -> int:
    """The bytes of the WADO-RS response as curl receives them, written to `output`."""
    user, password = settings.orthanc_auth
    written = subprocess.run(
        [
            "curl", "-sS", "--fail", "-o", output, "-w", "%{size_download}",
            "-u", f"{user}:{password}",
            "-H", 'Accept: multipart/related; type="application/dicom"; transfer-syntax=*',
            f"{settings.dicomweb_root}/studies/{study}/series/{series}",
        ],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return int(written)


def _status_mb(field: str) -> float:
    """A size from /proc/self/status (VmHWM, the peak RSS of this process image; VmRSS now)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


# curl: the wire speed, the response thrown away; curl-to-file: the same bytes written to a file
# on the blob store's file system (what storing the series costs at the least)
KINDS = ("radmesh", "curl", "curl-to-file", "iter_series", "retrieve_series")


def _child(kind: str, study: str, series: str) -> None:
    settings = Settings.from_env()
    with tempfile.TemporaryDirectory(prefix="radmesh-bench-fetch-") as temporary:
        directory = Path(temporary)  # removed after the timing: not part of any transfer
        before = _status_mb("VmRSS")
        started = time.perf_counter()
        if kind == "radmesh":
            size = _radmesh(settings, study, series, directory)
        elif kind.startswith("curl"):
            output = str(directory / "series") if kind == "curl-to-file" else "/dev/null"
            size = _curl(settings, study, series, output)
        else:
            size = _dicomweb_client(settings, study, series, stream=kind == "iter_series")
        seconds = time.perf_counter() - started
    # curl's peak is not this process's (and the kernel's figure for a child counts the
    # Python process it was forked from): none is reported for it
    growth = None if kind.startswith("curl") else _status_mb("VmHWM") - before
    print(json.dumps({"bytes": size, "seconds": seconds, "rss_growth_mb": growth}))


def _measure(kind: str, study: str, series: str) -> dict[str, float | None]:
    output = subprocess.run(
        [sys.executable, "-m", "samples.bench_fetch", "--child", kind, study, series],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    measured: dict[str, float | None] = json.loads(output.strip().splitlines()[-1])
    return measured


def _series_figures(slices: int, size: int, repeats: int) -> dict[str, object]:
    settings = Settings.from_env()
    seed = random.randrange(10**9)
    phantom = phantoms.chest_ct(seed, slices=slices, size=size)
    info = dicom_series.describe_study(phantom, scenario="bench-fetch", seed=seed)
    stow = StowClient(settings.dicomweb_root, settings.orthanc_auth)
    stored = stow.store(dicom_series.iter_encoded(phantom, info), study_uid=info.study_instance_uid)
    del phantom
    megabytes = stored.bytes / 1e6
    print(f"series {slices}x{size}²: {stored.instances} instances, {megabytes:.1f} MB in Orthanc")
    runs: dict[str, list[dict[str, float | None]]] = {kind: [] for kind in KINDS}
    try:
        for repeat in range(repeats):
            order = KINDS[repeat % len(KINDS) :] + KINDS[: repeat % len(KINDS)]
            for kind in order:
                runs[kind].append(_measure(kind, info.study_instance_uid, info.series_instance_uid))
    finally:
        delete_study(settings, info.study_instance_uid)
    figures: dict[str, object] = {"megabytes": megabytes}
    curl_rate, file_rate = (
        statistics.median(megabytes / float(r["seconds"] or 0) for r in runs[kind])
        for kind in ("curl", "curl-to-file")
    )
    for kind, measured in runs.items():
        rates = sorted(megabytes / float(r["seconds"] or 0) for r in measured)
        growths = [r["rss_growth_mb"] for r in measured if r["rss_growth_mb"] is not None]
        growth = statistics.median(growths) if growths else None
        rate = statistics.median(rates)
        figures[kind] = {
            "mb_per_s": (rates[0], rate, rates[-1]),
            "of_curl": rate / curl_rate,
            "of_curl_to_file": rate / file_rate,
            "rss_growth_mb": growth,
        }
        memory = (
            f"peak RSS growth {growth:7.1f} MB ({growth / megabytes:.2f}× the series)"
            if growth is not None
            else "peak RSS growth –"
        )
        print(
            f"  {kind:16s} {rate:7.0f} MB/s ({rates[0]:.0f}–{rates[-1]:.0f})  "
            f"{rate / curl_rate:5.2f}× curl {rate / file_rate:5.2f}× curl-to-file   {memory}"
        )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m samples.bench_fetch")
    parser.add_argument("--slices", default="300,1000", help="series lengths, comma-separated")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--child", nargs=3, metavar=("KIND", "STUDY", "SERIES"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child)
        return 0
    results = {
        f"{slices}x{args.size}": _series_figures(int(slices), args.size, args.repeats)
        for slices in args.slices.split(",")
    }
    out = Path(__file__).resolve().parents[1] / ".run" / "bench" / "fetch.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"measured_at": datetime.now(UTC).isoformat(), **results}, indent=2))
    print(f"figures in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
