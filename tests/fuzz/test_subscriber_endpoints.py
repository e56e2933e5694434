"""The subscriber's inbound HTTP endpoints under generated hostile input, against the real broker,
FHIR server and PACS: `PUT /fhir/ImagingStudy/{id}`, `POST /fhir`, and the signed
`POST /pacs/stable-study` and `POST /pacs/deleted`. 1,000 cases each (printed with their run
time and answers by status: `pytest -s`): no answer is a 5xx, every 4xx is an OperationOutcome
saying what was wrong, and each endpoint still takes valid input afterwards."""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
from hypothesis import strategies as st

from samples.load import LoadResult
from services.subscriber.hook_auth import SIGNATURE_HEADER, sign
from tests.conftest import Infrastructure
from tests.fuzz.conftest import FuzzStudy
from tests.fuzz.drawing import in_background, mixed
from tests.fuzz.hostile import dumps
from tests.fuzz.hostile_requests import body_cases, header_values, hostile_ids, path_segment
from tests.fuzz.http import (
    FHIR_JSON,
    Request,
    Stopwatch,
    failure_message,
    logged,
    problems,
    send_all,
    summary,
)
from tests.integration.sample_studies import delete_study, load_fresh_study
from tests.integration.test_subscriber import (
    HOOK_SECRET,
    PACS_SECRET,
    RunningSubscriber,
    running_subscriber,
)
from tests.subscriptions_backport import r4_notification, r4b_notification

pytestmark = [pytest.mark.integration, pytest.mark.fuzz]

CASES = 1000
BEARER = (("Authorization", f"Bearer {HOOK_SECRET}"),)
# What a refusal of each status must say, whatever the case.
RULES = {
    401: ("hook secret", SIGNATURE_HEADER, "replay window", "time zone", "future"),
    415: ("Content-Type", "charset"),
}
_EVENT_ID = "fuzz-event-id-to-be-replaced"


@pytest.fixture(scope="module")
def cases(fuzz_study: FuzzStudy) -> dict[str, Future[list[Request]]]:
    """Every endpoint's cases, drawn in the background in the order the tests send them."""
    uid = _uid()
    deleted = [_deleted_event(uid, True), _deleted_event(uid, False)]
    stable = [_stable_event(fuzz_study.loaded)]
    return {
        "PUT": in_background(_put_cases, fuzz_study.unannounced()[1]),
        "POST": in_background(_post_cases, fuzz_study.unannounced()[1]),
        "stable": in_background(_pacs_cases, "/pacs/stable-study", stable),
        "deleted": in_background(_pacs_cases, "/pacs/deleted", deleted),
    }


@pytest.fixture(scope="module")
async def subscriber(infra: Infrastructure) -> AsyncIterator[RunningSubscriber]:
    # No Subscription on the FHIR server: nothing but this test's requests reaches the hooks.
    async with running_subscriber(infra, ensure_subscription=False) as running:
        yield running


def _uid() -> str:
    return f"2.25.{uuid.uuid4().int}"


def _hook_auth(path: str, valid: Any) -> st.SearchStrategy[Request]:
    """The valid body with a hostile Authorization header (or none)."""
    return st.one_of(st.none(), header_values, st.just(f"Bearer {HOOK_SECRET} ")).map(
        lambda value: Request(
            "authorization",
            "PUT" if path.startswith("/fhir/ImagingStudy/") else "POST",
            path,
            dumps(valid),
            (("Content-Type", FHIR_JSON),) + (() if value is None else (("Authorization", value),)),
        )
    )


def _put_cases(valid: dict[str, Any]) -> list[Request]:
    """`valid`: an ImagingStudy no FHIR server holds under its UID (FuzzStudy.unannounced)."""
    by_id = hostile_ids.map(
        lambda id_: Request(
            "url-id",
            "PUT",
            f"/fhir/ImagingStudy/{path_segment(id_)}",
            dumps({**valid, "id": id_}),
            (*BEARER, ("Content-Type", FHIR_JSON)),
        )
    )
    path = f"/fhir/ImagingStudy/{valid['id']}"
    body = body_cases("PUT", "PUT", path, valid, BEARER, fhir=True)
    return mixed(
        (body.mutated, 300),
        (body.whole, 350),
        (body.typed, 100),
        (by_id, 100),
        (_hook_auth(path, valid), 150),
    )


def _post_cases(study: dict[str, Any]) -> list[Request]:
    """`study`: an ImagingStudy no FHIR server holds under its UID (FuzzStudy.unannounced)."""
    valids = [
        r4_notification("event-notification", 7, [f"ImagingStudy/{study['id']}"], [study]),
        r4b_notification("event-notification", 3, ["ImagingStudy/fuzz-unknown"]),
        r4_notification("heartbeat", 7),
        {"resourceType": "Bundle", "type": "batch", "entry": [{"resource": study}]},
        study,
    ]
    bodies = [body_cases("POST", "POST", "/fhir", valid, BEARER, fhir=True) for valid in valids]
    return mixed(
        *((cases.mutated, 110) for cases in bodies),
        (_status_shapes(valids[0], valids[1]), 20),
        (bodies[0].whole, 180),
        (bodies[0].typed, 100),
        (_hook_auth("/fhir", study), 150),
    )


def _status_shapes(r4: dict[str, Any], r4b: dict[str, Any]) -> st.SearchStrategy[Request]:
    """Notifications whose status resource has a list that is not one (R4 `parameter`, a
    parameter's `part`, R4B `notificationEvent`): each list of the status replaced by a value
    of another JSON type. One place among the hundred or so of a notification, so asked for
    on purpose rather than left to chance."""
    lists: list[tuple[dict[str, Any], tuple[str | int, ...]]] = [
        (r4, ("entry", 0, "resource", "parameter")),
        (r4, ("entry", 0, "resource", "parameter", 5, "part")),
        (r4b, ("entry", 0, "resource", "notificationEvent")),
    ]

    def request(case: tuple[int, Any]) -> Request:
        document, path = lists[case[0]]
        changed = copy.deepcopy(document)
        node: Any = changed
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = case[1]
        return Request(
            "POST status-shape",
            "POST",
            "/fhir",
            dumps(changed),
            (*BEARER, ("Content-Type", FHIR_JSON)),
            expect=tuple(str(key) for key in path if isinstance(key, str)),
        )

    values = st.one_of(
        st.integers(),
        st.text(max_size=5),
        st.booleans(),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    )
    return st.tuples(st.integers(0, len(lists) - 1), values).map(request)


def _signed(body: bytes) -> tuple[bytes, tuple[tuple[str, str], ...]]:
    """A fresh event id in place of the placeholder (a replayed id is refused), then signed."""
    body = body.replace(_EVENT_ID.encode(), f"fuzz-{uuid.uuid4().hex}".encode())
    return body, ((SIGNATURE_HEADER, sign(body, PACS_SECRET)),)


def _signature_cases(path: str, valid: dict[str, Any]) -> st.SearchStrategy[Request]:
    """The valid body with a hostile signature header: none, any text, another key's, the
    right one in capitals, padded, or of another algorithm."""

    def request(value: str | None, body: bytes) -> Request:
        headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)
        if value is not None:
            headers += ((SIGNATURE_HEADER, value),)
        return Request("signature", "POST", path, body, headers)

    def variants(body: bytes) -> st.SearchStrategy[str | None]:
        right = sign(body, PACS_SECRET)
        return st.one_of(
            st.none(),
            header_values,
            st.sampled_from(
                (
                    sign(body, "another-secret"),
                    right.upper(),
                    f" {right}",
                    right[:-1],
                    right.replace("sha256=", "sha1="),
                    right.removeprefix("sha256="),
                    f"{right}, {right}",
                    sign(body + b" ", PACS_SECRET),
                )
            ),
        )

    def fresh() -> bytes:
        return _signed(dumps(valid))[0]

    return st.builds(fresh).flatmap(
        lambda body: variants(body).map(lambda value: request(value, body))
    )


def _pacs_cases(path: str, valids: list[dict[str, Any]]) -> list[Request]:
    bodies = [
        body_cases(path, "POST", path, valid, (), fhir=False, body_of=_signed) for valid in valids
    ]
    return mixed(
        *((cases.mutated, 500 // len(bodies)) for cases in bodies),
        (bodies[0].whole, 200),
        (bodies[0].typed, 100),
        (_signature_cases(path, valids[0]), 200),
    )


def _stable_event(loaded: LoadResult) -> dict[str, Any]:
    """The stable-study event the PACS sends for a loaded study (deploy/orthanc/README.md)."""
    return {
        "event_id": _EVENT_ID,
        "emitted_at": datetime.now(UTC).isoformat(),
        "study_instance_uid": loaded.study_instance_uid,
        "accession_number": loaded.accession_number,
        "modalities": ["CT"],
        "series_count": 1,
        "instance_count": loaded.instances,
        "series": [
            {
                "series_instance_uid": loaded.series_instance_uid,
                "modality": "CT",
                "series_number": 1,
                "series_description": "head",
                "instance_count": loaded.instances,
            }
        ],
    }


def _deleted_event(uid: str, whole: bool) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": _EVENT_ID,
        "emitted_at": datetime.now(UTC).isoformat(),
        "study_instance_uid": uid,
        "whole_study": whole,
    }
    if not whole:
        event["series_instance_uids"] = [f"{uid}.1", f"{uid}.2"]
    return event


async def _fuzz(subscriber: RunningSubscriber, endpoint: str, drawn: Future[list[Request]]) -> None:
    watch = Stopwatch()
    cases = await asyncio.wrap_future(drawn)
    waited = watch.seconds
    assert len(cases) >= CASES, f"{endpoint}: hypothesis generated {len(cases)} cases only"
    watch = Stopwatch()
    with structlog.testing.capture_logs() as logs:
        answers = await send_all(subscriber.url, cases)
    print(summary(endpoint, answers, watch.seconds, waited))
    found = problems(answers, RULES) + logged(logs, "request_failed", "hook_failed")
    assert found == [], failure_message(endpoint, found)


async def _answer(
    subscriber: RunningSubscriber, method: str, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, str]:
    (answer,) = await send_all(
        subscriber.url, [Request("valid", method, path, body, tuple(headers.items()))]
    )
    return answer.status, answer.diagnostics or answer.body.decode(errors="replace")


async def test_rest_hook_put_survives_1000_hostile_requests(
    subscriber: RunningSubscriber, fuzz_study: FuzzStudy, cases: dict[str, Future[list[Request]]]
) -> None:
    """PUT /fhir/ImagingStudy/{id}: 1,000 cases — a real ImagingStudy mutated in one place
    (null, wrong type, hostile strings, bad UIDs and references, hostile JSON text, removed,
    unknown or duplicate members), whole hostile bodies (random bytes, truncated JSON, other
    encodings, any JSON value, deep nesting, huge numbers), odd Content-Types, hostile ids in
    the URL, hostile Authorization headers. Afterwards the ImagingStudy is announced."""
    await _fuzz(subscriber, "PUT /fhir/ImagingStudy/{id}", cases["PUT"])
    uid, study = fuzz_study.unannounced()
    status, diagnostics = await _answer(
        subscriber,
        "PUT",
        f"/fhir/ImagingStudy/{study['id']}",
        dumps(study),
        {**dict(BEARER), "Content-Type": FHIR_JSON},
    )
    assert (status, diagnostics) == (200, "1 study.detected published")
    assert await subscriber.next_detected(study_instance_uid=uid) is not None


async def test_notification_post_survives_1000_hostile_requests(
    subscriber: RunningSubscriber, fuzz_study: FuzzStudy, cases: dict[str, Future[list[Request]]]
) -> None:
    """POST /fhir: 1,000 cases mutated from R4 and R4B Backport notifications (full-resource,
    id-only, heartbeat), a Bundle of an ImagingStudy and a bare one; whole hostile bodies; odd
    Content-Types; hostile Authorization headers. Afterwards a notification carrying the
    ImagingStudy is announced."""
    await _fuzz(subscriber, "POST /fhir", cases["POST"])
    uid, study = fuzz_study.unannounced()
    body = dumps(
        r4_notification(
            "event-notification",
            1,
            [f"ImagingStudy/{study['id']}"],
            [study],
            subscription="Subscription/fuzz-after",
        )
    )
    status, diagnostics = await _answer(
        subscriber, "POST", "/fhir", body, {**dict(BEARER), "Content-Type": FHIR_JSON}
    )
    assert (status, diagnostics) == (200, "1 study.detected published")
    assert await subscriber.next_detected(study_instance_uid=uid) is not None


async def test_pacs_stable_study_survives_1000_hostile_requests(
    infra: Infrastructure,
    subscriber: RunningSubscriber,
    cases: dict[str, Future[list[Request]]],
) -> None:
    """POST /pacs/stable-study: 1,000 cases — signed bodies mutated from the fuzz study's valid
    stable-study event, whole hostile bodies and odd Content-Types (all validly signed, so
    the content is what is judged), and the valid body with hostile signature headers.
    Afterwards the event of a study just stored in the PACS (its order on the FHIR server, no
    ImagingStudy yet: no other mesh can have analysed it) is announced."""
    await _fuzz(subscriber, "POST /pacs/stable-study", cases["stable"])
    loaded = await asyncio.to_thread(
        load_fresh_study, infra, "head-bleed", slices=10, size=64, with_imaging_study=False
    )
    try:
        body, signature = _signed(dumps(_stable_event(loaded)))
        status, diagnostics = await _answer(
            subscriber,
            "POST",
            "/pacs/stable-study",
            body,
            {**dict(signature), "Content-Type": "application/json"},
        )
        assert (status, diagnostics) == (200, "1 study.detected published")
        uid = loaded.study_instance_uid
        assert await subscriber.next_detected(study_instance_uid=uid) is not None
    finally:
        await asyncio.to_thread(
            delete_study, infra.orthanc_url, infra.orthanc_auth, loaded.study_instance_uid
        )


async def test_pacs_deleted_survives_1000_hostile_requests(
    subscriber: RunningSubscriber, cases: dict[str, Future[list[Request]]]
) -> None:
    """POST /pacs/deleted: 1,000 cases — signed bodies mutated from valid deletion events (the
    whole study, two series), whole hostile bodies and odd Content-Types, validly signed, and
    hostile signature headers. Afterwards a signed deletion is taken."""
    await _fuzz(subscriber, "POST /pacs/deleted", cases["deleted"])
    body, signature = _signed(dumps(_deleted_event(_uid(), True)))
    status, diagnostics = await _answer(
        subscriber,
        "POST",
        "/pacs/deleted",
        body,
        {**dict(signature), "Content-Type": "application/json"},
    )
    assert (status, diagnostics) == (200, "1 study.retracted published")
