"""Development FHIR server (deploy/fhir-server): R4 rest-hook Subscriptions, delivered like HAPI.

Each test starts its own aiohttp receiver on 127.0.0.1 (ephemeral port), creates a Subscription
pointing at it and writes ImagingStudy resources that do or do not match the criteria.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import Infrastructure
from tests.integration.fhir_http import (
    FHIR_JSON,
    TAG_SYSTEM,
    Json,
    fail_not_answering,
    post_entry,
    tagged,
    transaction,
)

pytestmark = pytest.mark.integration

DELIVERY_TIMEOUT = 10.0
QUIET_PERIOD = 1.5


@dataclass
class Delivery:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Records every request it receives; answers `fail_first` requests with HTTP 500."""

    base_url: str = ""
    fail_first: int = 0
    deliveries: asyncio.Queue[Delivery] = field(default_factory=asyncio.Queue)
    seen: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.seen += 1
        body = await request.read()
        if self.seen <= self.fail_first:
            return web.Response(status=500, text="try again")
        await self.deliveries.put(
            Delivery(request.method, request.path, dict(request.headers), body)
        )
        return web.Response(status=200)

    async def next(self) -> Delivery:
        async with asyncio.timeout(DELIVERY_TIMEOUT):
            return await self.deliveries.get()

    async def assert_quiet(self, period: float = QUIET_PERIOD) -> None:
        await asyncio.sleep(period)
        assert self.deliveries.empty(), f"unexpected delivery: {self.deliveries.get_nowait()}"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    recv = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recv.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    recv.base_url = f"http://127.0.0.1:{port}/hook"
    yield recv
    await runner.cleanup()


@pytest.fixture
async def fhir(infra: Infrastructure) -> AsyncIterator[FhirClient]:
    async with aiohttp.ClientSession(
        headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
    ) as session:
        client = FhirClient(infra.fhir_base_url, session)
        try:
            async with session.get(f"{infra.fhir_base_url}/metadata") as resp:
                resp.raise_for_status()
        except aiohttp.ClientError as exc:
            fail_not_answering(infra.fhir_base_url, exc)
        yield client
        # switch off what the test subscribed, so later writes are not matched against it
        for sub_id in client.subscriptions:
            async with session.delete(f"{infra.fhir_base_url}/Subscription/{sub_id}") as resp:
                assert resp.status < 300


class FhirClient:
    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        self.base = base
        self.session = session
        self.subscriptions: list[str] = []

    async def send(self, method: str, path: str, body: Json) -> tuple[int, Json]:
        url = f"{self.base}/{path}" if path else self.base
        async with self.session.request(method, url, json=body) as resp:
            data: Json = await resp.json(content_type=None)
            return resp.status, data

    async def create(self, resource: Json) -> Json:
        status, body = await self.send("POST", resource["resourceType"], resource)
        assert status == 201, body
        if body["resourceType"] == "Subscription":
            self.subscriptions.append(body["id"])
        return body

    async def update(self, resource: Json) -> Json:
        status, body = await self.send(
            "PUT", f"{resource['resourceType']}/{resource['id']}", resource
        )
        assert status == 200, body
        return body


def study(tag: str, status: str = "available") -> Json:
    return tagged(
        {"resourceType": "ImagingStudy", "status": status, "subject": {"display": "test patient"}},
        tag,
    )


def subscription(
    tag: str, endpoint: str, payload: str | None, headers: list[str] | None = None
) -> Json:
    channel: Json = {"type": "rest-hook", "endpoint": endpoint}
    if payload:
        channel["payload"] = payload
    if headers:
        channel["header"] = headers
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "radmesh integration test",
        "criteria": f"ImagingStudy?status=available&_tag={TAG_SYSTEM}|{tag}",
        "channel": channel,
    }


async def test_requested_subscription_is_activated(fhir: FhirClient, receiver: Receiver) -> None:
    """A Subscription created with status requested is stored as active (as HAPI does)."""
    sub = await fhir.create(subscription(uuid.uuid4().hex, receiver.base_url, FHIR_JSON))
    assert sub["status"] == "active"
    status, stored = await fhir.send("GET", f"Subscription/{sub['id']}", {})
    assert status == 200 and stored["status"] == "active"


async def test_invalid_criteria_is_rejected_with_400(fhir: FhirClient, receiver: Receiver) -> None:
    """A Subscription whose criteria uses an unknown search parameter is refused (400)."""
    bad = subscription(uuid.uuid4().hex, receiver.base_url, None)
    bad["criteria"] = "ImagingStudy?no-such-param=1"
    status, body = await fhir.send("POST", "Subscription", bad)
    assert status == 400, body


async def test_rest_hook_with_payload_puts_resource_with_headers(
    fhir: FhirClient, receiver: Receiver
) -> None:
    """With channel.payload set, a matching create is PUT to {endpoint}/ImagingStudy/{id} with the
    resource as body and each channel.header as an HTTP header."""
    tag = uuid.uuid4().hex
    await fhir.create(
        subscription(
            tag,
            receiver.base_url,
            FHIR_JSON,
            ["Authorization: Bearer secret-token", "X-Radmesh-Test: yes"],
        )
    )
    created = await fhir.create(study(tag))
    delivery = await receiver.next()
    assert delivery.method == "PUT"
    assert delivery.path == f"/hook/ImagingStudy/{created['id']}"
    assert delivery.headers["Authorization"] == "Bearer secret-token"
    assert delivery.headers["X-Radmesh-Test"] == "yes"
    assert delivery.headers["Content-Type"].startswith(FHIR_JSON)
    body = json.loads(delivery.body)
    assert body["resourceType"] == "ImagingStudy"
    assert body["id"] == created["id"]
    assert body["meta"]["versionId"] == "1"


async def test_rest_hook_without_payload_posts_empty_body(
    fhir: FhirClient, receiver: Receiver
) -> None:
    """With no channel.payload, a matching create is a POST to the endpoint with an empty body."""
    tag = uuid.uuid4().hex
    await fhir.create(subscription(tag, receiver.base_url, None, ["X-Radmesh-Test: ping"]))
    await fhir.create(study(tag))
    delivery = await receiver.next()
    assert delivery.method == "POST"
    assert delivery.path == "/hook"
    assert delivery.body == b""
    assert delivery.headers["X-Radmesh-Test"] == "ping"


async def test_update_into_matching_state_fires_and_non_matching_does_not(
    fhir: FhirClient, receiver: Receiver
) -> None:
    """A create that does not match (status registered) fires nothing; updating it to available does."""
    tag = uuid.uuid4().hex
    await fhir.create(subscription(tag, receiver.base_url, FHIR_JSON))
    registered = await fhir.create(study(tag, status="registered"))
    await receiver.assert_quiet()
    updated = await fhir.update({**registered, "status": "available"})
    delivery = await receiver.next()
    assert delivery.method == "PUT"
    assert delivery.path == f"/hook/ImagingStudy/{registered['id']}"
    assert json.loads(delivery.body)["meta"]["versionId"] == updated["meta"]["versionId"] == "2"


async def test_rolled_back_transaction_fires_nothing(fhir: FhirClient, receiver: Receiver) -> None:
    """A transaction that fails (last entry invalid) delivers no notification for its earlier entries."""
    tag = uuid.uuid4().hex
    await fhir.create(subscription(tag, receiver.base_url, FHIR_JSON))
    bundle = transaction(
        post_entry(study(tag)),
        post_entry(
            {"resourceType": "ImagingStudy", "status": "not-a-status", "subject": {"display": "x"}}
        ),
    )
    status, body = await fhir.send("POST", "", bundle)
    assert status == 400, body
    # positive control: a committed matching write afterwards is the first thing delivered
    control = await fhir.create(study(tag))
    delivery = await receiver.next()
    assert delivery.path == f"/hook/ImagingStudy/{control['id']}"
    await receiver.assert_quiet(0.5)


async def test_committed_transaction_fires_for_matching_entries(
    fhir: FhirClient, receiver: Receiver
) -> None:
    """A successful transaction notifies once per matching entry, after commit."""
    tag = uuid.uuid4().hex
    await fhir.create(subscription(tag, receiver.base_url, FHIR_JSON))
    bundle = transaction(
        *(post_entry(study(tag, s)) for s in ("available", "registered", "available"))
    )
    status, body = await fhir.send("POST", "", bundle)
    assert status == 200, body
    expected = {
        e["response"]["location"].split("/")[1]
        for e, s in zip(body["entry"], ("available", "registered", "available"), strict=True)
        if s == "available"
    }
    got = {(await receiver.next()).path.rsplit("/", 1)[1] for _ in range(2)}
    assert got == expected
    await receiver.assert_quiet(0.5)


async def test_status_off_stops_delivery(fhir: FhirClient, receiver: Receiver) -> None:
    """After the Subscription is updated to status off, matching writes are no longer delivered."""
    tag = uuid.uuid4().hex
    sub = await fhir.create(subscription(tag, receiver.base_url, FHIR_JSON))
    await fhir.create(study(tag))
    await receiver.next()
    await fhir.update({**sub, "status": "off"})
    await fhir.create(study(tag))
    await receiver.assert_quiet()


async def test_failed_delivery_is_retried(fhir: FhirClient, receiver: Receiver) -> None:
    """A delivery answered with HTTP 500 is retried and arrives on a later attempt."""
    tag = uuid.uuid4().hex
    receiver.fail_first = 1
    await fhir.create(subscription(tag, receiver.base_url, FHIR_JSON))
    created = await fhir.create(study(tag))
    delivery = await receiver.next()
    assert delivery.path == f"/hook/ImagingStudy/{created['id']}"
    assert receiver.seen == 2


async def test_unreachable_endpoint_does_not_break_the_server(fhir: FhirClient) -> None:
    """A Subscription pointing at a closed port only logs failures; writes keep answering."""
    tag = uuid.uuid4().hex
    await fhir.create(subscription(tag, "http://127.0.0.1:9/hook", FHIR_JSON))
    for _ in range(3):
        await fhir.create(study(tag))
    status, _ = await fhir.send("GET", "metadata", {})
    assert status == 200
