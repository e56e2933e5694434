"""The verification service against the real FHIR server, RabbitMQ and Keycloak: one Task per
report, and the review API (tokens and roles, bad input, accept, reject, amend, conflicts) with
its events on the bus."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import jwt
import pytest

from services.notifier.handlers import FollowUpAlerts, RaiseAlerts
from services.verification.handlers import (
    CreateVerificationTask,
)
from services.verification.outbox import VerdictOutbox
from services.verification.review import ReviewDesk
from services.verification.tasks import OUTBOX_TAG
from services.verification.verdicts import Reviewer, Verdict
from shared.bus import Bus
from shared.errors import BrokerUnavailable
from shared.fhir import FhirClient
from shared.messages import AlertRaised, Event, FindingRejected, FindingVerified, ResultsPosted
from shared.registry import load_registry
from shared.runtime import start_http
from shared.settings import BrokerSettings, FhirSettings
from tests.conftest import Infrastructure
from tests.identity import TokenCache, access_token, forged_token, oidc_settings
from tests.integration.fhir_seed import (
    SeededStudy,
    search_resources,
    seed_study,
)
from tests.integration.review_app import review_app

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


async def _task_of(fhir: FhirClient, seeded: SeededStudy) -> dict[str, Any]:
    run = f"{seeded.study_instance_uid}/{seeded.model.id}/{seeded.model.version}"
    tasks = await search_resources(fhir, "Task", identifier=f"urn:radmesh:task|{run}")
    assert len(tasks) == 1
    return tasks[0]


async def _cancel(fhir: FhirClient, task: dict[str, Any]) -> None:
    """Leave no open Task behind on the shared FHIR server (its worklist would grow every run)."""
    current = dict(await fhir.execute(f"Task/{task['id']}", "get"))
    if current["status"] == "requested":
        await fhir.execute(f"Task/{task['id']}", "put", data={**current, "status": "cancelled"})


# -- results.posted → Task --------------------------------------------------------------------


async def test_results_posted_creates_one_stat_task_for_the_report(fhir: FhirClient) -> None:
    """A report with a critical finding gets one requested `approve` Task, priority stat, on the
    report, for the patient, based on the study's order, remembering the study UID and run;
    the same results.posted handled again creates no second Task."""
    seeded = await seed_study(fhir, critical=True)
    event = seeded.results_posted()
    handler = CreateVerificationTask(fhir)
    assert await handler(event) == []
    await handler(event)

    task = await _task_of(fhir, seeded)
    assert (task["status"], task["intent"], task["priority"]) == ("requested", "order", "stat")
    assert task["code"]["coding"][0]["code"] == "approve"
    assert task["focus"] == {"reference": seeded.diagnostic_report}
    assert task["for"] == {"reference": seeded.patient}
    assert task["basedOn"] == [{"reference": seeded.service_request}]
    inputs = {item["type"]["coding"][0]["code"]: item for item in task["input"]}
    assert inputs["study-instance-uid"]["valueString"] == seeded.study_instance_uid
    assert inputs["correlation-id"]["valueString"] == str(event.correlation_id)
    assert len(await search_resources(fhir, "Task", focus=seeded.diagnostic_report)) == 1
    await _cancel(fhir, task)


async def test_report_without_critical_finding_gets_a_routine_task(fhir: FhirClient) -> None:
    """No critical finding: the Task is created with priority routine."""
    seeded = await seed_study(fhir, critical=False)
    await CreateVerificationTask(fhir)(seeded.results_posted())
    task = await _task_of(fhir, seeded)
    assert task["priority"] == "routine"
    await _cancel(fhir, task)


async def test_shadow_rollout_creates_no_task(fhir: FhirClient) -> None:
    """A shadow-mode result never gets a verification Task."""
    seeded = await seed_study(fhir, critical=True)
    await CreateVerificationTask(fhir)(seeded.results_posted(rollout_mode="shadow"))
    assert await search_resources(fhir, "Task", focus=seeded.diagnostic_report) == []


# -- the review API ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tokens(infra: Infrastructure) -> TokenCache:
    return TokenCache(infra)


@dataclass
class ReviewService:
    """The review API on an ephemeral port, publishing to a test exchange we observe."""

    base_url: str
    http: aiohttp.ClientSession
    fhir: FhirClient
    channel: aio_pika.abc.AbstractChannel
    observed: aio_pika.abc.AbstractQueue
    tokens: TokenCache

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        account: str | None = "rad1",
        token: str | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """Call as a development account (default rad1), with a given token, or with none
        (account=None)."""
        if token is None and account is not None:
            token = await self.tokens(account)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        data = body if isinstance(body, str | bytes) or body is None else json.dumps(body)
        async with self.http.request(
            method, f"{self.base_url}{path}", data=data, headers=headers
        ) as response:
            return response.status, await response.json(content_type=None)

    async def published(
        self, expected: int, wait_seconds: float = 5.0
    ) -> list[aio_pika.abc.AbstractIncomingMessage]:
        """Take `expected` messages from the observer queue (fewer on timeout)."""
        taken: list[aio_pika.abc.AbstractIncomingMessage] = []
        deadline = asyncio.get_running_loop().time() + wait_seconds
        while len(taken) < expected and asyncio.get_running_loop().time() < deadline:
            message = await self.observed.get(no_ack=True, fail=False)
            if message is None:
                await asyncio.sleep(0.05)
            else:
                taken.append(message)
        return taken


async def _review_service(
    infra: Infrastructure, fhir: FhirClient, tokens: TokenCache
) -> AsyncIterator[ReviewService]:
    tag = uuid.uuid4().hex[:8]
    settings = BrokerSettings(url=infra.amqp_url, exchange=f"radmesh.test-{tag}")
    connection = await aio_pika.connect_robust(infra.amqp_url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(
        settings.exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    observed = await channel.declare_queue(f"radmesh.test-{tag}.observer", exclusive=True)
    await observed.bind(exchange, routing_key="finding.*")
    bus = Bus(settings, service=f"test-verification-{tag}")
    await bus.start()
    desk = ReviewDesk(fhir, bus.publish, infra.fhir_base_url)

    # No clock-skew leeway, so a token is refused the second it expires.
    app = review_app(desk, oidc_settings(infra, leeway_seconds=0), "verification-test")
    runner = await start_http(app, "127.0.0.1", 0)
    port = runner.addresses[0][1]
    http = aiohttp.ClientSession()
    try:
        yield ReviewService(f"http://127.0.0.1:{port}", http, fhir, channel, observed, tokens)
    finally:
        await http.close()
        await runner.cleanup()
        await app.stop()
        await bus.stop()
        await observed.delete(if_unused=False, if_empty=False)
        await exchange.delete()
        await connection.close()


@pytest.fixture
async def review(
    infra: Infrastructure, fhir: FhirClient, tokens: TokenCache
) -> AsyncIterator[ReviewService]:
    async for service in _review_service(infra, fhir, tokens):
        yield service


OpenTask = Callable[[], Awaitable[tuple[SeededStudy, str, ResultsPosted]]]


@pytest.fixture
async def open_task(fhir: FhirClient) -> AsyncIterator[OpenTask]:
    """Seed a critical study and create its verification Task; Tasks a test leaves open are
    cancelled afterwards, so the shared FHIR server's worklist does not grow run after run."""
    opened: list[str] = []

    async def create() -> tuple[SeededStudy, str, ResultsPosted]:
        seeded = await seed_study(fhir, critical=True)
        event = seeded.results_posted()
        await CreateVerificationTask(fhir)(event)
        task_id = str((await _task_of(fhir, seeded))["id"])
        opened.append(task_id)
        return seeded, task_id, event

    yield create
    for task_id in opened:
        await _cancel(fhir, {"id": task_id})


async def _signed_in_practitioner(fhir: FhirClient, infra: Infrastructure, token: str) -> str:
    """The Practitioner radmesh keeps for the account of `token` (identifier issuer|sub)."""
    subject = jwt.decode(token, options={"verify_signature": False})["sub"]
    (practitioner,) = await search_resources(
        fhir, "Practitioner", identifier=f"{infra.oidc_issuer}|{subject}"
    )
    return f"Practitioner/{practitioner['id']}"


async def _expired_token(infra: Infrastructure) -> str:
    """A real Keycloak token of rad1 from the client whose tokens live 2 s, once it expired."""
    token = await access_token(infra, "rad1", client="radmesh-short-lived")
    expires = jwt.decode(token, options={"verify_signature": False})["exp"]
    await asyncio.sleep(max(0.0, expires + 1 - time.time()))  # exp has whole-second resolution
    return token


async def test_requests_without_a_valid_access_token_are_refused_with_401(
    review: ReviewService, infra: Infrastructure
) -> None:
    """No token, a token that is not a JWT, an expired Keycloak token, a token signed by
    another issuer's key, and one forged in Keycloak's name: each a 401 OperationOutcome
    (code login) saying why, for listing and deciding alike."""
    cases = {
        "not-a-jwt": ("wrong-token", "not a JWT"),
        "expired": (await _expired_token(infra), "expired"),
        "foreign issuer": (forged_token("http://127.0.0.1:1/realms/elsewhere"), "does not publish"),
        "forged in keycloak's name": (forged_token(infra.oidc_issuer), "does not publish"),
    }
    status, body = await review.call("GET", "/tasks", account=None)
    assert (status, body["issue"][0]["code"]) == (401, "login")
    assert "access token is required" in body["issue"][0]["diagnostics"]
    for name, (token, expected) in cases.items():
        for method, path in (("GET", "/tasks"), ("POST", "/tasks/x/accept")):
            status, body = await review.call(method, path, {}, token=token)
            assert status == 401, name
            assert body["resourceType"] == "OperationOutcome"
            assert body["issue"][0]["code"] == "login"
            assert expected in body["issue"][0]["diagnostics"], (name, body)


async def test_roles_decide_what_each_account_sees(
    review: ReviewService, open_task: OpenTask
) -> None:
    """A clinician is refused the worklist and preliminary results (403) and sees the report
    once a radiologist accepted it (200); an operator sees the worklist counts, without
    patient data, and no results; an account without a radmesh role sees nothing."""
    seeded, task_id, _ = await open_task()
    report = f"/reports/{seeded.diagnostic_report.split('/')[1]}"
    for account, path, expected in (
        ("clin1", "/tasks", 403),
        ("clin1", f"/tasks/{task_id}", 403),
        ("clin1", report, 403),
        ("ops1", "/tasks", 403),
        ("ops1", report, 403),
        ("guest1", "/tasks", 403),
        ("guest1", report, 403),
        ("guest1", "/ops/worklist", 403),
        ("rad1", "/ops/worklist", 403),
        ("rad1", report, 200),
        ("rad1", f"/tasks/{task_id}", 200),
    ):
        status, body = await review.call("GET", path, account=account)
        assert status == expected, (account, path, body)
        if expected == 403:
            assert body["issue"][0]["code"] == "forbidden"
    status, body = await review.call("POST", f"/tasks/{task_id}/accept", {}, account="clin1")
    assert status == 403

    status, counts = await review.call("GET", "/ops/worklist", account="ops1")
    assert status == 200
    assert counts["open_verification_tasks"]["stat"]["waiting"] >= 1
    text = json.dumps(counts)
    assert "Patient" not in text and seeded.study_instance_uid not in text

    status, _ = await review.call("POST", f"/tasks/{task_id}/accept", {})
    assert status == 200
    status, view = await review.call("GET", report, account="clin1")
    assert status == 200
    assert view["status"] == "final"
    assert [f["observation"] for f in view["findings"]] == list(seeded.observations)


async def test_bad_verdict_bodies_are_answered_with_400_saying_what_is_wrong(
    review: ReviewService, open_task: OpenTask
) -> None:
    """Not JSON, a verifier other than the signed-in user, a reject without a reason code or
    with an unknown one, "other" without a note, an unknown field, and amendments of a finding
    not in the report, of a finding without a measured value, or without a number are each a
    400 OperationOutcome naming the problem; the Task stays open."""
    seeded, task_id, _ = await open_task()
    volume, hemorrhage = seeded.observations[1], seeded.observations[0]
    cases: list[tuple[str, Any, str]] = [
        ("accept", "{not json", "not valid JSON"),
        ("accept", {"verifier": seeded.practitioner}, "the signed-in user"),
        ("reject", {}, "reason must be one of"),
        ("reject", {"reason": "looks odd"}, "reason must be one of"),
        ("reject", {"reason": "other"}, "needs a note"),
        ("accept", {"extra": 1}, "unknown field"),
        ("amend", {"observation": "Observation/not-in-report", "value": 3}, "not one of"),
        ("amend", {"observation": hemorrhage, "value": 3}, "no measured value"),
        ("amend", {"observation": volume, "value": "9 mL"}, "finite number"),
        ("amend", {"observation": volume}, "finite number"),
    ]
    for action, body, expected in cases:
        status, outcome = await review.call("POST", f"/tasks/{task_id}/{action}", body)
        assert status == 400, (action, body, outcome)
        assert outcome["resourceType"] == "OperationOutcome"
        assert expected in outcome["issue"][0]["diagnostics"], (action, body, outcome)
    assert (await _task_of(review.fhir, seeded))["status"] == "requested"


async def test_unknown_task_is_404(review: ReviewService) -> None:
    """Deciding or showing a Task the server does not have answers 404 with an
    OperationOutcome."""
    for method, path in (("POST", f"/tasks/{uuid.uuid4()}/accept"), ("GET", "/tasks/nope")):
        status, outcome = await review.call(method, path, {})
        assert status == 404
        assert outcome["issue"][0]["code"] == "not-found"


async def test_worklist_lists_the_open_task_with_its_findings(
    review: ReviewService, open_task: OpenTask
) -> None:
    """GET /tasks shows the open Task with its report and each finding's display, value,
    probability and status, and links to accept and reject it."""
    seeded, task_id, _ = await open_task()
    status, body = await review.call("GET", "/tasks")
    assert status == 200
    items = [item for item in body["tasks"] if item["id"] == task_id]
    assert len(items) == 1
    item = items[0]
    assert item["priority"] == "stat"
    assert item["study_instance_uid"] == seeded.study_instance_uid
    assert item["diagnostic_report"]["reference"] == seeded.diagnostic_report
    assert item["diagnostic_report"]["status"] == "preliminary"
    findings = {finding["observation"]: finding for finding in item["findings"]}
    hemorrhage = findings[seeded.observations[0]]
    assert hemorrhage["code"] == "Intracranial hemorrhage"
    assert hemorrhage["value"] == "Present"
    assert hemorrhage["probability"] == pytest.approx(0.93)
    assert hemorrhage["status"] == "preliminary"
    assert findings[seeded.observations[1]]["value"] == {"value": 12.5, "unit": "mL"}
    assert item["links"]["accept"] == f"/tasks/{task_id}/accept"
    stat_first = [entry["priority"] for entry in body["tasks"]]
    assert stat_first == sorted(stat_first, key=lambda p: p != "stat")


class _NoIncludes(FhirClient):
    """A FHIR client that drops `_include` from searches, as an R4 server that does not
    support it answers (R4 lets a server ignore it)."""

    async def execute(
        self,
        path: str,
        method: str = "post",
        data: dict[Any, Any] | None = None,
        params: dict[Any, Any] | None = None,
    ) -> Any:
        if params is not None:
            params = {k: v for k, v in params.items() if not k.startswith("_include")}
        return await super().execute(path, method, data=data, params=params)


async def test_worklist_reads_findings_by_reference_when_the_server_ignores_include(
    infra: Infrastructure, tokens: TokenCache, open_task: OpenTask
) -> None:
    """On a server that ignores `_include`/`_include:iterate`, the worklist still shows each
    Task's report and findings (read by reference), not `findings: 0`."""
    seeded, task_id, _ = await open_task()
    plain = _NoIncludes(FhirSettings(base_url=infra.fhir_base_url))
    try:
        async for service in _review_service(infra, plain, tokens):
            status, body = await service.call("GET", "/tasks")
            assert status == 200
            (item,) = [item for item in body["tasks"] if item["id"] == task_id]
            assert item["diagnostic_report"]["status"] == "preliminary"
            assert [f["observation"] for f in item["findings"]] == list(seeded.observations)
    finally:
        await plain.close()


async def test_accept_makes_results_final_verified_and_clinician_asserted(
    review: ReviewService, open_task: OpenTask, infra: Infrastructure
) -> None:
    """Accept by rad1: every Observation and the report become final; the conclusion and the
    notes say verified by Rita Adler instead of "not verified"; AIAST becomes CLINAST_AIRPT;
    rad1's Practitioner (created on first sign-in, identified by issuer and subject) is the
    report's interpreter, the Task's owner and the Provenance's verifier; finding.verified is
    published in the study's run; a second accept answers 409."""
    seeded, task_id, event = await open_task()
    status, body = await review.call("POST", f"/tasks/{task_id}/accept", {})
    assert status == 200, body
    fhir = review.fhir
    verifier = await _signed_in_practitioner(fhir, infra, await review.tokens("rad1"))
    assert body["verifier"] == verifier
    for reference in seeded.observations:
        observation = await fhir.execute(reference, "get")
        assert observation["status"] == "final"
        assert [s["code"] for s in observation["meta"]["security"]] == ["CLINAST_AIRPT"]
        (note,) = observation["note"]
        assert "verified by Rita Adler on" in note["text"]
        assert "not verified" not in note["text"] and "preliminary" not in note["text"]
    report = await fhir.execute(seeded.diagnostic_report, "get")
    assert report["status"] == "final"
    assert report["conclusion"].startswith("AI result, verified by Rita Adler on ")
    assert [s["code"] for s in report["meta"]["security"]] == ["CLINAST_AIRPT"]
    assert report["resultsInterpreter"] == [{"reference": verifier, "display": "Rita Adler"}]
    task = await fhir.execute(f"Task/{task_id}", "get")
    assert task["status"] == "completed"
    assert task["owner"]["reference"] == verifier
    # published at once: out of the outbox again
    assert OUTBOX_TAG["code"] not in [t["code"] for t in task["meta"].get("tag", [])]
    provenance = await fhir.execute(body["provenance"], "get")
    assert provenance["agent"][0]["who"]["reference"] == verifier
    assert provenance["agent"][0]["type"]["coding"][0]["code"] == "verifier"
    assert provenance["activity"]["text"] == "verify"
    # pinned to the versions the verdict wrote: the report and each Observation as verified
    versions = {
        reference: (await fhir.execute(reference, "get"))["meta"]["versionId"]
        for reference in [seeded.diagnostic_report, *seeded.observations]
    }
    assert sorted(target["reference"] for target in provenance["target"]) == sorted(
        f"{reference}/_history/{version}" for reference, version in versions.items()
    )
    assert task["relevantHistory"] == [{"reference": body["provenance"]}]

    messages = await review.published(expected=1)
    assert len(messages) == 1
    assert messages[0].routing_key == "finding.verified"
    verified = FindingVerified.model_validate_json(messages[0].body)
    assert verified.correlation_id == event.correlation_id
    assert verified.causation_id == event.message_id
    assert verified.task == f"Task/{task_id}"
    assert verified.verifier == verifier
    assert verified.provenance == body["provenance"]
    assert verified.study.study_instance_uid == seeded.study_instance_uid
    assert not verified.amended

    status, outcome = await review.call("POST", f"/tasks/{task_id}/accept", {}, account="rad2")
    assert status == 409
    assert outcome["issue"][0]["code"] == "conflict"
    assert await review.published(expected=1, wait_seconds=0.5) == []


async def test_reject_as_false_positive_enters_results_in_error_and_publishes_the_code(
    review: ReviewService, open_task: OpenTask
) -> None:
    """Reject with reason false-positive: Observations and report entered-in-error, the
    conclusion says rejected and why, the Task completed with the coded reason, and
    finding.rejected carries the code and the words."""
    seeded, task_id, event = await open_task()
    note = "Calcification of the falx, not hemorrhage"
    status, body = await review.call(
        "POST", f"/tasks/{task_id}/reject", {"reason": "false-positive", "note": note}
    )
    assert status == 200, body
    fhir = review.fhir
    for reference in seeded.observations:
        observation = await fhir.execute(reference, "get")
        assert observation["status"] == "entered-in-error"
        assert note in observation["note"][-1]["text"]
    report = await fhir.execute(seeded.diagnostic_report, "get")
    assert report["status"] == "entered-in-error"
    assert report["conclusion"].startswith("AI result rejected by Rita Adler")
    assert note in report["conclusion"]
    task = await fhir.execute(f"Task/{task_id}", "get")
    assert task["status"] == "completed"
    assert task["statusReason"]["coding"][0]["code"] == "false-positive"
    assert note in task["statusReason"]["text"]

    messages = await review.published(expected=1)
    assert [message.routing_key for message in messages] == ["finding.rejected"]
    rejected = FindingRejected.model_validate_json(messages[0].body)
    assert rejected.reason_code == "false-positive"
    assert note in rejected.reason
    assert rejected.correlation_id == event.correlation_id


async def test_reject_for_poor_image_quality_cancels_the_results(
    review: ReviewService, open_task: OpenTask
) -> None:
    """A reason that does not say the finding was wrong (poor image quality) cancels the
    results instead of entering them in error."""
    seeded, task_id, _ = await open_task()
    status, _ = await review.call(
        "POST", f"/tasks/{task_id}/reject", {"reason": "poor-image-quality"}
    )
    assert status == 200
    assert (await review.fhir.execute(seeded.diagnostic_report, "get"))["status"] == "cancelled"


async def test_amend_corrects_a_measurement_and_keeps_the_ai_value_in_the_history(
    review: ReviewService, open_task: OpenTask
) -> None:
    """Amend the hemorrhage volume from 12.5 to 9 mL: that Observation is amended with the new
    value and a note naming both values, its previous version still holds 12.5; the other
    finding is final; the report is final with the amendment in its conclusion; the
    Provenance's activity is amend; finding.verified says amended."""
    seeded, task_id, _ = await open_task()
    hemorrhage, volume = seeded.observations
    status, body = await review.call(
        "POST",
        f"/tasks/{task_id}/amend",
        {"observation": volume, "value": 9, "note": "measured on the thin slices"},
    )
    assert status == 200, body
    fhir = review.fhir
    amended = await fhir.execute(volume, "get")
    assert amended["status"] == "amended"
    assert amended["valueQuantity"]["value"] == 9
    assert "the AI measured 12.5 mL, the radiologist 9 mL" in amended["note"][-1]["text"]
    history = await fhir.execute(f"{volume}/_history", "get")
    values = [e["resource"].get("valueQuantity", {}).get("value") for e in history["entry"]]
    assert 12.5 in values and 9 in values
    assert (await fhir.execute(hemorrhage, "get"))["status"] == "final"
    report = await fhir.execute(seeded.diagnostic_report, "get")
    assert report["status"] == "final"
    assert "Amended by the radiologist" in report["conclusion"]
    assert "9 mL" in report["conclusion"]
    provenance = await fhir.execute(body["provenance"], "get")
    assert provenance["activity"]["text"] == "amend"
    (message,) = await review.published(expected=1)
    assert FindingVerified.model_validate_json(message.body).amended


class _ConcurrentWriter(FhirClient):
    """A FHIR client whose next transaction is preceded by someone else's update of the first
    Observation, as if another reviewer wrote between our read and our write."""

    observation: str = ""

    async def transaction(
        self,
        bundle: dict[str, Any],
        *,
        replace_security_labels: bool = False,
        representation: bool = False,
    ) -> dict[str, Any]:
        current = dict(await self.execute(self.observation, "get"))
        current["note"] = [{"text": "edited concurrently"}]
        await self.execute(self.observation, "put", data=current)
        return await super().transaction(
            bundle, replace_security_labels=replace_security_labels, representation=representation
        )


async def test_concurrent_change_answers_409_and_writes_nothing(
    infra: Infrastructure, fhir: FhirClient, open_task: OpenTask, tokens: TokenCache
) -> None:
    """When a resource changes between the read and the write, the version-guarded transaction
    fails: the API answers 409, the Task stays requested and the report preliminary."""
    seeded, task_id, _ = await open_task()
    racing = _ConcurrentWriter(FhirSettings(base_url=infra.fhir_base_url))
    racing.observation = seeded.observations[0]
    try:
        async for service in _review_service(infra, racing, tokens):
            status, outcome = await service.call("POST", f"/tasks/{task_id}/accept", {})
            assert status == 409
            assert "changed while" in outcome["issue"][0]["diagnostics"]
            assert await service.published(expected=1, wait_seconds=0.5) == []
    finally:
        await racing.close()
    assert (await fhir.execute(f"Task/{task_id}", "get"))["status"] == "requested"
    assert (await fhir.execute(seeded.diagnostic_report, "get"))["status"] == "preliminary"
    assert (await fhir.execute(seeded.observations[1], "get"))["status"] == "preliminary"


async def _audit_events(fhir: FhirClient, entity: str) -> list[dict[str, Any]]:
    return await search_resources(fhir, "AuditEvent", entity=entity)


async def test_reads_and_verdicts_are_audited_with_who_what_and_outcome(
    review: ReviewService, open_task: OpenTask, infra: Infrastructure
) -> None:
    """Reading a Task, its key image list, a refused read of its preliminary report by a
    clinician and the verdict each write an AuditEvent (BALP rest: read / update) naming the
    user by issuer and subject, the Task, report and patient, the network address and the
    outcome (0, or 4 for the refusal); each validates on the FHIR server."""
    seeded, task_id, _ = await open_task()
    task = f"Task/{task_id}"
    report_path = f"/reports/{seeded.diagnostic_report.split('/')[1]}"
    assert (await review.call("GET", f"/tasks/{task_id}"))[0] == 200
    assert (await review.call("GET", report_path, account="clin1"))[0] == 403
    assert (await review.call("POST", f"/tasks/{task_id}/accept", {}))[0] == 200
    rad1 = jwt.decode(await review.tokens("rad1"), options={"verify_signature": False})

    events = await _audit_events(review.fhir, task)
    by_interaction = {e["subtype"][0]["code"]: e for e in events}
    assert set(by_interaction) == {"read", "update"}
    for event in by_interaction.values():
        (agent,) = event["agent"]
        assert agent["who"]["identifier"] == {"system": infra.oidc_issuer, "value": rad1["sub"]}
        assert agent["who"]["display"] == "rad1"
        assert agent["requestor"] is True
        assert agent["network"]["address"] == "127.0.0.1"
        assert event["outcome"] == "0"
        entities = {entity["what"]["reference"] for entity in event["entity"]}
        assert {task, seeded.diagnostic_report} <= entities
    assert seeded.patient in {e["what"]["reference"] for e in by_interaction["read"]["entity"]}
    assert by_interaction["update"]["action"] == "U"
    assert by_interaction["update"]["agent"][0]["type"]["coding"][0]["code"] == "VRF"

    refusals = [
        e for e in await _audit_events(review.fhir, seeded.diagnostic_report) if e["outcome"] == "4"
    ]
    assert len(refusals) == 1
    assert refusals[0]["agent"][0]["who"]["display"] == "clin1"

    for event in [*events, *refusals]:
        outcome = await review.fhir.execute(f"AuditEvent/{event['id']}/$validate", "get")
        errors = [i for i in outcome.get("issue", []) if i["severity"] in ("error", "fatal")]
        assert errors == [], errors


async def test_a_verdict_whose_event_the_broker_refused_is_published_by_the_outbox_sweep(
    fhir: FhirClient, open_task: OpenTask, infra: Infrastructure
) -> None:
    """The broker refuses finding.verified: the verdict is stored, the answer says the event is
    not published yet, and the Task stays tagged in the outbox. The sweep (grace 0) publishes
    the event rebuilt from the Task — same run, same verifier and Provenance, a message id
    derived from the Task — and untags it; a second sweep publishes nothing more for it."""
    seeded, task_id, event = await open_task()

    async def broker_down(_event: Event) -> None:
        raise BrokerUnavailable("finding.verified not published, the broker is unavailable")

    desk = ReviewDesk(fhir, broker_down, infra.fhir_base_url)
    verdict = Verdict("accepted", Reviewer(seeded.practitioner, "Dr Seed"))
    answer = await desk.decide(task_id, verdict)
    assert answer["event_published"] is False
    task = await fhir.read_resource(f"Task/{task_id}")
    assert task["status"] == "completed"
    assert OUTBOX_TAG["code"] in [t["code"] for t in task["meta"].get("tag", [])]

    published: list[Event] = []

    async def broker_up(sent: Event) -> None:
        published.append(sent)

    outbox = VerdictOutbox(fhir, broker_up, sweep_seconds=0, grace_seconds=0)
    await outbox.sweep_once()
    ours = [e for e in published if getattr(e, "task", None) == f"Task/{task_id}"]
    assert len(ours) == 1
    (sent,) = ours
    assert isinstance(sent, FindingVerified)
    assert sent.correlation_id == event.correlation_id
    assert (sent.verifier, sent.provenance) == (seeded.practitioner, answer["provenance"])
    assert sent.message_id == uuid.uuid5(uuid.NAMESPACE_URL, f"radmesh:verdict:Task/{task_id}")
    task = await fhir.read_resource(f"Task/{task_id}")
    assert OUTBOX_TAG["code"] not in [t["code"] for t in task["meta"].get("tag", [])]
    published.clear()
    await outbox.sweep_once()
    assert [e for e in published if getattr(e, "task", None) == f"Task/{task_id}"] == []


# -- acknowledging critical alerts ----------------------------------------------------------


async def test_a_clinician_acknowledges_an_alert_once_and_the_flag_clears(
    review: ReviewService, fhir: FhirClient, infra: Infrastructure
) -> None:
    """clin1 sees the bleed's open alert and acknowledges it: the CommunicationRequest is
    completed, the patient's Flag inactive, and one acknowledgement Communication names clin1's
    Practitioner, in response to the alert, with the minutes it took; /metrics counts it in the
    time-to-acknowledge histogram of its finding and model. clin2's second
    acknowledgement records nothing more and answers the first; an operator may not
    acknowledge; an unknown alert is 404."""
    registry = load_registry(ROOT / "registry" / "models.yaml")
    seeded = await seed_study(fhir, critical=True)
    (alert,) = await RaiseAlerts(registry, fhir)(seeded.results_posted())
    assert isinstance(alert, AlertRaised) and alert.flag
    request_id = alert.communication_request.split("/")[1]

    status, body = await review.call("GET", "/alerts", account="clin1")
    assert status == 200
    assert request_id in [item["id"] for item in body["alerts"]]
    assert (await review.call("POST", f"/alerts/{request_id}/acknowledge", {}, account="ops1"))[
        0
    ] == 403
    status, first = await review.call(
        "POST", f"/alerts/{request_id}/acknowledge", {}, account="clin1"
    )
    assert status == 200, first
    assert first["already_acknowledged"] is False
    clin1 = await _signed_in_practitioner(fhir, infra, await review.tokens("clin1"))
    assert first["acknowledged_by"] == clin1
    status, second = await review.call(
        "POST", f"/alerts/{request_id}/acknowledge", {}, account="clin2"
    )
    assert status == 200
    assert second["already_acknowledged"] is True
    assert (second["acknowledgement"], second["acknowledged_by"]) == (
        first["acknowledgement"],
        clin1,
    )

    assert (await fhir.read_resource(alert.communication_request))["status"] == "completed"
    flag = await fhir.read_resource(alert.flag)
    assert flag["status"] == "inactive" and "end" in flag["period"]
    acknowledgements = await search_resources(
        fhir,
        "Communication",
        identifier=f"{_alert_identifier_of(await fhir.read_resource(alert.communication))}"
        "/acknowledgement",
    )
    assert len(acknowledgements) == 1
    (acknowledgement,) = acknowledgements
    assert acknowledgement["inResponseTo"] == [{"reference": alert.communication}]
    assert acknowledgement["sender"]["reference"] == clin1
    assert "minutes after the alert" in acknowledgement["payload"][0]["contentString"]
    status, body = await review.call("GET", "/alerts", account="clin1")
    assert request_id not in [item["id"] for item in body["alerts"]]
    status, outcome = await review.call("POST", "/alerts/nope/acknowledge", {}, account="clin1")
    assert (status, outcome["issue"][0]["code"]) == (404, "not-found")

    async with review.http.get(f"{review.base_url}/metrics") as response:
        assert response.status == 200
        metrics = await response.text()
    labels = 'finding="intracranial-hemorrhage",model="ich-reference/1"'
    assert f"radmesh_alert_time_to_acknowledge_seconds_count{{{labels}}}" in metrics
    assert seeded.study_instance_uid not in metrics


async def test_a_withdrawn_alert_cannot_be_acknowledged(
    review: ReviewService, fhir: FhirClient, infra: Infrastructure
) -> None:
    """Once the notifier withdrew the alert (the report was rejected), acknowledging it is a
    409 saying so, and no acknowledgement is recorded."""
    registry = load_registry(ROOT / "registry" / "models.yaml")
    seeded = await seed_study(fhir, critical=True)
    (alert,) = await RaiseAlerts(registry, fhir)(seeded.results_posted())
    assert isinstance(alert, AlertRaised)
    rejected = FindingRejected(
        study=seeded.results_posted().study,
        task="Task/withdrawn-in-test",
        diagnostic_report=seeded.diagnostic_report,
        verifier=seeded.practitioner,
        reason="False positive",
        reason_code="false-positive",
    )
    await FollowUpAlerts(fhir, infra.fhir_base_url).withdraw(rejected)
    request_id = alert.communication_request.split("/")[1]
    status, outcome = await review.call(
        "POST", f"/alerts/{request_id}/acknowledge", {}, account="clin1"
    )
    assert status == 409
    assert "withdrawn" in outcome["issue"][0]["diagnostics"]


def _alert_identifier_of(resource: dict[str, Any]) -> str:
    (identifier,) = [i for i in resource["identifier"] if i["system"].startswith("urn:radmesh:")]
    return f"{identifier['system']}|{identifier['value']}"
