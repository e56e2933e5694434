"""docs/safety/hazard-log.md: every mitigated hazard names an automated test, and that test
exists (the log cannot claim a mitigation nobody checks)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOG = ROOT / "docs" / "safety" / "hazard-log.md"
_TEST = r"`(tests/[^`:]+)::(test_\w+)`"
# The test column names one test, or several separated by ", ".
_ROW = re.compile(rf"^\| (H\d+) \|.*\| ({_TEST}(?:, {_TEST})*) \|$")


def _hazards() -> list[tuple[str, list[tuple[str, str]]]]:
    return [
        (match[1], re.findall(_TEST, match[2]))
        for line in LOG.read_text(encoding="utf-8").splitlines()
        if (match := _ROW.match(line))
    ]


def test_the_hazard_log_lists_at_least_fifteen_mitigated_hazards_each_with_a_test() -> None:
    rows = [line for line in LOG.read_text(encoding="utf-8").splitlines() if line.startswith("| H")]
    hazards = _hazards()
    assert len(rows) == len(hazards), "a mitigated hazard row names no test in the expected form"
    assert len(hazards) >= 15
    assert len({hazard for hazard, _ in hazards}) == len(hazards), "hazard ids repeat"


def test_every_test_the_hazard_log_names_exists() -> None:
    missing = []
    for hazard, tests in _hazards():
        for path, name in tests:
            source = ROOT / path
            text = source.read_text(encoding="utf-8") if source.exists() else ""
            if not re.search(rf"^(async )?def {name}\(", text, re.MULTILINE):
                missing.append(f"{hazard}: {path}::{name}")
    assert missing == [], "the hazard log names tests that do not exist"
