"""The benchmark's tables: radmesh beside the script, per size, as ratios of the same run."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import numpy as np

from bench.procs import SERVICES
from bench.runs import Run


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """(min, median, max)."""
    return min(values), statistics.median(values), max(values)


def percentiles(values: Sequence[float]) -> dict[str, float]:
    p50, p90, p99 = np.percentile(np.asarray(values, dtype=np.float64), [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99)}


def _of(runs: list[Run], kind: str, load: str) -> list[Run]:
    return [run for run in runs if run.kind == kind and run.load == load]


def summary(runs: list[Run], overhead: list[dict[str, float]]) -> dict[str, object]:
    """The figures of one size, ready for the JSON file and the table."""
    out: dict[str, object] = {}
    for load in ("backlog", "burst"):
        script, mesh = _of(runs, "script", load), _of(runs, "mesh", load)
        if not script or not mesh:
            continue
        script_rate = spread([r.per_minute for r in script])
        mesh_rate = spread([r.per_minute for r in mesh])
        script_cpu = spread([r.cpu_ms_per_study for r in script])
        mesh_cpu = spread([r.cpu_ms_per_study for r in mesh])
        out[load] = {
            "script_per_minute": script_rate,
            "mesh_per_minute": mesh_rate,
            "rate_ratio": mesh_rate[1] / script_rate[1],
            "script_cpu_ms_per_study": script_cpu,
            "mesh_cpu_ms_per_study": mesh_cpu,
            "cpu_ratio": mesh_cpu[1] / script_cpu[1],
        }
    for kind in ("mesh", "script"):
        backlog = _of(runs, kind, "backlog")
        if backlog:
            names = sorted({name for run in backlog for name in run.cpu_seconds})
            out[f"{kind}_cpu_ms_per_study_by_process"] = {
                name: statistics.median(
                    run.cpu_seconds.get(name, 0.0) / run.studies * 1000 for run in backlog
                )
                for name in names
            }
    stages: dict[str, list[float]] = {}
    for run in _of(runs, "mesh", "burst"):
        for stage, seconds in run.stages.items():
            stages.setdefault(stage, []).extend(seconds)
    out["burst_stage_seconds"] = {stage: percentiles(v) for stage, v in stages.items()}
    if overhead:
        out["one_at_a_time_seconds"] = {
            key: percentiles([o[key] for o in overhead]) for key in overhead[0]
        }
    return out


def print_size(label: str, figures: dict[str, object]) -> None:
    print(f"\n== {label} ==")
    print(
        f"{'':9} {'studies/min: script':>22} {'radmesh':>20} {'ratio':>6}   "
        f"{'CPU ms/study: script':>21} {'radmesh':>8} {'ratio':>6}"
    )
    for load in ("backlog", "burst"):
        row = figures.get(load)
        if not isinstance(row, dict):
            continue
        s, m = row["script_per_minute"], row["mesh_per_minute"]
        print(
            f"{load:9} {s[1]:8.0f} ({s[0]:.0f}–{s[2]:.0f}) {m[1]:9.0f} ({m[0]:.0f}–{m[2]:.0f}) "
            f"{row['rate_ratio']:5.2f}×   {row['script_cpu_ms_per_study'][1]:21.0f} "
            f"{row['mesh_cpu_ms_per_study'][1]:8.0f} {row['cpu_ratio']:5.2f}×"
        )
    by_process = figures.get("mesh_cpu_ms_per_study_by_process")
    if isinstance(by_process, dict):
        services = ", ".join(f"{n} {by_process.get(n, 0.0):.0f}" for n in SERVICES)
        servers = ", ".join(f"{n} {v:.0f}" for n, v in by_process.items() if n not in SERVICES)
        print(f"radmesh CPU ms/study (backlog): {services}; servers: {servers}")
    script = figures.get("script_cpu_ms_per_study_by_process")
    if isinstance(script, dict):
        print(
            "script  CPU ms/study (backlog): "
            + ", ".join(f"{n} {v:.0f}" for n, v in script.items())
        )
    for title, key in (
        ("burst stage latency", "burst_stage_seconds"),
        ("one study at a time", "one_at_a_time_seconds"),
    ):
        table = figures.get(key)
        if isinstance(table, dict):
            cells = (
                f"{name} {p['p50'] * 1000:.0f}/{p['p90'] * 1000:.0f}/{p['p99'] * 1000:.0f}"
                for name, p in table.items()
            )
            print(f"{title} ms (p50/p90/p99): " + "; ".join(cells))
