"""The verification service against the real FHIR server and RabbitMQ: one Task per report, and
the review API (token, bad input, accept, reject, conflicts) with its events on the bus."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiohttp
import pytest

from services.verification.handlers import (
    CreateVerificationTask,
)
from services.verification.review import ReviewDesk
from shared.bus import Bus
from shared.fhir import FhirClient
from shared.messages import FindingRejected, FindingVerified, ResultsPosted
from shared.runtime import start_http
from shared.settings import BrokerSettings, FhirSettings
from tests.conftest import Infrastructure
from tests.integration.fhir_seed import (
    SeededStudy,
    answering_fhir_client,
    search_resources,
    seed_study,
)
from tests.integration.review_app import review_app

pytestmark = pytest.mark.integration

TOKEN = "test-verifier-token"


@pytest.fixture
async def fhir(infra: Infrastructure) -> AsyncIterator[FhirClient]:
    async with answering_fhir_client(infra) as client:
        yield client


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


@dataclass
class ReviewService:
    """The review API on an ephemeral port, publishing to a test exchange we observe."""

    base_url: str
    http: aiohttp.ClientSession
    fhir: FhirClient
    channel: aio_pika.abc.AbstractChannel
    observed: aio_pika.abc.AbstractQueue

    async def call(
        self, method: str, path: str, body: Any = None, token: str | None = TOKEN
    ) -> tuple[int, dict[str, Any]]:
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


async def _review_service(infra: Infrastructure, fhir: FhirClient) -> AsyncIterator[ReviewService]:
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

    app = review_app(desk, TOKEN, "verification-test")
    runner = await start_http(app, "127.0.0.1", 0)
    port = runner.addresses[0][1]
    http = aiohttp.ClientSession()
    try:
        yield ReviewService(f"http://127.0.0.1:{port}", http, fhir, channel, observed)
    finally:
        await http.close()
        await runner.cleanup()
        await bus.stop()
        await observed.delete(if_unused=False, if_empty=False)
        await exchange.delete()
        await connection.close()


@pytest.fixture
async def review(infra: Infrastructure, fhir: FhirClient) -> AsyncIterator[ReviewService]:
    async for service in _review_service(infra, fhir):
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


async def test_requests_without_the_bearer_token_are_refused(review: ReviewService) -> None:
    """No token or a wrong token: 401 with an OperationOutcome, for listing and deciding."""
    for token in (None, "wrong-token"):
        status, body = await review.call("GET", "/tasks", token=token)
        assert status == 401
        assert body["resourceType"] == "OperationOutcome"
        assert body["issue"][0]["code"] == "login"
    status, body = await review.call(
        "POST", "/tasks/x/accept", {"verifier": "Practitioner/x"}, token=None
    )
    assert status == 401


async def test_bad_verdict_bodies_are_answered_with_400_saying_what_is_wrong(
    review: ReviewService, open_task: OpenTask
) -> None:
    """Not JSON, no verifier, a verifier that is not a Practitioner, a reject without reason and
    a verifier that does not exist are each a 400 OperationOutcome naming the problem; the Task
    stays open."""
    seeded, task_id, _ = await open_task()
    cases: list[tuple[str, Any, str]] = [
        ("accept", "{not json", "not valid JSON"),
        ("accept", {}, "verifier"),
        ("accept", {"verifier": "Patient/abc"}, "Practitioner/<id>"),
        ("reject", {"verifier": seeded.practitioner}, "reason is required"),
        ("reject", {"verifier": seeded.practitioner, "reason": "  "}, "reason is required"),
        ("accept", {"verifier": "Practitioner/does-not-exist"}, "does not exist"),
        ("accept", {"verifier": seeded.practitioner, "extra": 1}, "unknown field"),
    ]
    for action, body, expected in cases:
        status, outcome = await review.call("POST", f"/tasks/{task_id}/{action}", body)
        assert status == 400, (action, body)
        assert outcome["resourceType"] == "OperationOutcome"
        assert expected in outcome["issue"][0]["diagnostics"], (action, body, outcome)
    assert (await _task_of(review.fhir, seeded))["status"] == "requested"


async def test_unknown_task_is_404(review: ReviewService, fhir: FhirClient) -> None:
    """Deciding a Task the server does not have answers 404 with an OperationOutcome."""
    seeded = await seed_study(fhir, critical=False)
    status, outcome = await review.call(
        "POST", f"/tasks/{uuid.uuid4()}/accept", {"verifier": seeded.practitioner}
    )
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


async def test_accept_makes_results_final_with_provenance_and_publishes_finding_verified(
    review: ReviewService, open_task: OpenTask
) -> None:
    """Accept: every Observation and the report become final, the Task completed, a Provenance
    names the verifier as agent with the report and Observations as targets, and
    finding.verified is published in the study's run; a second accept answers 409."""
    seeded, task_id, event = await open_task()
    status, body = await review.call(
        "POST", f"/tasks/{task_id}/accept", {"verifier": seeded.practitioner}
    )
    assert status == 200, body
    fhir = review.fhir
    for observation in seeded.observations:
        assert (await fhir.execute(observation, "get"))["status"] == "final"
    report = await fhir.execute(seeded.diagnostic_report, "get")
    assert report["status"] == "final"
    assert report["resultsInterpreter"] == [{"reference": seeded.practitioner}]
    task = await fhir.execute(f"Task/{task_id}", "get")
    assert task["status"] == "completed"
    assert task["owner"] == {"reference": seeded.practitioner}
    provenance = await fhir.execute(body["provenance"], "get")
    assert provenance["agent"][0]["who"] == {"reference": seeded.practitioner}
    assert provenance["agent"][0]["type"]["coding"][0]["code"] == "verifier"
    assert provenance["activity"]["text"] == "verify"
    assert sorted(target["reference"] for target in provenance["target"]) == sorted(
        [seeded.diagnostic_report, *seeded.observations]
    )
    assert task["relevantHistory"] == [{"reference": body["provenance"]}]

    messages = await review.published(expected=1)
    assert len(messages) == 1
    assert messages[0].routing_key == "finding.verified"
    verified = FindingVerified.model_validate_json(messages[0].body)
    assert verified.correlation_id == event.correlation_id
    assert verified.causation_id == event.message_id
    assert verified.task == f"Task/{task_id}"
    assert verified.verifier == seeded.practitioner
    assert verified.provenance == body["provenance"]
    assert verified.study.study_instance_uid == seeded.study_instance_uid

    status, outcome = await review.call(
        "POST", f"/tasks/{task_id}/accept", {"verifier": seeded.practitioner}
    )
    assert status == 409
    assert outcome["issue"][0]["code"] == "conflict"
    assert await review.published(expected=1, wait_seconds=0.5) == []


async def test_reject_cancels_results_with_the_reason_and_publishes_finding_rejected(
    review: ReviewService, open_task: OpenTask
) -> None:
    """Reject: Observations and report cancelled, the Task completed with the reason in its
    statusReason and output, and finding.rejected published with the reason."""
    seeded, task_id, event = await open_task()
    reason = "Calcification of the falx, not hemorrhage"
    status, body = await review.call(
        "POST", f"/tasks/{task_id}/reject", {"verifier": seeded.practitioner, "reason": reason}
    )
    assert status == 200, body
    fhir = review.fhir
    for observation in seeded.observations:
        assert (await fhir.execute(observation, "get"))["status"] == "cancelled"
    assert (await fhir.execute(seeded.diagnostic_report, "get"))["status"] == "cancelled"
    task = await fhir.execute(f"Task/{task_id}", "get")
    assert task["status"] == "completed"
    assert task["statusReason"]["text"] == reason
    assert reason in [output.get("valueString") for output in task["output"]]

    messages = await review.published(expected=1)
    assert [message.routing_key for message in messages] == ["finding.rejected"]
    rejected = FindingRejected.model_validate_json(messages[0].body)
    assert rejected.reason == reason
    assert rejected.correlation_id == event.correlation_id


class _ConcurrentWriter(FhirClient):
    """A FHIR client whose next transaction is preceded by someone else's update of the first
    Observation, as if another reviewer wrote between our read and our write."""

    observation: str = ""

    async def transaction(self, bundle: dict[str, Any]) -> dict[str, Any]:
        current = dict(await self.execute(self.observation, "get"))
        current["note"] = [{"text": "edited concurrently"}]
        await self.execute(self.observation, "put", data=current)
        return await super().transaction(bundle)


async def test_concurrent_change_answers_409_and_writes_nothing(
    infra: Infrastructure, fhir: FhirClient, open_task: OpenTask
) -> None:
    """When a resource changes between the read and the write, the version-guarded transaction
    fails: the API answers 409, the Task stays requested and the report preliminary."""
    seeded, task_id, _ = await open_task()
    racing = _ConcurrentWriter(FhirSettings(base_url=infra.fhir_base_url))
    racing.observation = seeded.observations[0]
    try:
        async for service in _review_service(infra, racing):
            status, outcome = await service.call(
                "POST", f"/tasks/{task_id}/accept", {"verifier": seeded.practitioner}
            )
            assert status == 409
            assert "changed while" in outcome["issue"][0]["diagnostics"]
            assert await service.published(expected=1, wait_seconds=0.5) == []
    finally:
        await racing.close()
    assert (await fhir.execute(f"Task/{task_id}", "get"))["status"] == "requested"
    assert (await fhir.execute(seeded.diagnostic_report, "get"))["status"] == "preliminary"
    assert (await fhir.execute(seeded.observations[1], "get"))["status"] == "preliminary"
