"""shared.alert_report: alerts and their follow-ups become the critical-results summary."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from shared.alert_report import AlertOutcome, plot_alerts, summarise, summary_text
from shared.metrics import TIME_TO_ACKNOWLEDGE, alert_labels, exposition

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
ICH = "2.25.{n}/ich-reference/1/intracranial-hemorrhage/0"


def _alert(
    n: int, *, minutes: float | None, withdrawn: bool = False, steps: tuple[int, ...] = ()
) -> AlertOutcome:
    return AlertOutcome(
        key=ICH.format(n=n),
        sent=T0,
        acknowledged=T0 + timedelta(minutes=minutes) if minutes is not None else None,
        withdrawn=withdrawn,
        escalation_steps=list(steps),
    )


def test_alerts_are_summarised_per_finding_and_model_with_time_to_acknowledge() -> None:
    """Five bleeds: three acknowledged after 2, 4 and 30 minutes (one after escalating once),
    one withdrawn, one still open after two escalations: median 4, p90 30; escalations per step
    {1: 2, 2: 1}."""
    alerts = [
        _alert(1, minutes=2),
        _alert(2, minutes=4),
        _alert(3, minutes=30, steps=(1,)),
        _alert(4, minutes=None, withdrawn=True),
        _alert(5, minutes=None, steps=(1, 2)),
    ]
    (summary,) = summarise(alerts)
    assert (summary.finding, summary.model) == ("intracranial-hemorrhage", "ich-reference/1")
    assert (summary.alerts, summary.acknowledged, summary.withdrawn, summary.open) == (5, 3, 1, 1)
    assert (summary.median_minutes, summary.p90_minutes) == (4, 30)
    assert summary.escalations_per_step == {1: 2, 2: 1}
    text = summary_text([summary], T0)
    assert "intracranial-hemorrhage" in text and "1: 2, 2: 1" in text
    assert "2.25." not in text  # no study (or patient) identifiers in the report


def test_the_plot_is_written_even_without_any_alert(tmp_path: Path) -> None:
    for alerts in ([], [_alert(1, minutes=3, steps=(1,))]):
        path = plot_alerts(alerts, summarise(alerts), tmp_path / f"alerts-{len(alerts)}.png")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary_text([], T0).endswith("none")


def test_alert_metric_labels_name_finding_and_model_never_the_study() -> None:
    assert alert_labels(ICH.format(n=7)) == {
        "finding": "intracranial-hemorrhage",
        "model": "ich-reference/1",
    }
    assert alert_labels("not-a-key") == {"finding": "unknown", "model": "unknown"}
    TIME_TO_ACKNOWLEDGE.labels(**alert_labels(ICH.format(n=7))).observe(90)
    text = exposition().decode()
    assert (
        'radmesh_alert_time_to_acknowledge_seconds_bucket{finding="intracranial-hemorrhage"' in text
    )
    assert "2.25.7" not in text
