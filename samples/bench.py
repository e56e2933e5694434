"""Measure the local PACS: STOW-RS ingest and WADO-RS retrieve of one synthetic CT series.

    python -m samples.bench [--slices 300 --size 512 --batch 24] [--keep]

Stores a chest CT (no FHIR records), retrieves the whole series with WADO-RS (read part by part,
never the whole response in memory) and prints instances/s and MB/s of both; the study is
deleted afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import random
import re
import time

import requests

from samples import dicom_series, phantoms
from samples.dicomweb import DicomWebClient
from samples.load import Settings, delete_study


def _retrieve(settings: Settings, study_uid: str, series_uid: str) -> tuple[int, int, float]:
    """(instances, bytes, seconds) of a streamed WADO-RS series retrieve."""
    url = f"{settings.dicomweb_root}/studies/{study_uid}/series/{series_uid}"
    started = time.perf_counter()
    with requests.get(
        url,
        auth=settings.orthanc_auth,
        headers={"Accept": 'multipart/related; type="application/dicom"'},
        stream=True,
        timeout=600,
    ) as response:
        response.raise_for_status()
        content_type = response.headers["Content-Type"]
        match = re.search(r'boundary="?([^";]+)"?', content_type)
        if match is None:
            raise RuntimeError(f"no multipart boundary in {content_type!r}")
        boundary = match.group(1)
        delimiter = f"--{boundary}".encode()
        total = 0
        carry = b""
        parts = 0
        for chunk in response.iter_content(chunk_size=1 << 20):
            total += len(chunk)
            data = carry + chunk
            parts += data.count(delimiter)
            carry = data[-(len(delimiter) - 1) :]
    # the closing delimiter is "--boundary--": one more than the number of parts
    return parts - 1, total, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m samples.bench")
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=24)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the study in Orthanc")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    seed = args.seed if args.seed is not None else random.randrange(10**9)

    t0 = time.perf_counter()
    phantom = phantoms.chest_ct(seed, slices=args.slices, size=args.size)
    info = dicom_series.describe_study(phantom, scenario="bench", seed=seed)
    print(f"phantom {args.slices}x{args.size}x{args.size} in {time.perf_counter() - t0:.1f} s")

    t0 = time.perf_counter()
    encoded = sum(len(b) for b in dicom_series.iter_encoded(phantom, info))
    encode_s = time.perf_counter() - t0
    print(f"encode only: {args.slices / encode_s:.0f} inst/s, {encoded / 1e6 / encode_s:.0f} MB/s")

    client = DicomWebClient(settings.dicomweb_root, settings.orthanc_auth)
    stow = client.store(
        dicom_series.iter_encoded(phantom, info),
        batch_size=args.batch,
        study_uid=info.study_instance_uid,
    )
    print(
        f"STOW-RS  {stow.instances} instances, {stow.bytes / 1e6:.1f} MB in {stow.seconds:.2f} s:"
        f" {stow.instances_per_second:.1f} inst/s, {stow.megabytes_per_second:.1f} MB/s"
        f" (batches of {args.batch}, generation + encoding included)"
    )
    count, size, seconds = _retrieve(settings, info.study_instance_uid, info.series_instance_uid)
    print(
        f"WADO-RS  {count} instances, {size / 1e6:.1f} MB in {seconds:.2f} s:"
        f" {count / seconds:.1f} inst/s, {size / 1e6 / seconds:.1f} MB/s"
    )
    if not args.keep:
        delete_study(settings, info.study_instance_uid)
    return 0 if count == stow.instances == args.slices else 1


if __name__ == "__main__":
    raise SystemExit(main())
