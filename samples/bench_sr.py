"""Measure the mapper's SR step: evidence from the manifest vs one Dataset per instance.

    python -m samples.bench_sr [--slices 32 64 128 300] [--repeats 5] [--json PATH]

The SR of a run references every instance the model read. The earlier mapper asked the PACS
for the series' full WADO-RS metadata and made a pydicom Dataset of each instance; now the
inference service names the instances (`InferenceCompleted.evidence`, from the fetcher's
manifest) and the mapper reads one instance's metadata for the Patient and Study modules. Both
paths here start from the same decoded JSON (the network is left out: it only favours the new
path further, one small instance request instead of the series' metadata) and end with the SR's
Part 10 bytes. Runs are interleaved and repeated; CPU seconds (this process) are printed as
min/median/max per study and as the ratio new / earlier, and written to a JSON file.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydicom.filewriter import dcmwrite

from samples import dicom_series, phantoms
from services.mapper.structured_report import (
    build_structured_report,
    dataset_from_metadata,
    evidence_from_manifest,
)
from shared.messages import EvidenceSeries, Finding, InferenceCompleted, ModelRef, StudyRef
from shared.registry import ModelEntry, load_registry

ROOT = Path(__file__).resolve().parents[1]


def _metadata(slices: int) -> list[dict[str, Any]]:
    """A head CT series' instance metadata as WADO-RS gives it (pixel data left out)."""
    phantom = phantoms.head_ct(seed=slices, slices=slices, size=64)
    info = dicom_series.describe_study(phantom, scenario="bench-sr", seed=slices)
    return [
        {tag: value for tag, value in ds.to_json_dict().items() if tag != "7FE00010"}
        for ds in dicom_series.iter_instances(phantom, info)
    ]


def _event(model: ModelEntry, metadata: list[dict[str, Any]]) -> InferenceCompleted:
    first = dataset_from_metadata(metadata[0])
    sop_instance_uids = tuple(str(dataset_from_metadata(m).SOPInstanceUID) for m in metadata)
    return InferenceCompleted(
        study=StudyRef(study_instance_uid=str(first.StudyInstanceUID)),
        model=ModelRef(id=model.id, version=model.version),
        findings=(
            Finding(
                finding_key="intracranial-hemorrhage",
                present=True,
                probability=0.9,
                series_instance_uid=str(first.SeriesInstanceUID),
                sop_instance_uids=sop_instance_uids[len(metadata) // 2 :][:1],
            ),
            Finding(finding_key="hemorrhage-volume", present=True, value=7.5, unit="mL"),
        ),
        inference_duration_ms=1.0,
        evidence=(
            EvidenceSeries(
                series_instance_uid=str(first.SeriesInstanceUID),
                sop_class_uid=str(first.SOPClassUID),
                sop_instance_uids=sop_instance_uids,
            ),
        ),
    )


def _encode(event: InferenceCompleted, model: ModelEntry, evidence: list[Any]) -> int:
    report = build_structured_report(event, model, evidence, created=datetime.now(UTC))
    buffer = io.BytesIO()
    dcmwrite(buffer, report, enforce_file_format=True)
    return len(buffer.getvalue())


def _per_instance(event: InferenceCompleted, model: ModelEntry, metadata: list[Any]) -> int:
    return _encode(event, model, [dataset_from_metadata(item) for item in metadata])


def _from_manifest(event: InferenceCompleted, model: ModelEntry, metadata: list[Any]) -> int:
    header = dataset_from_metadata(metadata[0])
    evidence = evidence_from_manifest(header, event.study.study_instance_uid, event.evidence)
    return _encode(event, model, evidence)


def _cpu_seconds(
    step: Callable[[InferenceCompleted, ModelEntry, list[Any]], int],
    event: InferenceCompleted,
    model: ModelEntry,
    metadata: list[Any],
) -> float:
    started = time.process_time()
    step(event, model, metadata)
    return time.process_time() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m samples.bench_sr")
    parser.add_argument("--slices", type=int, nargs="+", default=[32, 64, 128, 300])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=ROOT / ".run" / "bench" / "sr.json")
    args = parser.parse_args(argv)
    model = load_registry(ROOT / "registry" / "models.yaml").get("ich-reference", "1")
    results = []
    print(f"{'instances':>9}  {'earlier ms (min/med/max)':>26}  {'manifest ms':>22}  ratio")
    for slices in args.slices:
        metadata = _metadata(slices)
        event = _event(model, metadata)
        if _per_instance(event, model, metadata) != _from_manifest(event, model, metadata):
            raise SystemExit(f"the two SRs of {slices} instances differ in size")
        earlier: list[float] = []
        manifest: list[float] = []
        for _ in range(args.repeats):  # interleaved: a noisy moment hits both
            earlier.append(_cpu_seconds(_per_instance, event, model, metadata))
            manifest.append(_cpu_seconds(_from_manifest, event, model, metadata))
        row = {
            "instances": slices,
            "earlier_cpu_ms": [round(1000 * f(earlier), 2) for f in (min, statistics.median, max)],
            "manifest_cpu_ms": [
                round(1000 * f(manifest), 2) for f in (min, statistics.median, max)
            ],
            "ratio": round(statistics.median(manifest) / statistics.median(earlier), 3),
        }
        results.append(row)
        print(
            f"{slices:>9}  {'/'.join(f'{v:.1f}' for v in row['earlier_cpu_ms']):>26}"
            f"  {'/'.join(f'{v:.1f}' for v in row['manifest_cpu_ms']):>22}  {row['ratio']:.2f}x"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps({"measured_at": datetime.now(UTC).isoformat(), "sr_step": results}, indent=2)
    )
    print(f"figures in {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
