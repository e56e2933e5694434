"""The alerting rules a site loads into Prometheus (deploy/prometheus/alerts.yaml), checked and
unit-tested with promtool (deploy/prometheus/up.sh fetches it during make infra-up), and read
against the metrics radmesh really exports."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from shared.metrics import exposition

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yaml"
PROMTOOL = (
    Path(os.environ.get("RADMESH_RUN_DIR", ROOT / ".run")) / "prometheus/root/usr/bin/promtool"
)


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if not PROMTOOL.exists():
        pytest.fail(f"{PROMTOOL} is missing: make infra-up (deploy/prometheus/up.sh) fetches it")
    return subprocess.run(
        [str(PROMTOOL), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_alerting_rules_are_valid_prometheus_rules() -> None:
    checked = _promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 4 rules found" in checked.stdout


def test_each_rule_fires_on_what_should_trip_it_and_not_on_what_should_not() -> None:
    """promtool's rule unit tests: late acknowledgements, an escalation step, dead letters and
    a burst of retractions fire; timely acknowledgements, handled messages and a few
    retractions do not."""
    tested = _promtool("test", "rules", str(RULES.with_name("alerts.test.yaml")))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_metric_the_rules_read_is_one_radmesh_exports() -> None:
    """A rule on a misspelt metric never fires: each name is a family of shared.metrics."""
    def family(name: str) -> str:
        return re.sub(r"_(bucket|total|count|sum)$", "", name)

    exported = re.findall(r"^# TYPE (\S+) ", exposition().decode(), flags=re.MULTILINE)
    read = set(re.findall(r"\b(radmesh_[a-z_]+)", RULES.read_text()))
    assert len(read) == 4
    unknown = {name for name in read if family(name) not in set(map(family, exported))}
    assert unknown == set(), f"rules read metrics radmesh does not export: {unknown}"
