"""shared.messages: envelopes, causation, validation errors that say what is wrong."""

from __future__ import annotations

import json

import pytest

from shared.errors import InvalidMessage, PermanentError
from shared.messages import (
    EVENT_TYPES,
    InferenceCompleted,
    ModelRef,
    StudyDetected,
    StudyRef,
    parse_event,
)


def _detected() -> StudyDetected:
    return StudyDetected(
        study=StudyRef(study_instance_uid="1.2.3"),
        models=(ModelRef(id="ich-reference", version="1"),),
        source="fhir-rest-hook",
    )


def test_follow_keeps_the_correlation_id_and_records_the_cause() -> None:
    """An event derived with `follow` belongs to the same study run and names its cause."""
    detected = _detected()
    completed = detected.follow(
        InferenceCompleted,
        study=detected.study,
        model=detected.models[0],
        findings=(),
        inference_duration_ms=12.5,
    )
    assert completed.correlation_id == detected.correlation_id
    assert completed.causation_id == detected.message_id
    assert completed.message_id != detected.message_id


def test_event_round_trips_through_its_json_body() -> None:
    """The published body parses back into an equal event, envelope included."""
    detected = _detected()
    assert parse_event(StudyDetected, detected.to_json()) == detected


def test_invalid_body_raises_a_permanent_error_naming_the_field() -> None:
    """A body missing a field is an InvalidMessage (dead-lettered at once) that names the field."""
    with pytest.raises(InvalidMessage, match="models: Field required") as raised:
        parse_event(
            StudyDetected,
            b'{"schema_version": 1, "study": {"study_instance_uid": "1"}, "source": "manual"}',
        )
    assert isinstance(raised.value, PermanentError)


def test_body_that_is_not_json_is_an_invalid_message() -> None:
    """Garbage bytes are reported as invalid, not as a crash."""
    with pytest.raises(InvalidMessage, match=r"study\.detected message is invalid"):
        parse_event(StudyDetected, b"\x00not json")


def test_unknown_schema_version_is_rejected() -> None:
    """A future schema version is not silently read as the current one."""
    body = _detected().to_json().replace(b'"schema_version":1', b'"schema_version":2')
    with pytest.raises(InvalidMessage, match="schema_version"):
        parse_event(StudyDetected, body)


def test_every_event_type_is_registered_under_its_routing_key() -> None:
    """The routing keys of the README's pipeline map to their models."""
    assert set(EVENT_TYPES) == {
        "study.detected",
        "study.fetched",
        "structured-report.detected",
        "inference.completed",
        "results.posted",
        "alert.raised",
        "alert.escalation-due",
        "finding.verified",
        "finding.rejected",
        "study.retracted",
        "results.retracted",
    }


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("study_instance_uid", "%00"),
        ("study_instance_uid", ""),
        ("study_instance_uid", "1.2.3#frag"),
        ("study_instance_uid", "1.02.3"),
        ("study_instance_uid", "1." + "2" * 70),
        ("study_instance_uid", "1.2' OR '1'='1"),
        ("imaging_study", "../Patient"),
        ("imaging_study", "Patient/1"),
        ("patient", "http://elsewhere/fhir/Patient/1"),
        ("service_request", "ServiceRequest/"),
    ],
)
def test_malformed_uids_and_references_are_invalid_messages(field: str, value: str) -> None:
    """A study UID that is not a DICOM UID, or a reference that is not `Type/id` of the type the
    field names, is refused where the message is read (dead letter with the field named)."""
    message = json.loads(_detected().to_json())
    message["study"][field] = value
    with pytest.raises(InvalidMessage) as raised:
        parse_event(StudyDetected, json.dumps(message).encode())
    assert f"study.{field}" in str(raised.value)


def test_well_formed_uids_and_references_pass() -> None:
    """UIDs with a zero component and 64 characters, and HAPI's numeric or client ids, pass."""
    uid = "1.2.0." + "3" * 58
    ref = StudyRef(
        study_instance_uid=uid,
        imaging_study="ImagingStudy/3564",
        patient="Patient/p-1.a",
        service_request="ServiceRequest/sr-1",
    )
    assert ref.study_instance_uid == uid


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_a_number_that_is_no_number_is_refused_naming_the_field(number: bytes) -> None:
    """NaN and infinities (and a literal beyond float range) are refused where they stand, not
    carried on into a probability or a duration."""
    completed = InferenceCompleted(
        study=StudyRef(study_instance_uid="1.2.3"),
        model=ModelRef(id="ich-reference", version="1"),
        findings=(),
        inference_duration_ms=12.5,
    )
    body = completed.to_json().replace(
        b'"inference_duration_ms":12.5', b'"inference_duration_ms":' + number
    )
    with pytest.raises(
        InvalidMessage, match="inference_duration_ms: Input should be a finite number"
    ):
        parse_event(InferenceCompleted, body)
