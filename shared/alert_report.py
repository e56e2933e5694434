"""`radmesh report alerts`: does the site meet its critical-results policy? Per finding type and
model: how many critical alerts, how many acknowledged and how fast (median, 90th percentile),
how many withdrawn or still open, how many escalated at each step; and a plot of the
distribution of time to acknowledge and of escalations per step.

Everything is read back from the FHIR server: the alert Communications radmesh wrote and the
ones that followed them up (identifier `<alert key>[/acknowledgement|/withdrawal|/escalation/<n>]`
under `urn:radmesh:communication`), so the report needs nothing but the record. No patient
data is read into it beyond the alerts themselves, and none is printed.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from shared.alerts import ALERT_CATEGORY, alert_key
from shared.fhir import FhirClient
from shared.identifiers import FindingValue

__all__ = [
    "AlertOutcome",
    "AlertSummary",
    "collect_alerts",
    "plot_alerts",
    "summarise",
    "summary_text",
]

_ALERT = ALERT_CATEGORY["coding"][0]


@dataclass
class AlertOutcome:
    """One critical alert and what became of it."""

    key: str  # <run value>/<finding key>/<index> (shared.identifiers.FindingValue)
    sent: datetime
    acknowledged: datetime | None = None
    withdrawn: bool = False
    escalation_steps: list[int] = field(default_factory=list)

    @property
    def model(self) -> str:
        run = FindingValue.parse(self.key).run
        return f"{run.model_id}/{run.model_version}"

    @property
    def finding(self) -> str:
        return FindingValue.parse(self.key).finding_key

    @property
    def minutes_to_acknowledge(self) -> float | None:
        if self.acknowledged is None:
            return None
        return max(0.0, (self.acknowledged - self.sent).total_seconds() / 60)


@dataclass(frozen=True)
class AlertSummary:
    finding: str
    model: str
    alerts: int
    acknowledged: int
    withdrawn: int
    open: int
    median_minutes: float | None
    p90_minutes: float | None
    escalations_per_step: dict[int, int]


def _when(resource: dict[str, Any]) -> datetime | None:
    value = resource.get("sent")
    return datetime.fromisoformat(str(value)) if value else None


async def collect_alerts(fhir: FhirClient, since: datetime) -> list[AlertOutcome]:
    """The alerts sent since `since`, with their acknowledgements, withdrawals and escalations."""
    bundle: dict[str, Any] | None = await fhir.execute(
        "Communication",
        "get",
        params={
            "category": f"{_ALERT['system']}|{_ALERT['code']}",
            "_lastUpdated": f"ge{since.isoformat()}",
            "_count": 50,
        },
    )
    alerts: dict[str, AlertOutcome] = {}
    follow_ups: list[tuple[FindingValue, dict[str, Any]]] = []
    while bundle is not None:
        for entry in bundle.get("entry", []):
            resource = entry.get("resource") or {}
            key = alert_key(resource)
            sent = _when(resource)
            if key is None or sent is None:
                continue
            try:
                finding = FindingValue.parse(key)
            except ValueError:  # not a radmesh alert
                continue
            if not finding.follow_up:
                alerts[key] = AlertOutcome(key=key, sent=sent)
            else:
                follow_ups.append((finding, resource))
        bundle = await fhir.next_page(bundle)
    for finding, resource in follow_ups:
        if finding.value in alerts:
            _apply_follow_up(alerts[finding.value], finding.follow_up, resource)
    return sorted(alerts.values(), key=lambda alert: alert.sent)


def _apply_follow_up(alert: AlertOutcome, kind: tuple[str, ...], resource: dict[str, Any]) -> None:
    """What one follow-up Communication (`acknowledgement`, `withdrawal`, `escalation/<n>`)
    says of its alert."""
    if kind == ("acknowledgement",):
        alert.acknowledged = _when(resource)
    elif kind == ("withdrawal",):
        alert.withdrawn = True
    elif len(kind) == 2 and kind[0] == "escalation" and kind[1].isdigit():
        alert.escalation_steps.append(int(kind[1]))


def _percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def summarise(alerts: list[AlertOutcome]) -> list[AlertSummary]:
    groups: dict[tuple[str, str], list[AlertOutcome]] = defaultdict(list)
    for alert in alerts:
        groups[(alert.finding, alert.model)].append(alert)
    summaries = []
    for (finding, model), members in sorted(groups.items()):
        minutes = [m for a in members if (m := a.minutes_to_acknowledge) is not None]
        steps: dict[int, int] = defaultdict(int)
        for alert in members:
            for step in alert.escalation_steps:
                steps[step] += 1
        summaries.append(
            AlertSummary(
                finding=finding,
                model=model,
                alerts=len(members),
                acknowledged=len(minutes),
                withdrawn=sum(1 for a in members if a.withdrawn and a.acknowledged is None),
                open=sum(1 for a in members if a.acknowledged is None and not a.withdrawn),
                median_minutes=statistics.median(minutes) if minutes else None,
                p90_minutes=_percentile(minutes, 0.9),
                escalations_per_step=dict(sorted(steps.items())),
            )
        )
    return summaries


def _minutes(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def summary_text(summaries: list[AlertSummary], since: datetime) -> str:
    lines = [f"critical alerts since {since.isoformat(timespec='minutes')}"]
    if not summaries:
        return lines[0] + ": none"
    lines.append(
        f"{'finding':<28} {'model':<26} {'alerts':>6} {'acked':>6} {'withdrawn':>9} "
        f"{'open':>5} {'median min':>10} {'p90 min':>8}  escalations per step"
    )
    for s in summaries:
        steps = ", ".join(f"{step}: {count}" for step, count in s.escalations_per_step.items())
        lines.append(
            f"{s.finding:<28} {s.model:<26} {s.alerts:>6} {s.acknowledged:>6} {s.withdrawn:>9} "
            f"{s.open:>5} {_minutes(s.median_minutes):>10} {_minutes(s.p90_minutes):>8}  "
            f"{steps or 'none'}"
        )
    return "\n".join(lines)


def plot_alerts(alerts: list[AlertOutcome], summaries: list[AlertSummary], path: Path) -> Path:
    """Two panels: time to acknowledge per finding type (histogram), escalations per step."""
    figure = Figure(figsize=(11, 4), layout="constrained")
    left, right = figure.subplots(1, 2)
    by_finding: dict[str, list[float]] = defaultdict(list)
    for alert in alerts:
        if (minutes := alert.minutes_to_acknowledge) is not None:
            by_finding[alert.finding].append(minutes)
    if by_finding:
        left.hist(list(by_finding.values()), bins=20, label=list(by_finding), stacked=True)
        left.legend(fontsize=8)
    else:
        left.text(0.5, 0.5, "no acknowledged alert", ha="center", va="center")
    left.set_xlabel("minutes from alert to acknowledgement")
    left.set_ylabel("alerts")
    left.set_title("Time to acknowledge")
    steps: dict[int, int] = defaultdict(int)
    for summary in summaries:
        for step, count in summary.escalations_per_step.items():
            steps[step] += count
    if steps:
        right.bar([str(step) for step in sorted(steps)], [steps[s] for s in sorted(steps)])
    else:
        right.text(0.5, 0.5, "no escalation", ha="center", va="center")
    right.set_xlabel("escalation step")
    right.set_ylabel("alerts escalated")
    right.set_title("Escalations per step")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path
