"""What `radmesh status` shows of each service besides its queues: read from the service's own
`/metrics` on this host (its port from its settings): up or not, messages handled, retried and
dead-lettered, the 90th percentile handler time, failed calls to remote servers, and for the
verification service the AI reports waiting for a radiologist."""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["ServiceSummary", "read_summary", "summary_line"]


@dataclass
class ServiceSummary:
    service: str
    up: bool
    handled: float = 0
    retried: float = 0
    dead_lettered: float = 0
    handler_p90_seconds: float | None = None
    remote_failures: float = 0
    backlog: dict[str, float] = field(default_factory=dict)


def _quantile(buckets: dict[float, float], quantile: float) -> float | None:
    """The bucket bound under which `quantile` of the observations fell (cumulative buckets)."""
    if not buckets:
        return None
    total = buckets.get(float("inf"), max(buckets.values()))
    if total <= 0:
        return None
    for bound in sorted(buckets):
        if buckets[bound] >= quantile * total:
            return bound
    return None


def read_summary(service: str, port: int, timeout_seconds: float = 2.0) -> ServiceSummary:
    """The service's figures since it started (a service not answering is `up=False`)."""
    try:
        with urllib.request.urlopen(  # loopback: the service on this host
            f"http://127.0.0.1:{port}/metrics", timeout=timeout_seconds
        ) as answer:
            text = answer.read().decode()
    except (urllib.error.URLError, OSError):
        return ServiceSummary(service, up=False)
    summary = ServiceSummary(service, up=True)
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "radmesh_messages_total":
                outcome = labels.get("outcome")
                if outcome == "handled":
                    summary.handled += sample.value
                elif outcome == "retried":
                    summary.retried += sample.value
                elif outcome == "dead_lettered":
                    summary.dead_lettered += sample.value
            elif sample.name == "radmesh_message_seconds_bucket":
                bound = float(labels["le"])
                buckets[bound] = buckets.get(bound, 0) + sample.value
            elif sample.name == "radmesh_remote_call_seconds_count" and labels.get(
                "outcome"
            ) in ("5xx", "unavailable"):
                summary.remote_failures += sample.value
            elif sample.name == "radmesh_verification_backlog":
                summary.backlog[labels["priority"]] = sample.value
    summary.handler_p90_seconds = _quantile(buckets, 0.9)
    return summary


def summary_line(summary: ServiceSummary) -> str:
    if not summary.up:
        return f"{summary.service:14} not answering"
    p90 = summary.handler_p90_seconds
    line = (
        f"{summary.service:14} {summary.handled:>8.0f} {summary.retried:>8.0f} "
        f"{summary.dead_lettered:>6.0f} {'-' if p90 is None else f'≤{p90:g} s':>9} "
        f"{summary.remote_failures:>8.0f}"
    )
    if summary.backlog:
        waiting = ", ".join(f"{k} {v:.0f}" for k, v in summary.backlog.items() if v)
        line += f"   awaiting a radiologist: {waiting or 'none'}"
    return line
