"""shared.telemetry: patient data never reaches a log line; trace context survives AMQP headers."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.telemetry import extract_trace_context, inject_trace_context, redact_patient_data


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
