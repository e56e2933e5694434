"""The verification service's inbound HTTP endpoints under generated hostile input: the verdicts
(`POST /tasks/{id}/accept|reject|amend`), the alert acknowledgement (`POST
/alerts/{id}/acknowledge`) and the signed alert links (`GET` and `POST /alert-links/{token}`),
served by the service as deployed (its app, behind the real token check, against the real FHIR
server and identity provider). 1,000 cases each (printed with their run time and answers by
status: `pytest -s`): no answer is a 5xx, every 4xx is an OperationOutcome (a page, to a
browser) saying what was wrong, and each endpoint still takes valid input afterwards."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
import structlog
from hypothesis import strategies as st
from pydantic import SecretStr

from services.notifier.handlers import RaiseAlerts
from services.verification.app import build_app
from services.verification.handlers import CreateVerificationTask
from services.verification.settings import VerificationSettings
from shared.fhir import FhirClient
from shared.messages import AlertRaised
from shared.registry import load_registry
from shared.runtime import ServiceApp, start_http
from shared.settings import (
    AlertLinkSettings,
    BrokerSettings,
    DicomWebSettings,
    FhirSettings,
    RadmeshSettings,
)
from tests.conftest import Infrastructure
from tests.fuzz.drawing import examples, in_background, mixed
from tests.fuzz.hostile import dumps, hostile_bodies
from tests.fuzz.hostile_requests import body_cases, header_values, hostile_ids, path_segment
from tests.fuzz.http import (
    Request,
    Stopwatch,
    failure_message,
    logged,
    problems,
    send_all,
    summary,
)
from tests.fuzz.mutations import mutations
from tests.fuzz.queues import delete_topology
from tests.identity import access_token, forged_token, oidc_settings
from tests.integration.fhir_seed import SeededStudy, search_resources, seed_study

pytestmark = [pytest.mark.integration, pytest.mark.fuzz]

CASES = 1000
REGISTRY_PATH = Path(__file__).resolve().parents[2] / "registry" / "models.yaml"
LINK_SECRET = "fuzz-alert-link-secret"
RULES = {
    401: ("access token", "token"),
    403: ("link", "role", "Practitioner"),
    404: ("Task", "FHIR id", "CommunicationRequest", "alert", "Not Found"),
    409: ("Task", "decided", "withdrawn", "changed"),
    415: ("Content-Type", "charset"),
}
ACCEPTS = (None, "text/html", "application/json", f"{'application/fhir+json'}", "*/*")


@dataclass(frozen=True)
class Targets:
    """What the cases are aimed at (plain data: they are drawn in another process)."""

    tasks: dict[str, str]  # endpoint → the id of its open verification Task
    bearer: tuple[tuple[str, str], ...]
    forged: tuple[str, ...]  # forged_tokens()
    alert_request: str  # the alert's CommunicationRequest id
    link_token: str


@dataclass
class ReviewService:
    url: str
    fhir: FhirClient
    bearer: tuple[tuple[str, str], ...]
    seeded: dict[str, SeededStudy]  # per endpoint: its own study, Task and alert
    tasks: dict[str, str]  # endpoint → the id of its open verification Task
    alert: AlertRaised
    link_token: str
    forged: tuple[str, ...]  # forged_tokens()

    @property
    def targets(self) -> Targets:
        return Targets(
            dict(self.tasks),
            self.bearer,
            self.forged,
            self.alert.communication_request.split("/")[1],
            self.link_token,
        )


async def _open_task(fhir: FhirClient, seeded: SeededStudy) -> str:
    await CreateVerificationTask(fhir)(seeded.results_posted())
    run = f"{seeded.study_instance_uid}/{seeded.model.id}/{seeded.model.version}"
    (task,) = await search_resources(fhir, "Task", identifier=f"urn:radmesh:task|{run}")
    return str(task["id"])


async def _cancel_open(fhir: FhirClient, task_id: str) -> None:
    """Leave no open Task on the shared FHIR server (its worklist would grow every run)."""
    current = dict(await fhir.execute(f"Task/{task_id}", "get"))
    if current["status"] == "requested":
        await fhir.execute(f"Task/{task_id}", "put", data={**current, "status": "cancelled"})


@pytest.fixture(scope="module")
async def review_service(infra: Infrastructure) -> AsyncIterator[ReviewService]:
    """The verification service's app on an ephemeral port, on queues and exchanges of its own;
    three studies with an open Task each (accept, reject, amend) and one with a critical
    alert and its signed link."""
    tag = uuid.uuid4().hex[:8]
    user, password = infra.orthanc_auth
    settings = RadmeshSettings(
        broker=BrokerSettings(
            url=infra.amqp_url,
            exchange=f"radmesh.fuzz-{tag}",
            dead_letter_exchange=f"radmesh.fuzz-{tag}.dead-letter",
            retry_delays_seconds=(),  # it consumes nothing here: no delay queues
        ),
        fhir=FhirSettings(base_url=infra.fhir_base_url),
        dicomweb=DicomWebSettings(
            base_url=infra.orthanc_dicomweb_url, username=user, password=SecretStr(password)
        ),
        oidc=oidc_settings(infra),
        alert_links=AlertLinkSettings(base_url=None, secret=SecretStr(LINK_SECRET)),
        registry_path=REGISTRY_PATH,
    )
    service = f"fuzz-{tag}-verification"
    app: ServiceApp = build_app(
        settings, VerificationSettings(port=0, outbox_sweep_seconds=0), service
    )
    fhir = FhirClient(settings.fhir)
    seeded = {kind: await seed_study(fhir, critical=True) for kind in ("accept", "reject", "amend")}
    tasks = {kind: await _open_task(fhir, study) for kind, study in seeded.items()}
    alerted = await seed_study(fhir, critical=True)
    links = AlertLinkSettings(base_url="http://127.0.0.1:1", secret=SecretStr(LINK_SECRET))
    (alert,) = await RaiseAlerts(load_registry(REGISTRY_PATH), fhir, links=links)(
        alerted.results_posted()
    )
    assert isinstance(alert, AlertRaised)
    request = await fhir.read_resource(alert.communication_request)
    (url,) = [p["contentAttachment"]["url"] for p in request["payload"] if "contentAttachment" in p]
    await app.start()
    runner = await start_http(app, "127.0.0.1", 0)
    token = await access_token(infra, "rad1")
    try:
        yield ReviewService(
            url=f"http://127.0.0.1:{runner.addresses[0][1]}",
            fhir=fhir,
            bearer=(("Authorization", f"Bearer {token}"),),
            seeded={**seeded, "alert": alerted},
            tasks=tasks,
            alert=alert,
            link_token=str(url).rsplit("/", 1)[1],
            forged=forged_tokens(infra.oidc_issuer),
        )
    finally:
        await runner.cleanup()
        await app.stop()
        for task_id in tasks.values():
            await _cancel_open(fhir, task_id)
        await fhir.close()
        await delete_topology(infra.amqp_url, [service], settings.broker)


# -- cases ------------------------------------------------------------------------------------


def forged_tokens(issuer: str) -> tuple[str, ...]:
    """Well-formed tokens with the claims radmesh reads, signed by a key the identity provider
    never had (a radiologist's, a clinician's), and one not signed at all (`alg: none`). Made
    once: an RSA key takes a while."""
    unsigned = jwt.encode(
        {"iss": issuer, "aud": "radmesh", "sub": "intruder", "exp": int(time.time()) + 300},
        key="",
        algorithm="none",
    )
    return (
        forged_token(issuer),
        forged_token(issuer, roles=("clinician",)),
        unsigned,
    )


def _authorization(
    method: str, path: str, body: bytes, forged: tuple[str, ...]
) -> st.SearchStrategy[Request]:
    """The valid request with a hostile Authorization header: none, any text, another scheme,
    a forged token."""
    values = st.one_of(
        st.none(),
        header_values,
        header_values.map(lambda text: f"Bearer {text}"),
        st.sampled_from(("Bearer", "Bearer ", "Basic cmFkMTpyYWRtZXNoLWRldg==", "bearer x.y.z")),
        st.sampled_from(forged).map(lambda token: f"Bearer {token}"),
    )
    return values.map(
        lambda value: Request(
            "authorization",
            method,
            path,
            body,
            (("Content-Type", "application/json"),)
            + (() if value is None else (("Authorization", value),)),
        )
    )


def _verdict_cases(service: Targets, kind: str, valid: dict[str, Any]) -> list[Request]:
    """Bodies mutated from a valid verdict, whole hostile bodies and odd Content-Types — on the
    endpoint's open Task and on one that does not exist —, hostile Task ids, hostile tokens.
    Weighted towards what is refused before the FHIR server is asked: every answer past the
    body's checks writes an AuditEvent, and the shared server takes some 40 a second."""
    open_path = f"/tasks/{service.tasks[kind]}/{kind}"
    missing_path = f"/tasks/fuzz-no-such-task/{kind}"
    on_open = body_cases(kind, "POST", open_path, valid, service.bearer, fhir=False)
    on_missing = body_cases(kind, "POST", missing_path, valid, service.bearer, fhir=False)
    by_id = hostile_ids.map(
        lambda id_: Request(
            "task-id",
            "POST",
            f"/tasks/{path_segment(id_)}/{kind}",
            dumps(valid),
            (*service.bearer, ("Content-Type", "application/json")),
        )
    )
    auth = _authorization("POST", open_path, dumps(valid), service.forged)
    return mixed(
        (on_open.mutated, 150),
        (on_open.whole, 370),
        (on_open.typed, 100),
        (on_missing.mutated, 50),
        (by_id, 30),
        (auth, 300),
    )


def _acknowledge_cases(service: Targets) -> list[Request]:
    """An alert that does not exist and hostile ids, with hostile bodies (the endpoint reads
    none); the alert's own id with odd Content-Types; hostile tokens. Past the token every case
    is a FHIR read and an AuditEvent: most are hostile tokens."""
    path = f"/alerts/{service.alert_request}/acknowledge"
    paths = st.one_of(
        st.just("/alerts/fuzz-no-such-alert/acknowledge"),
        hostile_ids.map(lambda id_: f"/alerts/{path_segment(id_)}/acknowledge"),
    )
    valid = {"note": "received"}
    bodies = st.tuples(paths, hostile_bodies(valid)).map(
        lambda case: Request(
            f"acknowledge {case[1][0]}",
            "POST",
            case[0],
            case[1][1],
            (*service.bearer, ("Content-Type", "application/json")),
        )
    )
    typed = body_cases("acknowledge", "POST", path, valid, service.bearer, fhir=False).typed
    auth = _authorization("POST", path, b"", service.forged)
    return mixed((bodies, 150), (typed, 50), (auth, 800))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _signed_token(payload: bytes) -> str:
    """A token of this payload signed with the service's key (shared/alert_links.py's format):
    its content is what is judged."""
    encoded = _b64(payload)
    signature = hmac.new(LINK_SECRET.encode(), encoded.encode(), hashlib.sha256).digest()
    return f"{encoded}.{_b64(signature)}"


def _link_cases(service: Targets, method: str) -> list[Request]:
    """Tokens: signed with the right key around a payload mutated from the valid one, or a whole
    hostile payload; the valid one with a wrong or cut signature; any text; overlong; the
    valid token itself. Each asked for as a browser does (Accept: text/html) or not."""
    payload_b64, signature = service.link_token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(payload_b64 + "=" * (-len(payload_b64) % 4)))
    tokens = st.one_of(
        mutations(payload).map(
            lambda mutation: (f"payload {mutation.kind}", _signed_token(mutation.body))
        ),
        mutations(payload).map(
            lambda mutation: (f"payload {mutation.kind}", _signed_token(mutation.body))
        ),
        hostile_bodies(payload).map(lambda body: (f"payload {body[0]}", _signed_token(body[1]))),
        header_values.map(lambda text: ("signature", f"{payload_b64}.{text}")),
        st.sampled_from(
            (
                f"{payload_b64}.{signature[:-1]}",
                f"{payload_b64}.{signature}.",
                f"{payload_b64}{signature}",
                f"{payload_b64}.{signature.upper()}",
                f".{signature}",
                ".",
                "x" * 2049,
                f"{payload_b64}.{signature}" + "A" * 2048,
            )
        ).map(lambda token: ("malformed", token)),
        st.text(max_size=200).filter(bool).map(lambda text: ("any-text", text)),
        st.just(("valid", service.link_token)),
    )
    return examples(
        st.tuples(tokens, st.sampled_from(ACCEPTS)).map(
            lambda case: Request(
                f"link {case[0][0]}",
                method,
                f"/alert-links/{path_segment(case[0][1])}",
                b"",
                () if case[1] is None else (("Accept", case[1]),),
                browser=case[1] is not None and "text/html" in case[1],
            )
        ),
        CASES,
    )


ACCEPT = {"note": "fuzz: verified"}
REJECT = {"reason": "false-positive", "note": "fuzz: not there"}


def _amendment(seeded: SeededStudy) -> dict[str, Any]:
    """An amendment of the seeded report's measured volume."""
    return {"observation": seeded.observations[1], "value": 12.5, "note": "fuzz: measured again"}


@pytest.fixture(scope="module")
def cases(review_service: ReviewService) -> dict[str, Future[list[Request]]]:
    """Every endpoint's cases, drawn in the background in the order the tests send them."""
    targets = review_service.targets
    amend = _amendment(review_service.seeded["amend"])
    return {
        "accept": in_background(_verdict_cases, targets, "accept", ACCEPT),
        "reject": in_background(_verdict_cases, targets, "reject", REJECT),
        "amend": in_background(_verdict_cases, targets, "amend", amend),
        "acknowledge": in_background(_acknowledge_cases, targets),
        "link GET": in_background(_link_cases, targets, "GET"),
        "link POST": in_background(_link_cases, targets, "POST"),
    }


async def _fuzz(service: ReviewService, endpoint: str, drawn: Future[list[Request]]) -> None:
    watch = Stopwatch()
    cases = await asyncio.wrap_future(drawn)
    waited = watch.seconds
    assert len(cases) >= CASES, f"{endpoint}: hypothesis generated {len(cases)} cases only"
    watch = Stopwatch()
    with structlog.testing.capture_logs() as logs:
        answers = await send_all(service.url, cases)
    print(summary(endpoint, answers, watch.seconds, waited))
    found = problems(answers, RULES) + logged(logs, "audit_event_not_recorded", "request_failed")
    assert found == [], failure_message(endpoint, found)


async def _post(
    service: ReviewService, path: str, body: dict[str, Any] | None = None, **headers: str
) -> tuple[int, Any]:
    """A valid request's status and JSON answer."""
    sent = (*service.bearer, ("Content-Type", "application/json"), *headers.items())
    (answer,) = await send_all(
        service.url, [Request("valid", "POST", path, b"" if body is None else dumps(body), sent)]
    )
    return answer.status, json.loads(answer.body)


async def _fresh_task(service: ReviewService, kind: str) -> tuple[str, SeededStudy]:
    """Another open Task (the fuzzed one may have been decided by a case that was valid)."""
    seeded = await seed_study(service.fhir, critical=True)
    task_id = await _open_task(service.fhir, seeded)
    service.tasks[f"{kind}-after"] = task_id  # cancelled with the others if left open
    return task_id, seeded


# -- tests ------------------------------------------------------------------------------------


async def test_accept_survives_1000_hostile_requests(
    review_service: ReviewService, cases: dict[str, Future[list[Request]]]
) -> None:
    """POST /tasks/{id}/accept: 1,000 cases — 150 bodies mutated from a valid one and 370
    whole hostile bodies on an open Task, 100 odd Content-Types, 50 mutated bodies on a Task
    that does not exist, 30 hostile Task ids, 300 hostile tokens. Afterwards an open Task is
    accepted."""
    await _fuzz(review_service, "POST /tasks/{id}/accept", cases["accept"])
    task_id, _ = await _fresh_task(review_service, "accept")
    status, done = await _post(review_service, f"/tasks/{task_id}/accept")
    assert (status, done.get("verdict")) == (200, "accepted"), done


async def test_reject_survives_1000_hostile_requests(
    review_service: ReviewService, cases: dict[str, Future[list[Request]]]
) -> None:
    """POST /tasks/{id}/reject: 1,000 cases (as for accept); afterwards an open Task is
    rejected."""
    await _fuzz(review_service, "POST /tasks/{id}/reject", cases["reject"])
    task_id, _ = await _fresh_task(review_service, "reject")
    status, done = await _post(review_service, f"/tasks/{task_id}/reject", REJECT)
    assert (status, done.get("verdict")) == (200, "rejected"), done


async def test_amend_survives_1000_hostile_requests(
    review_service: ReviewService, cases: dict[str, Future[list[Request]]]
) -> None:
    """POST /tasks/{id}/amend: 1,000 cases (as for accept) mutated from an amendment of the
    report's measured volume; afterwards an open Task is amended."""
    await _fuzz(review_service, "POST /tasks/{id}/amend", cases["amend"])
    task_id, seeded = await _fresh_task(review_service, "amend")
    status, done = await _post(review_service, f"/tasks/{task_id}/amend", _amendment(seeded))
    assert (status, done.get("verdict")) == (200, "amended"), done


async def test_acknowledge_survives_1000_hostile_requests(
    review_service: ReviewService, cases: dict[str, Future[list[Request]]]
) -> None:
    """POST /alerts/{id}/acknowledge: 1,000 cases — 150 hostile bodies on an alert that does
    not exist or a hostile id, 50 odd Content-Types on the alert, 800 hostile tokens.
    Afterwards the alert is acknowledged (once: a case may have acknowledged it already)."""
    await _fuzz(review_service, "POST /alerts/{id}/acknowledge", cases["acknowledge"])
    request_id = review_service.alert.communication_request.split("/")[1]
    status, done = await _post(review_service, f"/alerts/{request_id}/acknowledge")
    assert (status, done.get("status")) == (200, "completed"), done


async def test_alert_link_page_survives_1000_hostile_requests(
    review_service: ReviewService, cases: dict[str, Future[list[Request]]]
) -> None:
    """GET /alert-links/{token}: 1,000 tokens — signed with the right key around a payload
    mutated from the link's or a whole hostile one, the link's with a wrong or cut signature,
    any text, overlong —, asked for as a browser does or not. Afterwards the link shows its
    alert."""
    await _fuzz(review_service, "GET /alert-links/{token}", cases["link GET"])
    (answer,) = await send_all(
        review_service.url,
        [
            Request(
                "valid",
                "GET",
                f"/alert-links/{review_service.link_token}",
                headers=(("Accept", "text/html"),),
            )
        ],
    )
    assert answer.status == 200 and b"Critical AI finding" in answer.body, answer


async def test_alert_link_post_survives_1000_hostile_requests(
    review_service: ReviewService, cases: dict[str, Future[list[Request]]]
) -> None:
    """POST /alert-links/{token}: 1,000 tokens (as for GET); afterwards the link acknowledges
    its alert (or answers the earlier acknowledgement)."""
    await _fuzz(review_service, "POST /alert-links/{token}", cases["link POST"])
    (answer,) = await send_all(
        review_service.url,
        [
            Request(
                "valid",
                "POST",
                f"/alert-links/{review_service.link_token}",
                headers=(("Accept", "application/json"),),
            )
        ],
    )
    done = json.loads(answer.body)
    assert (answer.status, done.get("status")) == (200, "completed"), done
