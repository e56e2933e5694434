"""Benchmark of the local HAPI FHIR server: creates/s, transactions and identifier searches.

Usage (server started with deploy/hapi-fhir/up.sh):
    python3 deploy/hapi-fhir/bench.py [--count 500] [--base http://127.0.0.1:8080/fhir]

Creates COUNT Observations one POST at a time over one keep-alive connection (each validated
against R4 core, as every write is), then the same number again as transaction Bundles of 10
conditional creates (the shape of the mapper's writes; the ratio per resource against single
POSTs is printed), then times `Observation?identifier=system|value` searches. Standard library
only.
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


def observation(system: str, value: str, patient: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "identifier": [{"system": system, "value": value}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": patient},
        "valueQuantity": {
            "value": 60,
            "unit": "/min",
            "system": "http://unitsofmeasure.org",
            "code": "/min",
        },
    }


def transaction(system: str, values: list[str], patient: str) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": observation(system, value, patient),
                "request": {
                    "method": "POST",
                    "url": "Observation",
                    "ifNoneExist": f"identifier={system}|{value}",
                },
            }
            for value in values
        ],
    }


def main() -> None:
    default_base = f"http://127.0.0.1:{os.environ.get('RADMESH_FHIR_PORT', '8080')}/fhir"
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", default=default_base)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--searches", type=int, default=20)
    args = parser.parse_args()

    conn = Connection(args.base)
    status, _ = conn.request("GET", "metadata")
    if status != 200:
        raise SystemExit(f"server at {args.base} answered {status} to /metadata")

    status, patient = conn.request("POST", "Patient", {"resourceType": "Patient"})
    if status != 201:
        raise SystemExit(f"creating the benchmark's Patient failed: {status} {patient}")
    subject = f"Patient/{patient['id']}"
    system = f"urn:radmesh:bench:{uuid.uuid4().hex}"
    started = time.perf_counter()
    for i in range(args.count):
        status, body = conn.request("POST", "Observation", observation(system, str(i), subject))
        if status != 201:
            raise SystemExit(f"create {i} failed: {status} {body}")
    single = time.perf_counter() - started
    print(
        f"creates: {args.count} Observations in {single:.2f} s = {args.count / single:.0f} creates/s"
    )
    batch_system = f"{system}:tx"
    started = time.perf_counter()
    for first in range(0, args.count, 10):
        values = [str(i) for i in range(first, min(first + 10, args.count))]
        status, body = conn.request("POST", "", transaction(batch_system, values, subject))
        if status != 200:
            raise SystemExit(f"transaction at {first} failed: {status} {body}")
    batched = time.perf_counter() - started
    print(
        f"transactions of 10 conditional creates: {args.count} Observations in {batched:.2f} s"
        f" = {args.count / batched:.0f} resources/s ({single / batched:.2f}x single POSTs)"
    )

    timings = []
    for n in range(args.searches):
        value = str((n * 97) % args.count)
        t0 = time.perf_counter()
        status, body = conn.request("GET", f"Observation?identifier={quote(system + '|' + value)}")
        timings.append((time.perf_counter() - t0) * 1000)
        if status != 200 or body["total"] != 1:
            raise SystemExit(f"identifier search failed: {status} {body}")
    total = conn.request("GET", "Observation?_summary=count")[1].get("total", "?")
    print(
        f"identifier search over {total} Observations in the store: "
        f"median {statistics.median(timings):.1f} ms, max {max(timings):.1f} ms ({args.searches} searches)"
    )


if __name__ == "__main__":
    main()
