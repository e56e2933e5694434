"""Hostile input at radmesh's inbound HTTP APIs, against the real broker and FHIR server: the
subscriber's hooks and the review API answer every hostile body with its 4xx and a FHIR
OperationOutcome saying what was wrong (never a 500), publish nothing for it, and still take
valid input as before."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from services.subscriber.hook_auth import SIGNATURE_HEADER, sign
from services.verification.review import ReviewDesk
from shared.fhir import FhirClient
from shared.messages import Event
from shared.runtime import start_http
from shared.settings import FhirSettings
from tests.conftest import Infrastructure
from tests.identity import access_token, oidc_settings
from tests.integration.review_app import review_app
from tests.integration.test_subscriber import (
    HOOK_SECRET,
    PACS_SECRET,
    RunningSubscriber,
    running_subscriber,
)

pytestmark = pytest.mark.integration

FHIR_JSON = "application/fhir+json"
JSON = "application/json"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def _study(uid: str = "2.25.1", **changes: Any) -> dict[str, Any]:
    """An ImagingStudy the ICH model applies to (head CT, 8 CT images), on no real patient."""
    study: dict[str, Any] = {
        "resourceType": "ImagingStudy",
        "id": "x",
        "status": "available",
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}],
        "subject": {"reference": f"Patient/hostile-{uuid.uuid4().hex[:12]}"},
        "series": [
            {
                "uid": f"{uid}.1",
                "modality": {
                    "system": "http://dicom.nema.org/resources/ontology/DCM",
                    "code": "CT",
                },
                "bodySite": {"system": "http://snomed.info/sct", "code": "69536005"},
                "numberOfInstances": 8,
                "instance": [
                    {"uid": f"{uid}.1.{n}", "sopClass": {"code": f"urn:oid:{CT_IMAGE_STORAGE}"}}
                    for n in range(1, 9)
                ],
            }
        ],
    }
    study.update(changes)
    return study


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _with(value: Any, placeholder: bytes) -> bytes:
    """`value` as JSON with the string "@" replaced by raw JSON text (what json.dumps can't write)."""
    return _json(value).replace(b'"@"', placeholder)


def _bundle(resource: Any) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "history", "entry": [{"resource": resource}]}


DEEP = b"[" * 100_000 + b"]" * 100_000
HUGE_INTEGER = b"9" * 4301
EVENT = {
    "event_id": "hostile-http-test-event",
    "emitted_at": datetime.now(UTC).isoformat(),
    "study_instance_uid": "2.25.2",
    "accession_number": "A1",
    "modalities": ["CT"],
}

# (case, route, body, Content-Type, status, what the diagnostics say)
HOOK_CASES: list[tuple[str, str, bytes, str | None, int, str]] = [
    ("deep-nesting", "PUT", DEEP, FHIR_JSON, 400, "deeper than 64 levels"),
    ("deep-nesting", "POST", DEEP, FHIR_JSON, 400, "deeper than 64 levels"),
    ("deep-nesting", "PACS", DEEP, JSON, 400, "deeper than 64 levels"),
    (
        "past-64-levels-in-an-extension",
        "PUT",
        _with(_study(extension=["@"]), b"[" * 64 + b"]" * 64),
        FHIR_JSON,
        400,
        "deeper than 64 levels (at extension.0.0",
    ),
    ("unknown-charset", "PUT", _json(_study()), f"{FHIR_JSON}; charset=foo", 415, "charset 'foo'"),
    ("unknown-charset", "POST", _json(_bundle(_study())), f"{JSON}; charset=foo", 415, "'foo'"),
    ("unknown-charset", "PACS", _json(EVENT), f"{JSON}; charset=foo", 415, "charset 'foo'"),
    (
        "4301-digit-integer",
        "PUT",
        _with(_study(numberOfSeries="@"), HUGE_INTEGER),
        FHIR_JSON,
        400,
        "4301 digits",
    ),
    (
        "4301-digit-integer",
        "PACS",
        _with({**EVENT, "instance_count": "@"}, HUGE_INTEGER),
        JSON,
        400,
        "4301 digits",
    ),
    ("series-null", "PUT", _json(_study(series=None)), FHIR_JSON, 400, "series: null"),
    (
        "series-null",
        "POST",
        _json(_bundle(_study(series=None))),
        FHIR_JSON,
        400,
        "entry.0.resource.series: null",
    ),
    ("series-null", "PACS", _json({**EVENT, "series": None}), JSON, 400, "series: Input should"),
    (
        "lone-surrogate",
        "PUT",
        _json(_study(description="\ud800")),
        FHIR_JSON,
        400,
        "description: a lone UTF-16 surrogate",
    ),
    (
        "lone-surrogate",
        "POST",
        _json(_bundle(_study(description="\udfff"))),
        FHIR_JSON,
        400,
        "entry.0.resource.description: a lone UTF-16 surrogate",
    ),
    (
        "lone-surrogate",
        "PACS",
        _json({**EVENT, "accession_number": "A\ud800"}),
        JSON,
        400,
        "accession_number: a lone UTF-16 surrogate",
    ),
    ("nan", "PUT", _with(_study(numberOfSeries="@"), b"NaN"), FHIR_JSON, 400, "NaN"),
    ("not-utf-8", "PUT", b"\xff\xfe{}", FHIR_JSON, 400, "not JSON: it is not UTF-8"),
    (
        "duplicate-member",
        "PUT",
        _json(_study())[:-1] + b', "series": null}',
        FHIR_JSON,
        400,
        "'series' twice",
    ),
    ("json-as-image/png", "PUT", _json(_study()), "image/png", 415, "'image/png' is not JSON"),
    ("json-as-image/png", "POST", _json(_bundle(_study())), "image/png", 415, "is not JSON"),
    ("json-as-image/png", "PACS", _json(EVENT), "image/png", 415, "'image/png' is not JSON"),
    ("form-with-a-body", "POST", b"a=1", "application/x-www-form-urlencoded", 415, "not JSON"),
    ("garbage-content-type", "PUT", _json(_study()), "garbage", 415, "is not a media type"),
]


async def _send(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    body: bytes,
    *,
    content_type: str | None,
    headers: dict[str, str],
) -> tuple[int, str | None, dict[str, Any]]:
    """(status, Content-Type, JSON answer), sending exactly this Content-Type (or none)."""
    if content_type is not None:
        headers = {**headers, "Content-Type": content_type}
    async with http.request(
        method, url, data=body, headers=headers, skip_auto_headers=["Content-Type"]
    ) as response:
        return response.status, response.content_type, await response.json(content_type=None)


async def _hook(
    http: aiohttp.ClientSession,
    subscriber: RunningSubscriber,
    route: str,
    body: bytes,
    content_type: str | None,
) -> tuple[int, str | None, dict[str, Any]]:
    bearer = {"Authorization": f"Bearer {HOOK_SECRET}"}
    if route == "PUT":
        url, method, headers = f"{subscriber.url}/fhir/ImagingStudy/x", "PUT", bearer
    elif route == "POST":
        url, method, headers = f"{subscriber.url}/fhir", "POST", bearer
    else:
        url, method = f"{subscriber.url}/pacs/stable-study", "POST"
        headers = {SIGNATURE_HEADER: sign(body, PACS_SECRET)}
    return await _send(http, method, url, body, content_type=content_type, headers=headers)


def _is_error_outcome(content_type: str | None, answer: dict[str, Any]) -> bool:
    return (
        content_type == FHIR_JSON
        and answer.get("resourceType") == "OperationOutcome"
        and answer["issue"][0]["severity"] == "error"
    )


@pytest.fixture
async def subscriber(infra: Infrastructure) -> AsyncIterator[RunningSubscriber]:
    # No Subscription on the FHIR server: nothing but this test's requests reaches the hooks.
    async with running_subscriber(infra, ensure_subscription=False) as running:
        yield running


async def test_hostile_hook_bodies_get_their_4xx_outcome_and_publish_nothing(
    subscriber: RunningSubscriber,
) -> None:
    """Deep nesting, an unknown charset, a 4301-digit integer, `series: null`, a lone surrogate,
    NaN, bytes that are not UTF-8, a duplicate member, and JSON labelled image/png or as a form,
    sent to the rest-hook PUT, the notification POST and the signed PACS webhook: each is
    answered with its 400/415 and an OperationOutcome saying what was wrong, none with a 500, and
    no study.detected is published. Valid input afterwards is still announced, and HAPI's empty
    POST (application/x-www-form-urlencoded, no body) is still taken."""
    wrong: list[tuple[str, str, int, str]] = []
    async with aiohttp.ClientSession() as http:
        for case, route, body, content_type, status, expected in HOOK_CASES:
            answered, answer_type, answer = await _hook(http, subscriber, route, body, content_type)
            diagnostics = str(answer.get("issue", [{}])[0].get("diagnostics", answer))
            if not (
                answered == status
                and _is_error_outcome(answer_type, answer)
                and expected in diagnostics
            ):
                wrong.append((case, route, answered, diagnostics[:200]))
        assert wrong == [], "answered otherwise than expected"
        # Publishing is confirmed by the broker before a hook answers: anything published
        # for the cases above would be in the observer queue by now.
        assert await subscriber.detected.get(no_ack=True, fail=False) is None

        uid = f"2.25.{uuid.uuid4().int}"
        status, _, answer = await _hook(
            http, subscriber, "PUT", _json(_study(uid)), f"{FHIR_JSON}; charset=UTF-8"
        )
        assert (status, answer["issue"][0]["diagnostics"]) == (200, "1 study.detected published")
        detected = await subscriber.next_detected(study_instance_uid=uid)
        assert detected is not None and [m.id for m in detected.models] == ["ich-reference"]

        status, _, answer = await _hook(
            http, subscriber, "POST", b"", "application/x-www-form-urlencoded"
        )
        assert status == 200, answer


# -- the review API ---------------------------------------------------------------------------


@dataclass
class ReviewApiUnderTest:
    url: str
    published: list[Event]
    token: str  # rad1's, from the development Keycloak


@pytest.fixture
async def review_api(infra: Infrastructure) -> AsyncIterator[ReviewApiUnderTest]:
    """The review API on an ephemeral port, against the real FHIR server; it publishes into a
    list."""
    published: list[Event] = []

    async def publish(event: Event) -> None:
        published.append(event)

    fhir = FhirClient(FhirSettings(base_url=infra.fhir_base_url))
    desk = ReviewDesk(fhir, publish, infra.fhir_base_url)
    app = review_app(desk, oidc_settings(infra), "verification-hostile-test")
    runner = await start_http(app, "127.0.0.1", 0)
    token = await access_token(infra, "rad1")
    try:
        yield ReviewApiUnderTest(f"http://127.0.0.1:{runner.addresses[0][1]}", published, token)
    finally:
        await runner.cleanup()
        await app.stop()
        await fhir.close()


VERDICT = {"note": "hostile test"}
# (case, action, body, Content-Type, status, what the diagnostics say)
VERDICT_CASES: list[tuple[str, str, bytes, str | None, int, str]] = [
    ("deep-nesting", "accept", DEEP, JSON, 400, "deeper than 64 levels"),
    ("unknown-charset", "accept", _json(VERDICT), f"{JSON}; charset=foo", 415, "charset 'foo'"),
    ("4301-digit-integer", "accept", _with({"note": "@"}, HUGE_INTEGER), JSON, 400, "4301"),
    (
        "lone-surrogate",
        "reject",
        _json({"reason": "other", "note": "misread \ud800"}),
        JSON,
        400,
        "note: a lone UTF-16 surrogate",
    ),
    ("nan", "accept", _with({"note": "@"}, b"NaN"), JSON, 400, "NaN"),
    ("not-utf-8", "accept", b'{"note": "\xff"}', JSON, 400, "not valid JSON: it is not UTF-8"),
    ("json-as-image/png", "accept", _json(VERDICT), "image/png", 415, "'image/png' is not JSON"),
]


async def test_hostile_verdict_bodies_get_their_4xx_outcome_and_change_nothing(
    review_api: ReviewApiUnderTest,
) -> None:
    """Deep nesting, an unknown charset, a 4301-digit integer, a rejection reason with a lone
    surrogate, NaN, bytes that are not UTF-8 and JSON labelled image/png are each answered with
    their 400/415 and an OperationOutcome (never 500), before the Task is even looked up; nothing
    is published. A well-formed verdict, labelled as JSON or unlabelled text, still reaches the
    desk (404 for a Task that does not exist)."""
    task = f"/tasks/{uuid.uuid4()}"
    bearer = {"Authorization": f"Bearer {review_api.token}"}
    wrong: list[tuple[str, int, str]] = []
    async with aiohttp.ClientSession() as http:
        for case, action, body, content_type, status, expected in VERDICT_CASES:
            url = f"{review_api.url}{task}/{action}"
            answered, answer_type, answer = await _send(
                http, "POST", url, body, content_type=content_type, headers=bearer
            )
            diagnostics = str(answer.get("issue", [{}])[0].get("diagnostics", answer))
            if not (
                answered == status
                and _is_error_outcome(answer_type, answer)
                and expected in diagnostics
            ):
                wrong.append((case, answered, diagnostics[:200]))
        assert wrong == [], "answered otherwise than expected"
        for content_type in (JSON, "text/plain; charset=utf-8"):
            url = f"{review_api.url}{task}/accept"
            status, _, answer = await _send(
                http, "POST", url, _json(VERDICT), content_type=content_type, headers=bearer
            )
            assert (status, answer["issue"][0]["code"]) == (404, "not-found"), answer
    assert review_api.published == []
