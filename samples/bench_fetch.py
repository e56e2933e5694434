"""Benchmark of the fetcher's transport: radmesh's streaming WADO-RS (shared.dicomweb, part by
part into the blob store) against dicomweb-client's `retrieve_series` (the baseline), on one
synthetic CT series in the local Orthanc. Each runs in its own process, so peak memory (max RSS)
is that transfer's alone.

    python -m samples.bench_fetch [--slices 300 --size 512]

Prints MB/s and peak RSS of both and their ratios; the study is deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
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


def _radmesh(settings: Settings, study: str, series: str) -> dict[str, float]:
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

    started = time.perf_counter()
    size = asyncio.run(fetch())
    return {"bytes": size, "seconds": time.perf_counter() - started}


def _dicomweb_client(settings: Settings, study: str, series: str) -> dict[str, float]:
    session = requests.Session()
    session.auth = settings.orthanc_auth
    client = DICOMwebClient(url=settings.dicomweb_root, session=session)
    started = time.perf_counter()
    datasets = client.retrieve_series(study, series)
    seconds = time.perf_counter() - started
    size = sum(len(dataset.PixelData) for dataset in datasets)
    return {"bytes": size, "seconds": seconds}


def _peak_rss_mb() -> float:
    """This process image's peak RSS (VmHWM; unlike ru_maxrss it does not carry over the
    forking parent's size across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _child(kind: str, study: str, series: str) -> None:
    settings = Settings.from_env()
    result = (_radmesh if kind == "radmesh" else _dicomweb_client)(settings, study, series)
    result["max_rss_mb"] = _peak_rss_mb()
    print(json.dumps(result))


def _measure(kind: str, study: str, series: str) -> dict[str, float]:
    output = subprocess.run(
        [sys.executable, "-m", "samples.bench_fetch", "--child", kind, study, series],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    measured: dict[str, float] = json.loads(output.strip().splitlines()[-1])
    return measured


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m samples.bench_fetch")
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument(
        "--child", nargs=3, metavar=("KIND", "STUDY", "SERIES"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child)
        return 0
    settings = Settings.from_env()
    seed = random.randrange(10**9)
    phantom = phantoms.chest_ct(seed, slices=args.slices, size=args.size)
    info = dicom_series.describe_study(phantom, scenario="bench-fetch", seed=seed)
    stow = StowClient(settings.dicomweb_root, settings.orthanc_auth)
    stored = stow.store(dicom_series.iter_encoded(phantom, info), study_uid=info.study_instance_uid)
    del phantom
    megabytes = stored.bytes / 1e6
    print(f"series: {stored.instances} instances, {megabytes:.1f} MB in Orthanc")
    try:
        results = {
            kind: _measure(kind, info.study_instance_uid, info.series_instance_uid)
            for kind in ("radmesh", "dicomweb-client")
        }
    finally:
        delete_study(settings, info.study_instance_uid)
    for kind, result in results.items():
        print(
            f"{kind:16s} {megabytes / result['seconds']:7.1f} MB/s   "
            f"peak RSS {result['max_rss_mb']:7.1f} MB ({result['max_rss_mb'] / megabytes:.2f}x the series)"
        )
    radmesh, baseline = results["radmesh"], results["dicomweb-client"]
    print(
        f"radmesh vs dicomweb-client: {baseline['seconds'] / radmesh['seconds']:.2f}x the speed, "
        f"{radmesh['max_rss_mb'] / baseline['max_rss_mb']:.2f}x the peak memory"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
