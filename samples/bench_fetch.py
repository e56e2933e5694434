"""Benchmark of the fetcher's transport: radmesh's streaming WADO-RS (shared.dicomweb, part by
part into the blob store) beside curl (the wire speed: the response thrown away) and
dicomweb-client's `iter_series` (streaming) and `retrieve_series` (the whole series in memory),
on synthetic CT series in the local Orthanc. Each transfer runs in its own process, so its peak
RSS growth (peak minus the process's size before the transfer) is its own; the kinds take turns,
repeated.

    python -m samples.bench_fetch [--slices 300,1000 --size 512 --repeats 3]

Prints MB/s (min/median/max), the ratio to curl and the peak RSS growth per kind and series
size, and writes them to .run/bench/fetch.json; the studies are deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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


def _radmesh(settings: Settings, study: str, series: str) -> int:
    client = DicomWebClient(
        DicomWebSettings(
            base_url=settings.dicomweb_root,
            username=settings.orthanc_auth[0],
            password=SecretStr(settings.orthanc_auth[1]),
        )
    )

    async def fetch() -> int:
        with tempfile.TemporaryDirectory() as directory:
            try:
                instances = await client.retrieve_series(
                    study, series, BlobStore(Path(directory)), "s"
                )
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


def _curl(settings: Settings, study: str, series: str) -> int:
    """The bytes of the WADO-RS response as curl receives them, written nowhere."""
    user, password = settings.orthanc_auth
    written = subprocess.run(
        [
            "curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{size_download}",
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


KINDS = ("radmesh", "curl", "iter_series", "retrieve_series")


def _child(kind: str, study: str, series: str) -> None:
    settings = Settings.from_env()
    before = _status_mb("VmRSS")
    started = time.perf_counter()
    if kind == "radmesh":
        size = _radmesh(settings, study, series)
    elif kind == "curl":
        size = _curl(settings, study, series)
    else:
        size = _dicomweb_client(settings, study, series, stream=kind == "iter_series")
    seconds = time.perf_counter() - started
    # curl's peak is not this process's (and the kernel's figure for a child counts the
    # Python process it was forked from): none is reported for it
    growth = None if kind == "curl" else _status_mb("VmHWM") - before
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
    curl_rate = statistics.median(megabytes / float(r["seconds"] or 0) for r in runs["curl"])
    for kind, measured in runs.items():
        rates = sorted(megabytes / float(r["seconds"] or 0) for r in measured)
        growths = [r["rss_growth_mb"] for r in measured if r["rss_growth_mb"] is not None]
        growth = statistics.median(growths) if growths else None
        rate = statistics.median(rates)
        figures[kind] = {
            "mb_per_s": (rates[0], rate, rates[-1]),
            "of_curl": rate / curl_rate,
            "rss_growth_mb": growth,
        }
        memory = (
            f"peak RSS growth {growth:7.1f} MB ({growth / megabytes:.2f}× the series)"
            if growth is not None
            else "peak RSS growth –"
        )
        print(
            f"  {kind:16s} {rate:7.0f} MB/s ({rates[0]:.0f}–{rates[-1]:.0f})  "
            f"{rate / curl_rate:5.2f}× curl   {memory}"
        )
    floor = _file_creation_seconds(int(stored.instances))
    radmesh_seconds = megabytes / float(figures["radmesh"]["mb_per_s"][1])  # type: ignore[index]
    figures["file_creation_s"] = floor
    print(
        f"  of radmesh's {radmesh_seconds:.2f} s, creating and renaming its "
        f"{stored.instances} files alone takes {floor:.2f} s on this file system "
        f"({floor / radmesh_seconds:.0%})"
    )
    return figures


def _file_creation_seconds(files: int) -> float:
    """What the blob store's file system charges for the files alone: as many empty files
    created (O_EXCL) and renamed as the series has instances, in a directory like radmesh's."""
    with tempfile.TemporaryDirectory() as directory:
        started = time.perf_counter()
        for number in range(files):
            temporary = f"{directory}/.part-{number}"
            os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            os.replace(temporary, f"{directory}/{number}.dcm")
        return time.perf_counter() - started


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
