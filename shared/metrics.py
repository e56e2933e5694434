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
- `radmesh_runs_redriven_total{missing}`: runs announced again (the mapper's consistency
  sweep: verification-task, alert, structured-report; the subscriber's: announcement,
  finished-run, abandoned);
- `radmesh_messages_published_total{service, event_type}`: events a service published;
- `radmesh_dead_letters_total{service, event_type, reason}`: messages dead-lettered, by class of
  reason (invalid-message, permanent-error, retries-exhausted, bug);
- `radmesh_queue_depth{service, queue}`: messages waiting in the service's own queues as it last
  looked (work, dead-letter, retry-delay; every `RADMESH_BROKER__DEPTH_INTERVAL_SECONDS`);
- `radmesh_remote_call_seconds{remote, method, outcome}`: every HTTP call to the FHIR server,
  the PACS, the model server and the identity provider (outcome: 2xx, 3xx, 4xx, 5xx,
  unavailable);
- `radmesh_model_inference_seconds{model, version, outcome}`: one model call (inference);
- `radmesh_verification_backlog{priority}`: AI reports waiting for a radiologist's decision
  (verification Tasks `requested`), as the verification service last counted.

Labels never carry patient or study identifiers.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Literal

import aiohttp
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from shared.identifiers import FindingValue

__all__ = [
    "ALERTS_RAISED",
    "ALERT_ESCALATIONS",
    "DEAD_LETTERS",
    "MESSAGES",
    "MESSAGES_PUBLISHED",
    "MESSAGE_SECONDS",
    "METRICS_CONTENT_TYPE",
    "MODEL_INFERENCE_SECONDS",
    "NOTIFICATION_GAPS",
    "QUEUE_DEPTH",
    "REMOTE_CALL_SECONDS",
    "REPORTS_NOT_IMPORTED",
    "RESULTS_RETRACTED",
    "RUNS_REDRIVEN",
    "STUDIES_SKIPPED",
    "TIME_TO_ACKNOWLEDGE",
    "VERIFICATION_BACKLOG",
    "alert_labels",
    "exposition",
    "remote_call_tracing",
]

Remote = Literal["fhir", "dicomweb", "model-server", "identity-provider"]

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
REPORTS_NOT_IMPORTED = Counter(
    "radmesh_structured_reports_not_imported",
    "SR documents in the PACS that radmesh did not map into FHIR, by kind of reason "
    "(radmesh's own, a product the registry does not import, no finding it maps)",
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
    "Runs announced again by a sweep (the mapper's or the subscriber's), by what was missing",
    ["missing"],
)
MESSAGES_PUBLISHED = Counter(
    "radmesh_messages_published", "Events a service published", ["service", "event_type"]
)
DEAD_LETTERS = Counter(
    "radmesh_dead_letters",
    "Messages dead-lettered, by class of reason (radmesh dlq list says which and why)",
    ["service", "event_type", "reason"],
)
QUEUE_DEPTH = Gauge(
    "radmesh_queue_depth",
    "Messages waiting in the service's own queues, as it last looked",
    ["service", "queue"],
)
REMOTE_CALL_SECONDS = Histogram(
    "radmesh_remote_call_seconds",
    "HTTP calls to the FHIR server, the PACS, the model server and the identity provider",
    ["remote", "method", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
MODEL_INFERENCE_SECONDS = Histogram(
    "radmesh_model_inference_seconds",
    "One call of a model (the inference request), by model and outcome",
    ["model", "version", "outcome"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
VERIFICATION_BACKLOG = Gauge(
    "radmesh_verification_backlog",
    "AI reports waiting for a radiologist's decision (verification Tasks requested)",
    ["priority"],
)
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST


def remote_call_tracing(remote: Remote) -> aiohttp.TraceConfig:
    """An aiohttp TraceConfig for a ClientSession of a remote adapter: each request is timed into
    `radmesh_remote_call_seconds` (the URL is not a label: it may name a study)."""
    tracing = aiohttp.TraceConfig()

    async def started(
        session: aiohttp.ClientSession, context: SimpleNamespace, params: object
    ) -> None:
        context.radmesh_started = time.perf_counter()

    def observe(context: SimpleNamespace, method: str, outcome: str) -> None:
        began = getattr(context, "radmesh_started", None)
        if began is not None:
            REMOTE_CALL_SECONDS.labels(remote, method.upper(), outcome).observe(
                time.perf_counter() - began
            )

    async def ended(
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        observe(context, params.method, f"{params.response.status // 100}xx")

    async def failed(
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestExceptionParams,
    ) -> None:
        observe(context, params.method, "unavailable")

    tracing.on_request_start.append(started)
    tracing.on_request_end.append(ended)
    tracing.on_request_exception.append(failed)
    return tracing


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
