"""Logging and tracing set-up shared by every service.

- structlog: JSON when stdout is not a terminal, console otherwise; `correlation_id` and the
  study UID are bound per message with contextvars (`bind_message_context`), `trace_id` and
  `span_id` are added from the current OpenTelemetry span, and `redact_patient_data` removes
  patient names and identifiers from every event before it is rendered (and what the DICOM
  libraries quote from their messages: Python warnings are logged through the same chain).
- OpenTelemetry: one tracer provider per process; the W3C trace context travels in AMQP headers
  (`inject_trace_context` on publish, `extract_trace_context` on consume), so one study is one trace.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import aiohttp
import structlog
import yarl
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.aiohttp_client import create_trace_config
from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter

from shared.metrics import Remote, remote_call_tracing
from shared.settings import TelemetrySettings

__all__ = [
    "PATIENT_DATA_KEYS",
    "QUOTING_LOGGERS",
    "bind_message_context",
    "configure_logging",
    "configure_tracing",
    "extract_trace_context",
    "http_client_tracing",
    "inject_trace_context",
    "redact_patient_data",
    "without_quoted_values",
]

# Log keys that may carry patient names or identifiers (DICOM keywords and FHIR element names,
# compared case-insensitively). Their values never reach a log line.
PATIENT_DATA_KEYS = frozenset(
    key.lower()
    for key in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "OtherPatientIDs",
        "patient_name",
        "patient_id",
        "birth_date",
        "birthDate",
        "name",
        "given",
        "family",
        "mrn",
        "identifier",
        "telecom",
        "address",
        "ssn",
    )
)
REDACTED = "[redacted]"
# Loggers whose messages quote the values they complain about, which are patient data as often
# as not (pydicom: "Invalid value for VR DA: '1950-01-31'."; highdicom: 'The string "SMITH JOHN"
# is unlikely to represent the intended person name …'; Python warnings carry both): their
# messages keep their words, not what they quote.
QUOTING_LOGGERS = frozenset({"pydicom", "highdicom", "py.warnings"})
# From a line's first quote to its last of the same kind: a name with an apostrophe (O'Brien)
# is redacted whole, and an apostrophe in the words at worst redacts more.
_QUOTED = re.compile(r"'.*'|\".*\"")


def without_quoted_values(text: str) -> str:
    """`text` with what it quotes ('…' or "…") replaced by [redacted]."""
    return _QUOTED.sub(REDACTED, text)


def _quotes_values(logger: object) -> bool:
    return isinstance(logger, str) and any(
        logger == name or logger.startswith(f"{name}.") for name in QUOTING_LOGGERS
    )


def redact_patient_data(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: replace the value of any patient-identifying key, at any depth,
    and what a QUOTING_LOGGERS message quotes."""
    if _quotes_values(event_dict.get("logger")) and isinstance(event_dict.get("event"), str):
        event_dict["event"] = without_quoted_values(event_dict["event"])
    redacted: MutableMapping[str, Any] = _redact(event_dict)
    return redacted


def _redact(value: Any) -> Any:
    if isinstance(value, MutableMapping):
        for key in list(value):
            if isinstance(key, str) and key.lower() in PATIENT_DATA_KEYS:
                value[key] = REDACTED
            else:
                value[key] = _redact(value[key])
        return value
    if isinstance(value, list | tuple):
        return type(value)(_redact(item) for item in value)
    return value


def _add_trace_ids(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        event_dict["trace_id"] = format(span_context.trace_id, "032x")
        event_dict["span_id"] = format(span_context.span_id, "016x")
    return event_dict


# Libraries whose INFO records describe their own internals, not events of radmesh.
CHATTY_LIBRARIES = ("highdicom",)


def configure_logging(service: str, settings: TelemetrySettings) -> None:
    """Set up structlog (and route stdlib logging through the same level) for one service."""
    render_json = settings.log_format == "json" or (
        settings.log_format == "auto" and not sys.stdout.isatty()
    )
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if render_json else structlog.dev.ConsoleRenderer()
    )
    level = logging.getLevelNamesMapping()[settings.log_level]
    shared_processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_trace_ids,
        redact_patient_data,
    ]
    # Libraries' standard-library log records (aiohttp, aio-pika, FastStream) go through the
    # same processors, redaction included, and come out in the same format.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared_processors],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    # highdicom narrates every module it copies into an SR at INFO (some fifteen lines per SR,
    # two thirds of the mapper's log and a share of its CPU): its warnings still come through.
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    # Python warnings (pydicom's and highdicom's quote header values) are log records of
    # `py.warnings` then, redacted like the rest, not raw lines on stderr.
    logging.captureWarnings(True)
    structlog.configure(
        processors=[*shared_processors, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)


def configure_tracing(
    service: str, settings: TelemetrySettings, exporter: SpanExporter | None = None
) -> TracerProvider:
    """Install this process's tracer provider: the given exporter (tests), OTLP, or none."""
    provider = TracerProvider(resource=Resource.create({"service.name": f"radmesh-{service}"}))
    provider.add_span_processor(_WithoutQueryStrings())
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif settings.otlp_endpoint:
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint))
        )
    trace.set_tracer_provider(provider)
    # A server span per HTTP request (OpenTelemetry's aiohttp-server instrumentation, added to
    # every aiohttp Application made from now on), continuing the caller's trace; not for the
    # health probes and the metrics scrape.
    os.environ.setdefault("OTEL_PYTHON_AIOHTTP_SERVER_EXCLUDED_URLS", "/healthz,/readyz,/metrics")
    instrumentor = AioHttpServerInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=provider)
    return provider


class _WithoutQueryStrings(SpanProcessor):
    """Query strings leave no span: the server instrumentation records the request target with
    its query (a search may name a patient or an accession); rewritten as each span starts."""

    _URL_KEYS = ("http.target", "http.url", "url.full")

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        attributes = span.attributes or {}
        for key in self._URL_KEYS:
            value = attributes.get(key)
            if isinstance(value, str) and "?" in value:
                span.set_attribute(key, value.split("?", 1)[0])
        if attributes.get("url.query"):
            span.set_attribute("url.query", "")


def _without_query(url: yarl.URL) -> str:
    """The URL a client span records: no query string (searches name accession numbers and
    patients), no credentials."""
    return str(url.with_query(None).with_fragment(None).with_user(None))


def http_client_tracing(remote: Remote) -> list[aiohttp.TraceConfig]:
    """The trace configs of a remote adapter's aiohttp session: a client span per call
    (OpenTelemetry's aiohttp-client instrumentation, named `<remote> <METHOD>`, in the trace of
    the message or request being handled), and its time in radmesh_remote_call_seconds."""

    def name(span: trace.Span, params: aiohttp.TraceRequestStartParams) -> None:
        span.update_name(f"{remote} {params.method}")

    return [
        remote_call_tracing(remote),
        create_trace_config(url_filter=_without_query, request_hook=name),
    ]


def bind_message_context(*, service: str, **values: str | None) -> None:
    """Start a message's log context afresh: the service plus e.g. correlation_id, study UID."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(
        service=service, **{key: value for key, value in values.items() if value is not None}
    )


def inject_trace_context(headers: dict[str, Any]) -> dict[str, Any]:
    """Add the current span's W3C `traceparent` (and `tracestate`) to AMQP headers."""
    carrier: dict[str, str] = {}
    inject(carrier)
    headers.update(carrier)
    return headers


def extract_trace_context(headers: Mapping[str, Any] | None) -> otel_context.Context:
    """The trace context a publisher put in AMQP headers (an empty context when there is none)."""
    carrier = {
        key: value.decode() if isinstance(value, bytes) else str(value)
        for key, value in (headers or {}).items()
        if key in ("traceparent", "tracestate")
    }
    return extract(carrier)
