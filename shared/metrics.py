"""radmesh's Prometheus metrics: one home for every metric, served by each service at
`/metrics` (text exposition format).

- `radmesh_messages_total{service, event_type, outcome}`: messages a service's bus handled
  (`handled`, `retried`, `dead_lettered`);
- `radmesh_message_seconds{service, event_type}`: how long a handler took;
- `radmesh_alerts_raised_total{finding, model}` and `radmesh_alert_escalations_total{finding,
  model, step}`: critical alerts and their escalation steps (notifier);
- `radmesh_alert_time_to_acknowledge_seconds{finding, model}`: from the alert to its
  acknowledgement (verification), the figure a critical-results policy is judged by;
- `radmesh_results_retracted_total{source}`: runs retracted because their images were deleted
  or rejected in the PACS or their study changed patient (verification);
- `radmesh_studies_skipped_total{reason}`: announcements that started no run (subscriber):
  not-available, opted-out, no-model-applies, in-flight, already-ran, already-claimed, gone,
  radmesh-output, unusable;
- `radmesh_runs_redriven_total{missing}`: runs whose verification Task or alert was missing,
  announced again by the mapper's consistency sweep.

Labels never carry patient or study identifiers.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from shared.identifiers import FindingValue

__all__ = [
    "ALERTS_RAISED",
    "ALERT_ESCALATIONS",
    "MESSAGES",
    "MESSAGE_SECONDS",
    "METRICS_CONTENT_TYPE",
    "NOTIFICATION_GAPS",
    "RESULTS_RETRACTED",
    "RUNS_REDRIVEN",
    "STUDIES_SKIPPED",
    "TIME_TO_ACKNOWLEDGE",
    "alert_labels",
    "exposition",
]

MESSAGES = Counter(
    "radmesh_messages",
    "Messages a service's bus handled, by outcome",
    ["service", "event_type", "outcome"],
)
MESSAGE_SECONDS = Histogram(
    "radmesh_message_seconds",
    "Time a handler took for one message",
    ["service", "event_type"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
ALERTS_RAISED = Counter(
    "radmesh_alerts_raised", "Critical-finding alerts raised", ["finding", "model"]
)
ALERT_ESCALATIONS = Counter(
    "radmesh_alert_escalations",
    "Escalation steps of unacknowledged critical alerts",
    ["finding", "model", "step"],
)
TIME_TO_ACKNOWLEDGE = Histogram(
    "radmesh_alert_time_to_acknowledge_seconds",
    "From a critical alert to its acknowledgement",
    ["finding", "model"],
    buckets=(30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400),
)
RESULTS_RETRACTED = Counter(
    "radmesh_results_retracted",
    "AI runs retracted because their images changed in the PACS or their study changed patient",
    ["source"],
)
STUDIES_SKIPPED = Counter(
    "radmesh_studies_skipped",
    "Announcements that started no run, by kind of reason (the log says which study and why)",
    ["reason"],
)
NOTIFICATION_GAPS = Counter(
    "radmesh_notification_gaps",
    "Gaps in a Subscription's event counter (notifications that never came), by how the "
    "subscriber recovered them: the server's $events, or a search of what changed",
    ["via"],
)
RUNS_REDRIVEN = Counter(
    "radmesh_runs_redriven",
    "Runs announced again by the mapper's consistency sweep, by what was missing",
    ["missing"],
)
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST


def alert_labels(key: str) -> dict[str, str]:
    """finding and model of an alert, from its key `<study>/<model>/<version>/<finding>/<index>`
    (the study UID is dropped: it identifies a patient's study)."""
    try:
        finding = FindingValue.parse(key)
    except ValueError:
        return {"finding": "unknown", "model": "unknown"}
    return {
        "finding": finding.finding_key,
        "model": f"{finding.run.model_id}/{finding.run.model_version}",
    }


def exposition() -> bytes:
    """All of this process's metrics in the Prometheus text format."""
    return generate_latest()
