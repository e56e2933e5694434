"""shared.errors and the bus's classification: what happens to a message that failed."""

from __future__ import annotations

import aiohttp
import pytest

from shared.bus import classify_error, header_count
from shared.errors import (
    InvalidMessage,
    RemoteConflict,
    RemoteRejected,
    RemoteUnavailable,
    remote_error_for,
)


def test_server_errors_and_throttling_are_transient() -> None:
    """5xx, 408 and 429 answers are retried."""
    for status in (500, 502, 503, 504, 408, 429):
        error = remote_error_for(status, "FHIR write failed", url="http://127.0.0.1/fhir")
        assert isinstance(error, RemoteUnavailable)
        assert classify_error(error) == "transient"


def test_a_conflict_is_retried_and_keeps_the_payload() -> None:
    """409 (a concurrent write won, e.g. HAPI refusing the second of two conditional creates of
    one Device) is retried: the retry finds the winner's resource."""
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error"}]}
    error = remote_error_for(409, "FHIR transaction", url="http://127.0.0.1/fhir", payload=outcome)
    assert isinstance(error, RemoteConflict)
    assert error.payload == outcome and error.status == 409
    assert classify_error(error) == "transient"


def test_a_version_guarded_write_that_lost_a_race_is_retried() -> None:
    """412 (an If-Match on a version another writer replaced: a verdict and a retraction on one
    report at once) is a conflict too: the retry re-reads the resource and writes against it."""
    error = remote_error_for(412, "FHIR transaction", url="http://127.0.0.1/fhir")
    assert isinstance(error, RemoteConflict) and error.status == 412
    assert classify_error(error) == "transient"


def test_client_errors_are_permanent_and_keep_the_payload() -> None:
    """A 4xx is dead-lettered at once, with the server's OperationOutcome kept for the reason."""
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error"}]}
    error = remote_error_for(422, "FHIR write failed", url="http://127.0.0.1/fhir", payload=outcome)
    assert isinstance(error, RemoteRejected)
    assert error.payload == outcome
    assert "422 from http://127.0.0.1/fhir" in str(error)
    assert classify_error(error) == "permanent"


def test_network_failures_are_transient_and_unknown_exceptions_are_bugs() -> None:
    """Connection errors and timeouts retry; anything unexpected is dead-lettered as a bug."""
    assert classify_error(aiohttp.ClientConnectionError("refused")) == "transient"
    assert classify_error(TimeoutError()) == "transient"
    assert classify_error(InvalidMessage("bad")) == "permanent"
    assert classify_error(KeyError("x")) == "bug"


def test_error_text_never_carries_the_query_string() -> None:
    """Search parameters (e.g. an accession number) stay out of the logged text; the full URL is
    kept on the error for code that needs it."""
    url = "http://127.0.0.1/fhir/ServiceRequest?identifier=ACC-0042&_count=1"
    error = remote_error_for(503, "FHIR GET ServiceRequest", url=url)
    assert "ACC-0042" not in str(error)
    assert "from http://127.0.0.1/fhir/ServiceRequest)" in str(error)
    assert isinstance(error, RemoteUnavailable) and error.url == url


def test_attempt_header_counts_are_whole_numbers_or_none() -> None:
    """The retry count header is read as a whole number (int or digits); anything else, a
    negative or an absurd count is None, which the bus dead-letters instead of crashing on."""
    assert [header_count(v) for v in (0, 3, "4", b"5")] == [0, 3, 4, 5]
    assert [header_count(v) for v in ("abc", -1, 10**9, 1.5, None, True, "")] == [None] * 7


@pytest.mark.parametrize("value", ["²", "①", "٣", "9" * 5000, b"9" * 5000, " ", "0x10", "1e3"])
def test_attempt_headers_that_only_look_like_digits_are_none(value: str | bytes) -> None:
    """Digits that str.isdigit() takes but int() refuses ("²") or reads ("٣"), and more digits
    than int() converts, are None as well: a header the bus raised on was put back on the
    queue again and again (its consumer crashing each time) until the broker dead-lettered
    it without a reason; such a message is now dead-lettered at once, saying why."""
    assert header_count(value) is None
