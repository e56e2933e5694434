"""services.verification.audit: the AuditEvent of a request, whatever the request named."""

from __future__ import annotations

import json

from services.verification.audit import audit_event
from shared.auth import Principal

RAD = Principal(
    issuer="http://idp.example/realms/radmesh",
    subject="sub-1",
    username="rad1",
    name="Rita Adler",
    given_name=None,
    family_name=None,
    roles=frozenset({"radiologist"}),
    fhir_user=None,
    client="radmesh-review",
)


def test_what_a_refused_request_named_is_audited_as_escaped_text() -> None:
    """A Task id with a control character (not a FHIR id) and a Task the server does not have
    (404) are recorded as text, the character escaped, not as references: HAPI refused the
    AuditEvent referring to a Task it does not have (referential integrity) and the one whose
    JSON carried a `\\b` escape, so probing for Tasks went unrecorded."""
    event = audit_event(RAD, "update", ["Task/x\x08y", "Task/nope"], status=404, address=None)
    whats = [entity["what"] for entity in event["entity"]]
    assert whats == [
        {"display": "not a resource reference: 'Task/x\\x08y'"},
        {"display": "not on the server: Task/nope"},
    ]
    assert "\\b" not in json.dumps(event)  # no control character left to escape


def test_what_a_request_read_or_changed_is_audited_as_references() -> None:
    event = audit_event(RAD, "update", ["Task/t-1", "Task/x\x08"], status=409, address=None)
    assert [entity["what"] for entity in event["entity"]] == [
        {"reference": "Task/t-1"},
        {"display": "not a resource reference: 'Task/x\\x08'"},
    ]
