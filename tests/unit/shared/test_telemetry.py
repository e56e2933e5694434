"""shared.telemetry: patient data never reaches a log line; trace context survives AMQP headers."""

from __future__ import annotations

import json
import logging
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.settings import TelemetrySettings
from shared.telemetry import (
    configure_logging,
    extract_trace_context,
    http_client_tracing,
    inject_trace_context,
    redact_patient_data,
)


def test_patient_names_and_identifiers_are_redacted_at_any_depth() -> None:
    """DICOM keywords and FHIR element names that identify a patient are replaced, nested too."""
    event: dict[str, Any] = {
        "event": "study_loaded",
        "PatientName": "Doe^Jane",
        "patient_id": "MRN-1",
        "study": {"PatientID": "MRN-1", "study_instance_uid": "1.2.3"},
        "resources": [{"name": [{"family": "Doe"}]}],
    }
    redacted = redact_patient_data(None, "info", event)
    assert "Doe" not in repr(redacted)
    assert "MRN-1" not in repr(redacted)
    assert redacted["study"]["study_instance_uid"] == "1.2.3"


def test_trace_context_round_trips_through_amqp_headers(
    span_exporter: InMemorySpanExporter,
) -> None:
    """A span started from extracted headers continues the publisher's trace."""
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("publish") as publisher_span:
        headers = inject_trace_context({})
    with tracer.start_as_current_span("consume", context=extract_trace_context(headers)) as span:
        consumer_trace_id = span.get_span_context().trace_id
    assert consumer_trace_id == publisher_span.get_span_context().trace_id


def test_missing_trace_headers_give_an_empty_context() -> None:
    """A message without traceparent starts a new trace instead of failing."""
    context = extract_trace_context(None)
    assert trace.get_current_span(context).get_span_context().is_valid is False


def test_what_dicom_libraries_and_warnings_quote_is_redacted_their_words_kept() -> None:
    """pydicom and highdicom quote the header values they complain about (a birth date, a name
    without carets), in their log records and in Python warnings: the quoted values go, the
    words stay; radmesh's own events are left as they are."""
    records = [
        {"event": "Invalid value for VR DA: '1950-01-31'.", "logger": "pydicom"},
        {"event": 'Invalid value for VR PN: "O\'BRIEN PAT".', "logger": "pydicom.valuerep"},
        {
            "event": 'base.py:199: UserWarning: The string "DOE JANE" is unlikely to represent'
            " the intended person name\n  check_person_name(patient_name)",
            "logger": "py.warnings",
        },
    ]
    redacted = [redact_patient_data(None, "warning", dict(record))["event"] for record in records]
    assert redacted == [
        "Invalid value for VR DA: [redacted].",
        "Invalid value for VR PN: [redacted].",
        "base.py:199: UserWarning: The string [redacted] is unlikely to represent the intended"
        " person name\n  check_person_name(patient_name)",
    ]
    own = {"event": "study_skipped", "reason": "series description 'AX' does not match"}
    assert redact_patient_data(None, "info", dict(own)) == own


async def test_http_calls_make_client_and_server_spans_without_query_strings(
    span_exporter: InMemorySpanExporter,
) -> None:
    """A call through an adapter's session (http_client_tracing) to a service's HTTP server
    gives a client span `<remote> <METHOD>` and a server span in the same trace; neither
    records the query string (a search may name a patient or an accession)."""
    application = web.Application()  # made after configure_tracing: instrumented

    async def search(request: web.Request) -> web.Response:
        return web.json_response({"resourceType": "Bundle"})

    application.router.add_get("/fhir/Patient", search)
    runner = web.AppRunner(application)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    span_exporter.clear()
    try:
        async with (
            aiohttp.ClientSession(trace_configs=http_client_tracing("fhir")) as http,
            http.get(f"http://127.0.0.1:{port}/fhir/Patient?identifier=MRN-CANARY-7") as answer,
        ):
            assert answer.status == 200
    finally:
        await runner.cleanup()
    spans = span_exporter.get_finished_spans()
    client = next(s for s in spans if s.name == "fhir GET")
    server = next(s for s in spans if s.kind == trace.SpanKind.SERVER)
    assert server.name == "GET /fhir/Patient"
    assert client.context.trace_id == server.context.trace_id
    for span in (client, server):
        recorded = " ".join(str(value) for value in (span.attributes or {}).values())
        assert "MRN-CANARY-7" not in recorded and "identifier=" not in recorded, span.attributes


def test_highdicom_narration_is_left_out_of_the_log_and_its_warnings_kept(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """highdicom logs each module it copies into an SR at INFO (about fifteen lines per SR):
    those stay out of a service's log at level INFO; its warnings and radmesh's own INFO stay."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging.getLogger("highdicom").level
    try:
        configure_logging("mapper", TelemetrySettings(log_format="json", log_level="INFO"))
        logging.getLogger("highdicom.base").info("copy attributes of module Patient")
        logging.getLogger("highdicom.sr").warning("a quoted value")
        logging.getLogger("aiohttp.access").info("GET /readyz")
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    finally:
        root.handlers, root.level = saved[0], saved[1]
        logging.getLogger("highdicom").setLevel(saved[2])
        structlog.reset_defaults()
    assert [(line["logger"], line["event"]) for line in lines] == [
        ("highdicom.sr", "a quoted value"),
        ("aiohttp.access", "GET /readyz"),
    ]
