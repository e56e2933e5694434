"""shared.service_status: `radmesh status`'s line per service, read from a service's /metrics
(served here by a loopback HTTP server with a registry of the test's own)."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from shared.service_status import read_summary, summary_line


@pytest.fixture
def metrics_port() -> Iterator[int]:
    registry = CollectorRegistry()
    messages = Counter(
        "radmesh_messages", "", ["service", "event_type", "outcome"], registry=registry
    )
    messages.labels("mapper", "inference.completed", "handled").inc(18)
    messages.labels("mapper", "inference.completed", "retried").inc(2)
    messages.labels("mapper", "inference.completed", "dead_lettered").inc(1)
    seconds = Histogram(
        "radmesh_message_seconds",
        "",
        ["service", "event_type"],
        buckets=(0.1, 0.5, 1, 5),
        registry=registry,
    )
    for value in [0.05] * 10 + [0.4] * 8 + [3.0] * 2:
        seconds.labels("mapper", "inference.completed").observe(value)
    remote = Histogram(
        "radmesh_remote_call_seconds", "", ["remote", "method", "outcome"], registry=registry
    )
    remote.labels("fhir", "POST", "2xx").observe(0.02)
    remote.labels("fhir", "POST", "5xx").observe(0.02)
    remote.labels("fhir", "POST", "unavailable").observe(5)
    backlog = Gauge("radmesh_verification_backlog", "", ["priority"], registry=registry)
    backlog.labels("stat").set(3)
    backlog.labels("routine").set(0)
    body = generate_latest(registry)

    class Metrics(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the name http.server calls
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_a_services_figures_are_summed_and_its_p90_read_from_the_buckets(
    metrics_port: int,
) -> None:
    summary = read_summary("mapper", metrics_port)
    assert summary.up
    assert (summary.handled, summary.retried, summary.dead_lettered) == (18, 2, 1)
    assert summary.handler_p90_seconds == 0.5  # 18 of the 20 took at most 0.5 s
    assert summary.remote_failures == 2
    assert summary.backlog == {"stat": 3, "routine": 0}
    line = summary_line(summary)
    assert line.split()[:4] == ["mapper", "18", "2", "1"]
    assert "awaiting a radiologist: stat 3" in line


def test_a_service_not_answering_says_so() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    assert summary_line(read_summary("fetcher", port)) == "fetcher        not answering"
