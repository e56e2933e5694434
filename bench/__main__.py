"""radmesh beside the script a site would write, on the same servers and the same studies.

    python -m bench [--sizes 32x256:12,64x256:12,128x512:4,300x512:2] [--repeats 3]
                    [--alone 3] [--out .run/bench/side-by-side.json]

Needs the infrastructure (make infra-up). Restarts the six services with bench/models.yaml (the
`echo` model: no model time, so what is left is each side's own cost), then per size, repeated
and interleaved (the order alternates each repeat):
  * mesh burst: the studies stored one after the other while the mesh runs (first store → last
    verification Task);
  * script backlog: bench/baseline.py through those studies, one after the other;
  * mesh backlog: studies announced while the fetcher is stopped, then drained (first take of the
    queue → last Task);
  * script burst: the script taking each study as soon as it is stored (the mesh leaves those);
and the mesh one study at a time (its overhead: ImagingStudy stored → Task, minus WADO-RS
transfer and the model call). CPU seconds per study of every process (services, servers, the
script) come from /proc. Prints the table, writes every run to the JSON file; the services are
stopped at the end. A benchmark: it prints figures, it asserts none.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from bench.baseline import Endpoints, Script
from bench.mesh import ROOT, Mesh
from bench.procs import CpuMeter
from bench.report import print_size, summary
from bench.runs import Run, Runner
from bench.studies import Size, StudyMaker
from samples.load import Settings

DEFAULT_SIZES = "32x256:12,64x256:12,128x512:4,300x512:2"


def _sizes(text: str) -> list[tuple[Size, int]]:
    out = []
    for item in text.split(","):
        size, _, count = item.partition(":")
        out.append((Size.parse(size), int(count or 20)))
    return out


async def _bench_size(
    runner: Runner, size: Size, count: int, repeats: int, alone: int
) -> tuple[list[Run], list[dict[str, float]]]:
    runs: list[Run] = []
    for repeat in range(repeats):
        mesh_first = repeat % 2 == 0
        print(f"[bench] {size.label} repeat {repeat + 1}/{repeats}: {count} studies per run")
        await runner.settle()
        burst, stored = await runner.mesh_burst(size.label, repeat, count)
        await runner.settle()
        script_backlog = await asyncio.to_thread(runner.script_backlog, size.label, repeat, stored)
        for mesh_turn in (mesh_first, not mesh_first):
            await runner.settle()
            if mesh_turn:
                backlog = await runner.mesh_backlog(size.label, repeat, count)
            else:
                script_burst = await asyncio.to_thread(
                    runner.script_burst, size.label, repeat, count
                )
        for run in (burst, script_backlog, backlog, script_burst):
            runs.append(run)
            print(
                f"[bench]   {run.kind:6} {run.load:7} {run.per_minute:7.0f} studies/min  "
                f"{run.cpu_ms_per_study:6.0f} CPU ms/study  ({run.seconds:.1f} s)"
            )
        await asyncio.to_thread(runner.maker.delete_all)
    await runner.settle()
    overhead = await runner.one_at_a_time(size.label, alone)
    await asyncio.to_thread(runner.maker.delete_all)
    return runs, overhead


async def _main(args: argparse.Namespace) -> int:
    task = asyncio.current_task()
    assert task is not None
    # SIGTERM (a CI timeout, `kill`): cancel, so that the services are stopped on the way out
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    settings = Settings.from_env()
    mesh = Mesh(ROOT / "bench" / "models.yaml", settings.fhir_base_url)
    meter = CpuMeter(Path(os.environ.get("RADMESH_RUN_DIR", ROOT / ".run")))
    script = Script(Endpoints.from_env())
    print("[bench] restarting the services with bench/models.yaml (the echo model)")
    mesh.down()
    mesh.up()
    await mesh.start_watching()
    results: dict[str, object] = {}
    raw: list[dict[str, object]] = []
    makers: list[StudyMaker] = []
    try:
        for number, (size, count) in enumerate(_sizes(args.sizes)):
            maker = StudyMaker(settings, size, seed=args.seed + number * 100_000)
            makers.append(maker)
            runs, overhead = await _bench_size(
                Runner(mesh, script, maker, meter), size, count, args.repeats, args.alone
            )
            results[size.label] = summary(runs, overhead)
            raw.extend({**asdict(run), "per_minute": run.per_minute} for run in runs)
            print_size(size.label, results[size.label])  # type: ignore[arg-type]
    finally:
        await mesh.stop_watching()
        mesh.down()
        for maker in makers:  # what an interrupted run left in the PACS
            maker.delete_all()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "measured_at": datetime.now(UTC).isoformat(),
                "machine": {"cores": os.cpu_count(), "platform": platform.platform()},
                "sizes": results,
                "runs": raw,
            },
            indent=2,
        )
    )
    print(f"\n[bench] every run in {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="SLICESxMATRIX:STUDIES,...")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--alone", type=int, default=3, help="studies one at a time, per size")
    parser.add_argument("--seed", type=int, default=int(datetime.now(UTC).timestamp()) % 10**6)
    parser.add_argument("--out", type=Path, default=ROOT / ".run" / "bench" / "side-by-side.json")
    return asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
