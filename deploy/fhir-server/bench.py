"""Benchmark of the development FHIR server: creates/s and identifier-search time.

Usage (server started with deploy/fhir-server/up.sh):
    python3 deploy/fhir-server/bench.py [--count 2000] [--base http://127.0.0.1:8080/fhir]

Creates COUNT Observations one POST at a time over one keep-alive connection, then times
`Observation?identifier=system|value` searches over them. Standard library only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import time
import uuid
from typing import Any
from urllib.parse import quote, urlsplit


class Connection:
    def __init__(self, base: str) -> None:
        parts = urlsplit(base)
        self.prefix = parts.path.rstrip("/")
        self.conn = http.client.HTTPConnection(
            parts.hostname or "127.0.0.1", parts.port or 80, timeout=60
        )

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/fhir+json"}
        if payload is not None:
            headers["Content-Type"] = "application/fhir+json"
        self.conn.request(method, f"{self.prefix}/{path}", body=payload, headers=headers)
        resp = self.conn.getresponse()
        data = resp.read()
        return resp.status, json.loads(data) if data else None


def observation(system: str, value: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "identifier": [{"system": system, "value": value}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": "Patient/bench"},
        "valueQuantity": {"value": 60, "unit": "/min"},
    }


def main() -> None:
    default_base = f"http://127.0.0.1:{os.environ.get('RADMESH_FHIR_PORT', '8080')}/fhir"
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", default=default_base)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--searches", type=int, default=20)
    args = parser.parse_args()

    conn = Connection(args.base)
    status, _ = conn.request("GET", "metadata")
    if status != 200:
        raise SystemExit(f"server at {args.base} answered {status} to /metadata")

    system = f"urn:radmesh:bench:{uuid.uuid4().hex}"
    started = time.perf_counter()
    for i in range(args.count):
        status, body = conn.request("POST", "Observation", observation(system, str(i)))
        if status != 201:
            raise SystemExit(f"create {i} failed: {status} {body}")
    elapsed = time.perf_counter() - started
    print(
        f"creates: {args.count} Observations in {elapsed:.2f} s = {args.count / elapsed:.0f} creates/s"
    )

    timings = []
    for n in range(args.searches):
        value = str((n * 97) % args.count)
        t0 = time.perf_counter()
        status, body = conn.request("GET", f"Observation?identifier={quote(system + '|' + value)}")
        timings.append((time.perf_counter() - t0) * 1000)
        if status != 200 or body["total"] != 1:
            raise SystemExit(f"identifier search failed: {status} {body}")
    total = conn.request("GET", "Observation?_summary=count")[1]["total"]
    print(
        f"identifier search over {total} Observations in the store: "
        f"median {statistics.median(timings):.1f} ms, max {max(timings):.1f} ms ({args.searches} searches)"
    )


if __name__ == "__main__":
    main()
