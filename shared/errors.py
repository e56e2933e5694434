"""The radmesh exception tree: what a consumer does with the message that raised it.

    RadmeshError
    ├── TransientError            retry with exponential backoff through the delay queues;
    │   │                         after the last retry the message is dead-lettered
    │   ├── RemoteUnavailable     a server answered 5xx/429, timed out or refused the connection
    │   ├── BrokerUnavailable     RabbitMQ did not take (confirm) a publish: connection or channel
    │   │                         lost, or no confirm in time
    │   └── RemoteConflict        a server answered 409 or 412: a concurrent write won (two runs
    │                             conditionally creating one Device; a version-guarded update
    │                             whose resource changed since it was read); the retry re-reads
    │                             and finds what the other wrote
    └── PermanentError            dead-letter at once with the reason: retrying cannot fix it
        ├── InvalidMessage        the body is not JSON or does not validate against its event model
        ├── RemoteRejected        a server answered a 4xx that retrying cannot fix (keeps its payload,
        │                         e.g. the FHIR OperationOutcome)
        └── ConfigurationError    settings or the model registry are invalid (the service refuses to start)

Anything else a handler raises is a bug: the message is dead-lettered with the exception's text,
so it is never lost and can be replayed (`radmesh dlq replay`) once the bug is fixed.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BrokerUnavailable",
    "ConfigurationError",
    "InvalidMessage",
    "PermanentError",
    "RadmeshError",
    "RemoteConflict",
    "RemoteRejected",
    "RemoteUnavailable",
    "TransientError",
    "remote_error_for",
]


class RadmeshError(Exception):
    """Root of every error radmesh raises on purpose."""


class TransientError(RadmeshError):
    """Retrying later may succeed: the message goes to a delay queue, then back to its queue."""


class BrokerUnavailable(TransientError):
    """An event could not be published (the broker is restarting, the connection is being
    re-established): whoever asked for it should try again later (a hook answers 503)."""


class PermanentError(RadmeshError):
    """Retrying cannot succeed: the message goes to its queue's dead-letter queue with the reason."""


class InvalidMessage(PermanentError):
    """A message body that is not valid JSON for its event model."""


class ConfigurationError(PermanentError):
    """Invalid settings or model registry; raised at start-up."""


class _RemoteError(RadmeshError):
    """Keeps what a remote server said: its URL, status and payload."""

    def __init__(self, message: str, *, url: str, status: int | None, payload: Any = None) -> None:
        # The text (logged, and kept in dead-letter headers) names the URL without its query
        # string: search parameters can carry patient identifiers or accession numbers.
        where = url.split("?", 1)[0]
        super().__init__(
            f"{message} ({status if status is not None else 'no answer'} from {where})"
        )
        self.url = url
        self.status = status
        self.payload = payload


class RemoteUnavailable(_RemoteError, TransientError):
    """The remote server is down, overloaded (5xx, 429) or too slow: retry later."""


class RemoteConflict(_RemoteError, TransientError):
    """409 Conflict: another request changed or created the same resource at the same moment
    (HAPI refuses the second of two concurrent conditional creates on one identifier with
    HAPI-2745 instead of creating a duplicate). Retrying sees the winner's write."""


class RemoteRejected(_RemoteError, PermanentError):
    """The remote server refused the request (4xx): the payload says why (e.g. OperationOutcome)."""


def remote_error_for(status: int, message: str, *, url: str, payload: Any = None) -> RadmeshError:
    """The error a remote HTTP answer maps to: 5xx, 408 and 429 are transient, 409 and 412 (an
    `If-Match` on a version someone else replaced) a transient conflict, other 4xx permanent."""
    if status >= 500 or status in (408, 425, 429):
        return RemoteUnavailable(message, url=url, status=status, payload=payload)
    if status in (409, 412):
        return RemoteConflict(message, url=url, status=status, payload=payload)
    return RemoteRejected(message, url=url, status=status, payload=payload)
