"""bench: the pure parts of `make bench` (its registry, CPU accounting, the ratios it prints)."""

from __future__ import annotations

import os
from pathlib import Path

from bench.procs import CpuSample, _stat
from bench.report import percentiles, summary
from bench.runs import Run
from bench.studies import FOR_THE_MESH, NOT_FOR_THE_MESH, Size
from shared.registry import SeriesSummary, load_registry

BENCH_REGISTRY = Path(__file__).resolve().parents[3] / "bench" / "models.yaml"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def _series(body_part: str) -> SeriesSummary:
    return SeriesSummary(
        modality="CT",
        body_part_examined=body_part,
        sop_class_uids=(CT_IMAGE_STORAGE,),
        number_of_instances=32,
    )


def test_bench_registry_runs_echo_on_the_mesh_studies_and_leaves_the_scripts_own() -> None:
    """The mesh's echo model reads the studies meant for it, and none of the script's live-burst
    studies (the mesh runs beside the script and must not work on those)."""
    registry = load_registry(BENCH_REGISTRY)
    assert [m.id for m in registry.models_for([_series(FOR_THE_MESH)])] == ["echo-bench"]
    assert registry.models_for([_series(NOT_FOR_THE_MESH)]) == []
    assert all(model.endpoint.model_name == "echo" for model in registry.models)


def test_cpu_of_this_process_is_read_from_proc() -> None:
    """/proc/<pid>/stat gives this process's parent and a CPU time that grows with work."""
    before = _stat(os.getpid())
    assert before is not None and before[0] == os.getppid()
    sum(i * i for i in range(3_000_000))
    after = _stat(os.getpid())
    assert after is not None and after[1] > before[1]


def test_cpu_since_counts_a_restarted_process_from_zero() -> None:
    """A process restarted between two samples (the fetcher in the backlog run) is charged its
    new total, never a negative difference."""
    earlier = CpuSample({"fetcher": 10.0, "mapper": 4.0})
    later = CpuSample({"fetcher": 0.5, "mapper": 6.5})
    assert later.since(earlier) == {"fetcher": 0.5, "mapper": 2.5}


def _run(kind: str, load: str, seconds: float, cpu: float) -> Run:
    return Run(kind, load, "32x256²", 0, 10, seconds, {"x": cpu})


def test_summary_ratios_are_radmesh_over_the_script_of_the_same_run() -> None:
    """Rates and CPU per study are medians of the repeats; ratios divide radmesh's by the script's."""
    runs = [
        _run("script", "backlog", 10.0, 1.0),
        _run("script", "backlog", 20.0, 1.0),
        _run("script", "backlog", 30.0, 1.0),
        _run("mesh", "backlog", 40.0, 3.0),
        _run("mesh", "backlog", 40.0, 3.0),
        _run("mesh", "backlog", 40.0, 3.0),
    ]
    backlog = summary(runs, [])["backlog"]
    assert isinstance(backlog, dict)
    assert backlog["script_per_minute"] == (20.0, 30.0, 60.0)
    assert backlog["rate_ratio"] == 15.0 / 30.0
    assert backlog["cpu_ratio"] == 3.0
    assert "burst" not in summary(runs, [])


def test_percentiles_and_size_labels() -> None:
    assert percentiles([float(v) for v in range(101)]) == {"p50": 50.0, "p90": 90.0, "p99": 99.0}
    assert Size.parse("300x512") == Size(300, 512)
    assert Size.parse("300x512").label == "300x512²"
