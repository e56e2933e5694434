"""Plain HTTP access to the development FHIR server (deploy/fhir-server) for the tests that check
the server itself: a small synchronous client, the probe that fails clearly when the server is
down, and builders for tagged resources and transaction/batch Bundles."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import pytest
import requests

__all__ = [
    "FHIR_JSON",
    "TAG_SYSTEM",
    "FhirHttp",
    "Json",
    "answering_fhir",
    "fail_not_answering",
    "post_entry",
    "tagged",
    "transaction",
    "urn",
]

FHIR_JSON = "application/fhir+json"
TAG_SYSTEM = "urn:radmesh:test"
Json = dict[str, Any]


class FhirHttp:
    """Minimal synchronous FHIR client bound to the development server."""

    def __init__(self, base: str, timeout: float = 30.0) -> None:
        self.base = base
        self.timeout = timeout
        self.http = requests.Session()
        self.http.headers.update({"Accept": FHIR_JSON, "Content-Type": FHIR_JSON})

    def url(self, path: str) -> str:
        return f"{self.base}/{path.lstrip('/')}"

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.http.get(self.url(path), timeout=self.timeout, **kwargs)

    def post(self, path: str, body: Json, **kwargs: Any) -> requests.Response:
        return self.http.post(self.url(path), json=body, timeout=self.timeout, **kwargs)

    def put(self, path: str, body: Json, **kwargs: Any) -> requests.Response:
        return self.http.put(self.url(path), json=body, timeout=self.timeout, **kwargs)

    def delete(self, path: str) -> requests.Response:
        return self.http.delete(self.url(path), timeout=self.timeout)

    def bundle(self, body: Json) -> requests.Response:
        """POST a transaction or batch Bundle to the base URL."""
        return self.http.post(self.base, json=body, timeout=120)

    def create(self, resource: Json) -> Json:
        resp = self.post(resource["resourceType"], resource)
        assert resp.status_code == 201, resp.text
        body: Json = resp.json()
        return body

    def search_raw(
        self, resource_type: str, params: dict[str, str] | list[tuple[str, str]]
    ) -> requests.Response:
        return self.get(resource_type, params=params)

    def search(self, resource_type: str, params: dict[str, str] | list[tuple[str, str]]) -> Json:
        resp = self.search_raw(resource_type, params)
        assert resp.status_code == 200, resp.text
        body: Json = resp.json()
        assert body["resourceType"] == "Bundle" and body["type"] == "searchset"
        return body

    def count_tagged(self, resource_type: str, tag: str) -> int:
        resp = self.get(resource_type, params={"_tag": f"{TAG_SYSTEM}|{tag}", "_summary": "count"})
        assert resp.status_code == 200, resp.text
        total: int = resp.json()["total"]
        return total


def fail_not_answering(base: str, exc: Exception) -> NoReturn:
    pytest.fail(f"FHIR server not answering at {base} (deploy/fhir-server/up.sh): {exc}")


@contextmanager
def answering_fhir(base: str, timeout: float = 30.0) -> Iterator[FhirHttp]:
    """A client for the server at `base`, after its metadata answers (the test fails otherwise)."""
    client = FhirHttp(base, timeout)
    try:
        client.get("metadata").raise_for_status()
    except requests.RequestException as exc:
        fail_not_answering(base, exc)
    try:
        yield client
    finally:
        client.http.close()


def urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def tagged(resource: Json, tag: str) -> Json:
    """`resource` carrying the test's own tag (for searching and counting what a test wrote)."""
    return {**resource, "meta": {"tag": [{"system": TAG_SYSTEM, "code": tag}]}}


def post_entry(
    resource: Json, full_url: str | None = None, if_none_exist: str | None = None
) -> Json:
    request: Json = {"method": "POST", "url": resource["resourceType"]}
    if if_none_exist:
        request["ifNoneExist"] = if_none_exist
    return {"fullUrl": full_url or urn(), "resource": resource, "request": request}


def transaction(*entries: Json, kind: str = "transaction") -> Json:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}
