"""CPU seconds of the processes under test, from /proc (user + system time, whole process trees).

The six services and the servers are found by the PID files deploy/ writes in .run/; a server's
children (Triton's Python backends, Orthanc's plugins' threads are threads) are counted with it.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

SERVICES = ("subscriber", "fetcher", "inference", "mapper", "notifier", "verification")
SERVERS = ("orthanc", "hapi-fhir", "model-server", "rabbitmq", "keycloak")
_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent PID, CPU seconds) of a running process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its last ')'
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICKS


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                children[stat[0]].append(int(entry.name))
    return children


def _tree_seconds(pid: int, children: dict[int, list[int]]) -> float:
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        stat = _stat(current)
        if stat is not None:
            total += stat[1]
        todo.extend(children.get(current, ()))
    return total


def _pid(run_dir: Path, name: str) -> int | None:
    if name == "rabbitmq":  # started -detached: no PID file, one Erlang VM
        return _pid_of_command("beam.smp")
    for pidfile in (run_dir / "services" / name / "pid", run_dir / name / "pid"):
        if pidfile.is_file():
            text = pidfile.read_text().strip()
            if text.isdigit():
                return int(text)
    return None


def _pid_of_command(command: str) -> int | None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == command:
                    return int(entry.name)
            except (FileNotFoundError, ProcessLookupError):
                continue
    return None


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds so far of each named process tree."""

    seconds: dict[str, float]

    def since(self, earlier: CpuSample) -> dict[str, float]:
        """CPU seconds each process used between `earlier` and this sample (a restarted process
        counts from zero)."""
        used = {}
        for name, now in self.seconds.items():
            before = earlier.seconds.get(name, 0.0)
            used[name] = now - before if now >= before else now
        return used


class CpuMeter:
    """Samples the CPU time of the services and servers radmesh's scripts started."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def sample(self) -> CpuSample:
        children = _children()
        seconds = {}
        for name in (*SERVICES, *SERVERS):
            pid = _pid(self.run_dir, name)
            if pid is not None:
                seconds[name] = _tree_seconds(pid, children)
        return CpuSample(seconds)
