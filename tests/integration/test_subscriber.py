"""The subscriber against the real FHIR server, Orthanc and RabbitMQ: hooks in, study.detected out."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import hl7
import hl7.mllp
import pytest
import structlog.testing
from prometheus_client import REGISTRY
from pydantic import SecretStr

from samples.load import LoadResult
from services.subscriber.app import build_app
from services.subscriber.claims import claim_run
from services.subscriber.handlers import StudyAnnouncer
from services.subscriber.hook_auth import SIGNATURE_HEADER, sign
from services.subscriber.settings import SubscriberSettings
from services.subscriber.stale_claims import ANNOUNCE_NOTE, REDRIVE_NOTE, RedriveClaims
from services.subscriber.subscription import (
    BACKPORT_SUBSCRIPTION_PROFILE,
    TOPIC_CANONICAL_EXTENSION,
    ensure_subscription,
    ensure_subscription_at_start,
)
from shared.bus import Bus
from shared.claims import analysis_claim_task
from shared.dicomweb import DicomWebClient
from shared.errors import RemoteConflict, RemoteUnavailable
from shared.fhir import FhirClient
from shared.identifiers import ANALYSIS_CLAIM_SYSTEM, business_identifier, study_run_value
from shared.messages import Event, StudyDetected
from shared.registry import load_registry
from shared.runtime import start_http
from shared.settings import BrokerSettings, DicomWebSettings, FhirSettings, RadmeshSettings
from tests.conftest import Infrastructure
from tests.integration.fhir_seed import seed_study
from tests.integration.sample_studies import load_fresh_study
from tests.subscriptions_backport import r4_notification, r4b_notification
from tests.tcp_proxy import TcpProxy
from tests.waiting import until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

HOOK_SECRET = "subscriber-test-secret"
PACS_SECRET = "subscriber-test-pacs-secret"


@dataclass
class RunningSubscriber:
    url: str
    settings: RadmeshSettings
    own: SubscriberSettings
    detected: aio_pika.abc.AbstractQueue

    async def next_detected(
        self,
        wait_seconds: float = 10.0,
        *,
        study_instance_uid: str | None = None,
        source: str | None = None,
    ) -> StudyDetected | None:
        """The next study.detected (about this study, from this source, when given), or None.

        The test Subscription matches every available ImagingStudy on the shared FHIR server, and
        HAPI delivers its hooks asynchronously, so announcements of other tests' studies can
        arrive at any time: tests name the study they are about."""
        deadline = asyncio.get_running_loop().time() + wait_seconds
        while asyncio.get_running_loop().time() < deadline:
            message = await self.detected.get(no_ack=True, fail=False)
            if message is None:
                await asyncio.sleep(0.05)
                continue
            detected = StudyDetected.model_validate_json(message.body)
            if study_instance_uid not in (None, detected.study.study_instance_uid):
                continue
            if source not in (None, detected.source):
                continue
            return detected
        return None

    async def post_pacs_event(
        self, http: aiohttp.ClientSession, event: Mapping[str, object], secret: str = PACS_SECRET
    ) -> aiohttp.ClientResponse:
        """POST a stable-study event to the PACS hook, signed with `secret`; a fresh event id
        and emission time are added (as the PACS does) unless the event names its own."""
        fresh = {"event_id": uuid.uuid4().hex, "emitted_at": datetime.now(UTC).isoformat()}
        body = json.dumps({**fresh, **event}).encode()
        return await http.post(
            f"{self.url}/pacs/stable-study",
            data=body,
            headers={SIGNATURE_HEADER: sign(body, secret)},
        )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def running_subscriber(
    infra: Infrastructure, *, broker_url: str | None = None, **overrides: object
) -> AsyncIterator[RunningSubscriber]:
    """A subscriber on its own port and its own exchange, with an observer queue on study.detected."""
    tag = uuid.uuid4().hex[:8]
    port = _free_port()
    user, password = infra.orthanc_auth
    settings = RadmeshSettings(
        broker=BrokerSettings(
            url=broker_url or infra.amqp_url,
            exchange=f"radmesh.test-{tag}",
            publish_timeout_seconds=3,
        ),
        fhir=FhirSettings(base_url=infra.fhir_base_url),
        dicomweb=DicomWebSettings(
            base_url=infra.orthanc_dicomweb_url, username=user, password=SecretStr(password)
        ),
    )
    options: dict[str, object] = {
        "port": port,
        "public_url": f"http://127.0.0.1:{port}",
        "hook_secret": SecretStr(HOOK_SECRET),
        "pacs_hook_secret": SecretStr(PACS_SECRET),
        "reannounce_after_seconds": 0,  # each test's hooks are announced as they come
        "reconcile_hours": 0,  # the start-up sweep has its own test
        "reconcile_interval_seconds": 0,  # so has the periodic one
        "unannounced_claims_after_seconds": 0,  # and the look for claims never announced
        "claim_runs": False,  # tests send one study's hooks again on purpose; claims have theirs
        "mllp_port": 0,  # the HL7 listener has its own test (its own port)
        **overrides,
    }
    own = SubscriberSettings.model_validate(options)
    connection = await aio_pika.connect_robust(infra.amqp_url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(
        settings.broker.exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    queue = await channel.declare_queue(f"radmesh.test-{tag}.detected", exclusive=True)
    await queue.bind(exchange, routing_key=StudyDetected.event_type)
    app = build_app(settings, own)
    await app.start()
    runner = await start_http(app, "127.0.0.1", port)
    try:
        yield RunningSubscriber(f"http://127.0.0.1:{port}", settings, own, queue)
    finally:
        await runner.cleanup()
        await app.stop()
        fhir = FhirClient(settings.fhir)
        for subscription in (
            await fhir.resources("Subscription").search(url=f"{own.public_url}/fhir").fetch_all()
        ):
            await fhir.execute(f"Subscription/{subscription['id']}", method="delete")
        await fhir.close()
        await channel.exchange_delete(settings.broker.exchange)
        await connection.close()


@pytest.fixture
async def subscriber(infra: Infrastructure) -> AsyncIterator[RunningSubscriber]:
    async with running_subscriber(infra) as running:
        yield running


async def _imaging_study(infra: Infrastructure, reference: str) -> dict[str, object]:
    fhir = FhirClient(FhirSettings(base_url=infra.fhir_base_url))
    try:
        return await fhir.read_resource(reference)
    finally:
        await fhir.close()


async def test_rest_hook_with_payload_publishes_study_detected_for_matching_models(
    infra: Infrastructure, subscriber: RunningSubscriber
) -> None:
    """PUT {endpoint}/ImagingStudy/{id} with a head CT publishes study.detected naming the ICH
    model only, with the study's FHIR links and PACS address."""
    loaded = await asyncio.to_thread(load_fresh_study, infra, "head-bleed", slices=10, size=64)
    assert loaded.imaging_study_id is not None
    study = await _imaging_study(infra, loaded.imaging_study_id)
    async with aiohttp.ClientSession() as http:
        response = await http.put(
            f"{subscriber.url}/fhir/{loaded.imaging_study_id}",
            json=study,
            headers={"Authorization": f"Bearer {HOOK_SECRET}"},
        )
        assert response.status == 200, await response.text()
    detected = await subscriber.next_detected(
        study_instance_uid=loaded.study_instance_uid, source="fhir-rest-hook"
    )
    assert detected is not None
    assert detected.study.study_instance_uid == loaded.study_instance_uid
    assert detected.study.imaging_study == loaded.imaging_study_id
    assert detected.study.patient is not None and detected.study.patient.startswith("Patient/")
    assert detected.study.service_request is not None
    assert detected.study.dicomweb_base_url == infra.orthanc_dicomweb_url
    assert [(m.id, m.version) for m in detected.models] == [("ich-reference", "1")]
    assert detected.source == "fhir-rest-hook"


async def test_fhir_server_subscription_fires_the_hook_on_a_new_study(
    infra: Infrastructure, subscriber: RunningSubscriber
) -> None:
    """On start the subscriber registers its Subscription; the FHIR server then calls it when an
    available chest CT is created, and the lung nodule model is selected."""
    loaded = await asyncio.to_thread(load_fresh_study, infra, "chest-nodules", slices=10, size=64)
    detected = await subscriber.next_detected(
        wait_seconds=15, study_instance_uid=loaded.study_instance_uid
    )
    assert detected is not None, "the FHIR server's rest-hook never reached the subscriber"
    assert detected.source == "fhir-rest-hook"
    assert detected.study.study_instance_uid == loaded.study_instance_uid
    assert [m.id for m in detected.models] == ["lung-nodule-reference"]


@pytest.mark.parametrize("payload", ["application/fhir+json", None], ids=["payload", "empty-post"])
async def test_hapi_subscription_in_either_delivery_style_starts_a_run(
    infra: Infrastructure, payload: str | None
) -> None:
    """A rest-hook Subscription created on HAPI, with channel.payload (HAPI PUTs
    {endpoint}/ImagingStudy/{id} with the resource) or without (HAPI POSTs an empty body and the
    subscriber looks up what changed), reaches the subscriber when an available head CT is
    stored, and the subscriber publishes study.detected for the ICH model: the run starts."""
    async with running_subscriber(infra, ensure_subscription=False) as subscriber:
        channel: dict[str, object] = {
            "type": "rest-hook",
            "endpoint": f"{subscriber.url}/fhir",
            "header": [f"Authorization: Bearer {HOOK_SECRET}"],
        }
        if payload is not None:
            channel["payload"] = payload
        fhir = FhirClient(subscriber.settings.fhir)
        try:
            created = await fhir.create_resource(
                {
                    "resourceType": "Subscription",
                    "status": "requested",
                    "reason": "radmesh test: both rest-hook delivery styles",
                    "criteria": "ImagingStudy?status=available",
                    "channel": channel,
                }
            )
            reference = f"Subscription/{created['id']}"
            deadline = asyncio.get_running_loop().time() + 30
            while (await fhir.read_resource(reference))["status"] != "active":
                assert asyncio.get_running_loop().time() < deadline, "HAPI never activated it"
                await asyncio.sleep(0.2)
        finally:
            await fhir.close()
        loaded = await asyncio.to_thread(load_fresh_study, infra, "head-bleed", slices=10, size=64)
        detected = await subscriber.next_detected(
            wait_seconds=20, study_instance_uid=loaded.study_instance_uid
        )
    assert detected is not None, f"HAPI's {payload or 'empty'} rest-hook started no run"
    assert detected.source == "fhir-rest-hook"
    assert detected.study.imaging_study == loaded.imaging_study_id
    assert [m.id for m in detected.models] == ["ich-reference"]


async def _post_notification(subscriber: RunningSubscriber, document: dict[str, object]) -> str:
    async with aiohttp.ClientSession() as http:
        response = await http.post(
            f"{subscriber.url}/fhir",
            json=document,
            headers={"Authorization": f"Bearer {HOOK_SECRET}"},
        )
        answer = await response.json(content_type=None)
    assert response.status == 200, answer
    if document.get("resourceType") != "Bundle":
        return str(answer["issue"][0]["diagnostics"])
    # A Bundle is answered as a transaction: the outcome rides in its one entry.
    assert answer["resourceType"] == "Bundle" and answer["type"] == "transaction-response"
    return str(answer["entry"][0]["response"]["outcome"]["issue"][0]["diagnostics"])


async def test_backport_notifications_start_runs_and_a_gap_is_recovered(
    infra: Infrastructure,
) -> None:
    """Subscriptions Backport IG (R4) notifications: a handshake starts nothing; an id-only
    event-notification makes the subscriber read its focus and announce that study; a heartbeat
    whose event counter skipped two events makes it search what changed, which announces the
    study whose notification never came."""
    async with running_subscriber(infra, ensure_subscription=False) as subscriber:
        notified = await asyncio.to_thread(
            load_fresh_study, infra, "head-bleed", slices=10, size=64
        )
        missed = await asyncio.to_thread(load_fresh_study, infra, "head-normal", slices=10, size=64)
        assert notified.imaging_study_id and missed.imaging_study_id
        handshake = await _post_notification(subscriber, r4_notification("handshake", 0))
        assert handshake == "0 study.detected published"
        event = r4_notification("event-notification", 1, [notified.imaging_study_id])
        assert await _post_notification(subscriber, event) == "1 study.detected published"
        first = await subscriber.next_detected(study_instance_uid=notified.study_instance_uid)
        assert first is not None and first.study.imaging_study == notified.imaging_study_id
        await _post_notification(subscriber, r4_notification("heartbeat", 3))
        recovered = await subscriber.next_detected(study_instance_uid=missed.study_instance_uid)
    assert recovered is not None, "the gap in event numbers did not recover the missed study"
    assert recovered.study.imaging_study == missed.imaging_study_id


async def test_full_resource_r4b_notification_and_a_bare_resource_start_runs(
    infra: Infrastructure,
) -> None:
    """An R4B full-resource event-notification carrying the ImagingStudy, and an ImagingStudy
    POSTed by itself (a server that sends the changed resource), each announce their study."""
    async with running_subscriber(infra, ensure_subscription=False) as subscriber:
        carried = await asyncio.to_thread(load_fresh_study, infra, "head-bleed", slices=10, size=64)
        bare = await asyncio.to_thread(load_fresh_study, infra, "chest-nodules", slices=10, size=64)
        studies = [
            await _imaging_study(infra, loaded.imaging_study_id or "") for loaded in (carried, bare)
        ]
        event = r4b_notification(
            "event-notification", 1, [carried.imaging_study_id or ""], [studies[0]]
        )
        assert await _post_notification(subscriber, event) == "1 study.detected published"
        assert await _post_notification(subscriber, studies[1]) == "1 study.detected published"
        for loaded, model in ((carried, "ich-reference"), (bare, "lung-nodule-reference")):
            detected = await subscriber.next_detected(study_instance_uid=loaded.study_instance_uid)
            assert detected is not None and [m.id for m in detected.models] == [model]


async def test_hooks_and_replicas_racing_for_one_study_start_exactly_one_run(
    infra: Infrastructure,
) -> None:
    """Two subscriber replicas receive, at the same moment, the FHIR rest-hook (each), the
    PACS event and the ImagingStudy POSTed by itself: the run is claimed once on the FHIR
    server, so exactly one study.detected is published, and the claim Task names the run."""
    loaded = await asyncio.to_thread(load_fresh_study, infra, "head-bleed", slices=10, size=64)
    study = await _imaging_study(infra, loaded.imaging_study_id or "")
    bearer = {"Authorization": f"Bearer {HOOK_SECRET}"}
    event = {
        "study_instance_uid": loaded.study_instance_uid,
        "accession_number": loaded.accession_number,
        "modalities": ["CT"],
    }
    async with (
        running_subscriber(infra, ensure_subscription=False, claim_runs=True) as first,
        running_subscriber(infra, ensure_subscription=False, claim_runs=True) as second,
        aiohttp.ClientSession() as http,
    ):
        answers = await asyncio.gather(
            http.put(f"{first.url}/fhir/{loaded.imaging_study_id}", json=study, headers=bearer),
            http.put(f"{second.url}/fhir/{loaded.imaging_study_id}", json=study, headers=bearer),
            first.post_pacs_event(http, event),
            http.post(f"{second.url}/fhir", json=study, headers=bearer),
        )
        statuses = [answer.status for answer in answers]
        announced = []
        for replica in (first, second):
            while (
                detected := await replica.next_detected(
                    wait_seconds=2, study_instance_uid=loaded.study_instance_uid
                )
            ) is not None:
                announced.append(detected)
    # a loser of HAPI's uniqueness check may be told to retry (503): the retry finds the claim
    assert set(statuses) <= {200, 503}, statuses
    assert len(announced) == 1, [d.source for d in announced]
    fhir = FhirClient(FhirSettings(base_url=infra.fhir_base_url))
    try:
        claims = (
            await fhir.resources("Task")
            .search(
                identifier=f"urn:radmesh:analysis-claim|{loaded.study_instance_uid}/ich-reference/1"
            )
            .fetch_all()
        )
    finally:
        await fhir.close()
    assert len(claims) == 1
    assert claims[0]["focus"]["reference"] == loaded.imaging_study_id
    assert str(announced[0].correlation_id) in claims[0]["description"]
    assert claims[0]["status"] == "in-progress"  # claimed `ready`, then announced


async def test_an_imaging_study_without_series_is_completed_from_the_pacs(
    infra: Infrastructure,
) -> None:
    """A rest-hook for an available ImagingStudy that lists no series (a FHIR server that
    announces the study before its series are recorded) is not skipped as "no model applies":
    the subscriber asks the PACS (QIDO-RS) which series it holds and selects the ICH model."""
    async with running_subscriber(infra, ensure_subscription=False) as subscriber:
        loaded = await asyncio.to_thread(load_fresh_study, infra, "head-bleed", slices=10, size=64)
        study = await _imaging_study(infra, loaded.imaging_study_id or "")
        bare = {key: value for key, value in study.items() if key != "series"}
        async with aiohttp.ClientSession() as http:
            response = await http.put(
                f"{subscriber.url}/fhir/{loaded.imaging_study_id}",
                json=bare,
                headers={"Authorization": f"Bearer {HOOK_SECRET}"},
            )
            assert response.status == 200, await response.text()
        detected = await subscriber.next_detected(study_instance_uid=loaded.study_instance_uid)
    assert detected is not None, "an ImagingStudy without series was skipped"
    assert [m.id for m in detected.models] == ["ich-reference"]


async def test_a_claim_whose_announcement_failed_is_withdrawn_so_the_retry_runs(
    infra: Infrastructure,
) -> None:
    """With the broker unreachable (a TCP proxy between the subscriber and RabbitMQ taken
    down), a hook is answered 503 and the run's claim Task is deleted again; once the broker is
    back, the FHIR server's retry of the same hook claims the run and announces it."""
    proxy = TcpProxy(int(infra.amqp_url.rsplit(":", 1)[1].strip("/")))
    await proxy.up()
    loaded = await asyncio.to_thread(load_fresh_study, infra, "head-bleed", slices=10, size=64)
    study = await _imaging_study(infra, loaded.imaging_study_id or "")
    claim = f"urn:radmesh:analysis-claim|{loaded.study_instance_uid}/ich-reference/1"
    bearer = {"Authorization": f"Bearer {HOOK_SECRET}"}
    fhir = FhirClient(FhirSettings(base_url=infra.fhir_base_url))
    try:
        async with (
            running_subscriber(
                infra,
                broker_url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/",
                ensure_subscription=False,
                claim_runs=True,
            ) as subscriber,
            aiohttp.ClientSession() as http,
        ):
            hook = f"{subscriber.url}/fhir/{loaded.imaging_study_id}"
            await proxy.down()
            refused = await http.put(hook, json=study, headers=bearer)
            outcome = await refused.json(content_type=None)
            claims_while_down = await fhir.resources("Task").search(identifier=claim).fetch_all()
            await proxy.up()
            deadline = asyncio.get_running_loop().time() + 30
            while (retried := await http.put(hook, json=study, headers=bearer)).status != 200:
                assert asyncio.get_running_loop().time() < deadline, await retried.text()
                await asyncio.sleep(0.5)  # as the FHIR server retries a hook answered 503
            detected = await subscriber.next_detected(study_instance_uid=loaded.study_instance_uid)
        claims = await fhir.resources("Task").search(identifier=claim).fetch_all()
    finally:
        await fhir.close()
        await proxy.down()
    assert refused.status == 503
    assert "not published" in outcome["issue"][0]["diagnostics"]
    assert claims_while_down == []
    assert detected is not None and len(claims) == 1


async def test_two_hooks_for_one_study_while_the_broker_is_away_are_both_told_to_retry(
    infra: Infrastructure,
) -> None:
    """The FHIR hook and the PACS event of one study arrive together while the broker is
    unreachable: the second finds the run in flight and waits for the first, whose publish
    fails, then tries itself and fails too, so both are answered 503 (neither "nothing to do":
    its sender would stop retrying and the run would be lost). Once the broker is back, a retry
    announces the run once."""
    proxy = TcpProxy(int(infra.amqp_url.rsplit(":", 1)[1].strip("/")))
    await proxy.up()
    loaded = await asyncio.to_thread(load_fresh_study, infra, "head-bleed", slices=10, size=64)
    study = await _imaging_study(infra, loaded.imaging_study_id or "")
    bearer = {"Authorization": f"Bearer {HOOK_SECRET}"}
    try:
        async with (
            running_subscriber(
                infra,
                broker_url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/",
                ensure_subscription=False,
                claim_runs=True,
            ) as subscriber,
            aiohttp.ClientSession() as http,
        ):
            hook = f"{subscriber.url}/fhir/{loaded.imaging_study_id}"
            await proxy.down()
            with structlog.testing.capture_logs() as logs:
                answers = await asyncio.gather(
                    *(http.put(hook, json=study, headers=bearer) for _ in range(2))
                )
            outcomes = [await answer.json(content_type=None) for answer in answers]
            await proxy.up()
            deadline = asyncio.get_running_loop().time() + 30
            while (retried := await http.put(hook, json=study, headers=bearer)).status != 200:
                assert asyncio.get_running_loop().time() < deadline, await retried.text()
                await asyncio.sleep(0.5)  # as the FHIR server retries a hook answered 503
            detected = await subscriber.next_detected(study_instance_uid=loaded.study_instance_uid)
            again = await subscriber.next_detected(
                wait_seconds=2, study_instance_uid=loaded.study_instance_uid
            )
    finally:
        await proxy.down()
    assert [answer.status for answer in answers] == [503, 503], outcomes
    failed = [e for e in logs if e["event"] == "hook_not_processed" and "broker" in e["error"]]
    assert len(failed) == 2  # the second waited for the first, then tried (and failed) itself
    assert detected is not None and again is None


async def test_unauthenticated_hooks_get_401_and_malformed_bodies_get_400(
    subscriber: RunningSubscriber,
) -> None:
    """No or wrong secret → 401; a body that is not an ImagingStudy → 400 OperationOutcome;
    a PACS event with a bad signature → 401. Nothing is published."""
    async with aiohttp.ClientSession() as http:
        unauthenticated = await http.post(f"{subscriber.url}/fhir", data=b"")
        assert unauthenticated.status == 401
        assert (await unauthenticated.json(content_type=None))["resourceType"] == "OperationOutcome"
        wrong = await http.put(
            f"{subscriber.url}/fhir/ImagingStudy/x",
            data=b"{}",
            headers={"Authorization": "Bearer not-the-secret"},
        )
        assert wrong.status == 401
        malformed = await http.put(
            f"{subscriber.url}/fhir/ImagingStudy/x",
            data=b"{not json",
            headers={"Authorization": f"Bearer {HOOK_SECRET}"},
        )
        assert malformed.status == 400
        outcome = await malformed.json(content_type=None)
        assert outcome["resourceType"] == "OperationOutcome"
        assert "not JSON" in outcome["issue"][0]["diagnostics"]
        unsigned = await subscriber.post_pacs_event(
            http, {"study_instance_uid": "1.2.3"}, secret="wrong-secret"
        )
        assert unsigned.status == 401
    assert await subscriber.next_detected(wait_seconds=0.5, study_instance_uid="1.2.3") is None


async def test_pacs_stable_study_announces_the_study_once_signed(
    infra: Infrastructure, subscriber: RunningSubscriber
) -> None:
    """A signed stable-study event for a study the FHIR server knows publishes study.detected;
    an event listing only SR objects (radmesh's own output) is ignored."""
    loaded = await asyncio.to_thread(load_fresh_study, infra, "head-normal", slices=10, size=64)
    uid = loaded.study_instance_uid
    assert await subscriber.next_detected(study_instance_uid=uid, source="fhir-rest-hook")
    event = {
        "study_instance_uid": loaded.study_instance_uid,
        "accession_number": loaded.accession_number,
        "modalities": ["CT"],
        "series": [],
    }
    async with aiohttp.ClientSession() as http:
        response = await subscriber.post_pacs_event(http, event)
        assert response.status == 200, await response.text()
        detected = await subscriber.next_detected(study_instance_uid=uid)
        assert detected is not None and detected.source == "pacs-stable-study"
        assert detected.study.imaging_study == loaded.imaging_study_id
        ignored = await subscriber.post_pacs_event(http, {**event, "modalities": ["SR"]})
        assert ignored.status == 200
    assert await subscriber.next_detected(wait_seconds=0.5, study_instance_uid=uid) is None


async def _announced_by_the_fhir_hook(
    infra: Infrastructure, subscriber: RunningSubscriber
) -> tuple[LoadResult, dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A head CT stored and announced by the FHIR hook; (it, its CT series and an SR series as a
    PACS event names them, the PACS's stable-study event of the CT series)."""
    loaded = await asyncio.to_thread(load_fresh_study, infra, "head-normal", slices=10, size=64)
    uid = loaded.study_instance_uid
    assert await subscriber.next_detected(study_instance_uid=uid, source="fhir-rest-hook")
    ct = {
        "series_instance_uid": loaded.series_instance_uid,
        "modality": "CT",
        "instance_count": loaded.instances,
    }
    sr = {"series_instance_uid": f"{uid}.9", "modality": "SR", "instance_count": 1}
    event = {
        "study_instance_uid": uid,
        "accession_number": loaded.accession_number,
        "modalities": ["CT"],
        "series": [ct],
    }
    return loaded, ct, sr, event


async def test_a_study_announced_again_for_radmeshs_own_sr_costs_no_lookup(
    infra: Infrastructure,
) -> None:
    """Orthanc announces a study again once radmesh's SR is stored into it. With a run of the
    study in flight, an event whose series (SR documents aside) and instance counts are those
    of an event already taken is skipped at once, counted as `unchanged-in-pacs`; an event
    with a changed instance count is looked at in full (and found in flight)."""
    async with running_subscriber(infra, reannounce_after_seconds=600) as subscriber:
        loaded, ct, sr, event = await _announced_by_the_fhir_hook(infra, subscriber)
        uid = loaded.study_instance_uid
        event["series"] = [{**ct, "instance_count": loaded.instances + 2}]  # not the ImagingStudy's
        unchanged, in_flight = _skips("unchanged-in-pacs"), _skips("in-flight")
        async with aiohttp.ClientSession() as http:
            first = await subscriber.post_pacs_event(http, event)
            assert first.status == 200, await first.text()
            assert _skips("in-flight") >= in_flight + 1  # looked up in full: found in flight
            with_sr = {**event, "modalities": ["CT", "SR"], "series": [*event["series"], sr]}
            again = await subscriber.post_pacs_event(http, with_sr)
            assert again.status == 200, await again.text()
            assert _skips("unchanged-in-pacs") == unchanged + 1
            grown = {**event, "series": [{**ct, "instance_count": loaded.instances + 3}, sr]}
            changed = await subscriber.post_pacs_event(http, grown)
            assert changed.status == 200, await changed.text()
        assert _skips("unchanged-in-pacs") == unchanged + 1  # the grown series was looked up
        assert await subscriber.next_detected(wait_seconds=0.5, study_instance_uid=uid) is None


async def test_the_pacs_event_of_a_study_the_fhir_hook_announced_costs_no_lookup(
    infra: Infrastructure,
) -> None:
    """The FHIR hook announced the study from an ImagingStudy recording its CT series and the
    number of its instances; the PACS's stable-study event for the same series and counts (and
    radmesh's SR) is skipped at once, counted as `unchanged-in-pacs`, and announces nothing."""
    async with running_subscriber(infra, reannounce_after_seconds=600) as subscriber:
        loaded, ct, sr, event = await _announced_by_the_fhir_hook(infra, subscriber)
        uid = loaded.study_instance_uid
        unchanged = _skips("unchanged-in-pacs")
        async with aiohttp.ClientSession() as http:
            for series, modalities in (([ct], ["CT"]), ([ct, sr], ["CT", "SR"])):
                taken = await subscriber.post_pacs_event(
                    http, {**event, "series": series, "modalities": modalities}
                )
                assert taken.status == 200, await taken.text()
        assert _skips("unchanged-in-pacs") == unchanged + 2
        assert await subscriber.next_detected(wait_seconds=0.5, study_instance_uid=uid) is None


async def test_empty_post_hook_announces_studies_updated_since_the_last_look(
    infra: Infrastructure, subscriber: RunningSubscriber
) -> None:
    """A HAPI rest-hook without payload (POST with an empty body) makes the subscriber search the
    FHIR server for available ImagingStudies updated since its last look."""
    loaded = await asyncio.to_thread(load_fresh_study, infra, "head-normal", slices=10, size=64)
    uid = loaded.study_instance_uid
    # the payload hook of the fixture's Subscription comes first
    assert await subscriber.next_detected(study_instance_uid=uid, source="fhir-rest-hook")
    async with aiohttp.ClientSession() as http:
        response = await http.post(
            f"{subscriber.url}/fhir", data=b"", headers={"Authorization": f"Bearer {HOOK_SECRET}"}
        )
        assert response.status == 200, await response.text()
    assert await subscriber.next_detected(study_instance_uid=uid) is not None


async def test_pacs_events_that_are_stale_or_replayed_are_refused(
    infra: Infrastructure, subscriber: RunningSubscriber
) -> None:
    """A correctly signed PACS event emitted longer ago than the replay window gets 401, and
    the same event (same event id) sent a second time gets 409, each with an OperationOutcome
    saying why; only the first delivery announces the study."""
    loaded = await asyncio.to_thread(load_fresh_study, infra, "head-normal", slices=10, size=64)
    uid = loaded.study_instance_uid
    assert await subscriber.next_detected(study_instance_uid=uid, source="fhir-rest-hook")
    event = {
        "study_instance_uid": uid,
        "accession_number": loaded.accession_number,
        "modalities": ["CT"],
    }
    async with aiohttp.ClientSession() as http:
        stale = await subscriber.post_pacs_event(
            http,
            {
                **event,
                "event_id": "stale-event-0001",
                "emitted_at": (datetime.now(UTC) - timedelta(days=9000)).isoformat(),
            },
        )
        stale_outcome = await stale.json(content_type=None)
        once = {**event, "event_id": f"replayed-{uuid.uuid4().hex}"}
        first = await subscriber.post_pacs_event(http, once)
        assert first.status == 200, await first.text()
        again = await subscriber.post_pacs_event(http, once)
        again_outcome = await again.json(content_type=None)
    assert stale.status == 401
    assert "older than the 300 s replay window" in stale_outcome["issue"][0]["diagnostics"]
    assert again.status == 409
    assert "already received" in again_outcome["issue"][0]["diagnostics"]
    assert await subscriber.next_detected(study_instance_uid=uid, source="pacs-stable-study")
    assert await subscriber.next_detected(wait_seconds=1, study_instance_uid=uid) is None


async def test_pacs_study_without_imaging_study_is_registered_from_dicom_metadata(
    infra: Infrastructure, subscriber: RunningSubscriber
) -> None:
    """When the PACS has a study the FHIR server has no ImagingStudy for, the subscriber creates
    one from QIDO-RS (as DICOMcast does): DICOM UID and accession identifiers, the ordering
    ServiceRequest and its patient, series with number, body site, start and instances, the
    study's description and ordered procedure, one Endpoint, and the study's date as `started`
    (the time too where the PACS gives its zone), which the run carries on."""
    loaded = await asyncio.to_thread(load_fresh_study, infra, "head-bleed", slices=10, size=64)
    uid = loaded.study_instance_uid
    assert await subscriber.next_detected(study_instance_uid=uid, source="fhir-rest-hook")
    fhir = FhirClient(FhirSettings(base_url=infra.fhir_base_url))
    try:
        original = await fhir.read_resource(loaded.imaging_study_id or "")
        await fhir.execute(loaded.imaging_study_id or "", method="delete")
        event = {
            "study_instance_uid": loaded.study_instance_uid,
            "accession_number": loaded.accession_number,
            "modalities": ["CT"],
            "series_count": 1,
            "instance_count": loaded.instances,
            "series": [
                {
                    "series_instance_uid": loaded.series_instance_uid,
                    "modality": "CT",
                    "instance_count": loaded.instances,
                }
            ],
            "dicomweb_root": infra.orthanc_dicomweb_url,
        }
        async with aiohttp.ClientSession() as http:
            response = await subscriber.post_pacs_event(http, event)
            assert response.status == 200, await response.text()
        detected = await subscriber.next_detected(
            study_instance_uid=uid, source="pacs-stable-study"
        )
        assert detected is not None and detected.study.imaging_study is not None
        assert detected.study.imaging_study != loaded.imaging_study_id
        assert [m.id for m in detected.models] == ["ich-reference"]
        study = await fhir.read_resource(detected.study.imaging_study)
        order = await fhir.read_resource(detected.study.service_request or "")
    finally:
        await fhir.close()
    identifiers = {(i.get("system"), i["value"]) for i in study["identifier"]}
    assert ("urn:dicom:uid", f"urn:oid:{loaded.study_instance_uid}") in identifiers
    assert (None, loaded.accession_number) in identifiers
    assert study["subject"] == order["subject"]
    (series,) = study["series"]
    assert series["bodySite"]["code"] == "69536005"
    assert len(series["instance"]) == loaded.instances
    assert detected.study.dicomweb_base_url == infra.orthanc_dicomweb_url
    assert study["started"][:10] == original["started"][:10]
    assert detected.study.started == study["started"]
    # what a reader of the record expects of a study, from QIDO-RS and the order
    assert study["description"] == original["description"]
    assert study["procedureCode"] == [order["code"]]
    assert series["number"] == 1
    assert series["started"][:10] == original["started"][:10]
    assert "endpoint" not in series and len(study["endpoint"]) == 1


async def test_pacs_study_without_an_order_is_refused_with_the_reason(
    subscriber: RunningSubscriber,
) -> None:
    """A stable study whose accession matches no ServiceRequest is not radmesh's to read: 400
    with an OperationOutcome saying so, and nothing is published."""
    event = {
        "study_instance_uid": "1.2.826.0.1.3680043.10.999.1",
        "accession_number": "NO-SUCH-ORDER",
        "modalities": ["CT"],
    }
    async with aiohttp.ClientSession() as http:
        response = await subscriber.post_pacs_event(http, event)
        assert response.status == 400
        outcome = await response.json(content_type=None)
    assert "no ServiceRequest with its accession number" in outcome["issue"][0]["diagnostics"]
    uid = str(event["study_instance_uid"])
    assert await subscriber.next_detected(wait_seconds=0.5, study_instance_uid=uid) is None


async def test_malformed_hook_bodies_get_400_with_an_operation_outcome(
    subscriber: RunningSubscriber,
) -> None:
    """Bodies that are not UTF-8, a Bundle whose entries are not objects, an ImagingStudy with a
    string identifier or a text instance count, a PACS event whose modalities are a number: each
    is a 400 OperationOutcome saying where, and nothing is published. An unknown route or method
    is a 404/405 OperationOutcome too."""
    bearer = {"Authorization": f"Bearer {HOOK_SECRET}"}
    study = {
        "resourceType": "ImagingStudy",
        "id": "x",
        "status": "available",
        "subject": {"reference": "Patient/p"},
    }
    async with aiohttp.ClientSession() as http:
        cases = [
            ("PUT", "/fhir/ImagingStudy/x", b"\xff\xfe", bearer, "not JSON"),
            ("POST", "/fhir", b'{"resourceType": "Bundle", "entry": [1]}', bearer, "entry.0"),
            ("POST", "/fhir", b'{"resourceType": "Bundle", "entry": 5}', bearer, "entry"),
            (
                "PUT",
                "/fhir/ImagingStudy/x",
                json.dumps({**study, "identifier": "x"}).encode(),
                bearer,
                "identifier",
            ),
            (
                "PUT",
                "/fhir/ImagingStudy/x",
                json.dumps({**study, "numberOfInstances": "lots"}).encode(),
                bearer,
                "numberOfInstances",
            ),
        ]
        for method, path, body, headers, where in cases:
            response = await http.request(
                method, f"{subscriber.url}{path}", data=body, headers=headers
            )
            outcome = await response.json(content_type=None)
            assert response.status == 400, (path, body, outcome)
            assert outcome["resourceType"] == "OperationOutcome"
            assert where in outcome["issue"][0]["diagnostics"], outcome
        for method, path, status in (("GET", "/no/such/route", 404), ("GET", "/fhir", 405)):
            response = await http.request(method, f"{subscriber.url}{path}")
            assert response.status == status
            assert (await response.json(content_type=None))["resourceType"] == "OperationOutcome"
        response = await subscriber.post_pacs_event(
            http, {"study_instance_uid": "1.2.3", "modalities": 5}
        )
        assert response.status == 400
        assert "modalities" in (await response.json(content_type=None))["issue"][0]["diagnostics"]
    assert await subscriber.next_detected(wait_seconds=0.5, study_instance_uid="1.2.3") is None


def _skips(kind: str) -> float:
    """radmesh_studies_skipped_total of that kind, in this process."""
    return REGISTRY.get_sample_value("radmesh_studies_skipped_total", {"reason": kind}) or 0.0


async def test_hook_for_a_study_already_done_publishes_nothing(
    infra: Infrastructure, subscriber: RunningSubscriber
) -> None:
    """When the FHIR server already has radmesh's DiagnosticReport for the study and model (the
    check that holds across restarts and replicas), a hook for the study publishes nothing; the
    skip is counted by its kind."""
    loaded = await asyncio.to_thread(load_fresh_study, infra, "head-normal", slices=10, size=64)
    uid = loaded.study_instance_uid
    # the fixture Subscription's own hook comes first
    assert await subscriber.next_detected(study_instance_uid=uid, source="fhir-rest-hook")
    already_ran = _skips("already-ran")
    fhir = FhirClient(FhirSettings(base_url=infra.fhir_base_url))
    try:
        study = await fhir.read_resource(loaded.imaging_study_id or "")
        await fhir.create_resource(
            {
                "resourceType": "DiagnosticReport",
                "status": "preliminary",
                "code": {"text": "AI result"},
                "subject": study["subject"],
                "identifier": [
                    business_identifier(
                        "DiagnosticReport",
                        study_run_value(loaded.study_instance_uid, "ich-reference", "1"),
                    )
                ],
            }
        )
    finally:
        await fhir.close()
    async with aiohttp.ClientSession() as http:
        response = await http.put(
            f"{subscriber.url}/fhir/{loaded.imaging_study_id}",
            json=study,
            headers={"Authorization": f"Bearer {HOOK_SECRET}"},
        )
        outcome = await response.json(content_type=None)
    assert response.status == 200
    assert outcome["issue"][0]["diagnostics"] == "0 study.detected published"
    assert await subscriber.next_detected(wait_seconds=0.5, study_instance_uid=uid) is None
    assert _skips("already-ran") >= already_ran + 1


async def test_start_up_reconciliation_announces_studies_that_arrived_while_down(
    infra: Infrastructure,
) -> None:
    """A study stored while no subscriber listened is announced (source reconcile) when one
    starts with reconcile_hours > 0; an unusable ImagingStudy in the sweep (no DICOM UID) is
    skipped without hiding the others."""
    fhir = FhirClient(FhirSettings(base_url=infra.fhir_base_url))
    try:
        patient = await fhir.create_resource({"resourceType": "Patient"})
        unusable = await fhir.create_resource(
            {
                "resourceType": "ImagingStudy",
                "status": "available",
                "subject": {"reference": f"Patient/{patient['id']}"},
            }
        )
    finally:
        await fhir.close()
    loaded = await asyncio.to_thread(load_fresh_study, infra, "chest-normal", slices=10, size=64)
    async with running_subscriber(infra, reconcile_hours=0.05) as late:
        seen: list[StudyDetected] = []
        while (detected := await late.next_detected(wait_seconds=5)) is not None:
            seen.append(detected)
            if (detected.study.study_instance_uid, detected.source) == (
                loaded.study_instance_uid,
                "reconcile",
            ):
                break
    # (HAPI may also deliver the study's rest-hook to the new Subscription: its matching is
    # asynchronous and can run after the Subscription is registered)
    mine = [d for d in seen if d.study.study_instance_uid == loaded.study_instance_uid]
    assert "reconcile" in [d.source for d in mine]
    assert all(d.study.imaging_study != f"ImagingStudy/{unusable['id']}" for d in seen)


async def test_the_periodic_sweep_announces_a_study_whose_hook_never_came(
    infra: Infrastructure,
) -> None:
    """With no Subscription calling it at all (as when the FHIR server gave up retrying), a
    subscriber sweeping every second announces a study that became available after it started,
    once (source reconcile), and claims it: the next sweeps start nothing more."""
    async with running_subscriber(
        infra, ensure_subscription=False, reconcile_interval_seconds=1, claim_runs=True
    ) as subscriber:
        loaded = await asyncio.to_thread(
            load_fresh_study, infra, "chest-nodules", slices=10, size=64
        )
        detected = await subscriber.next_detected(
            wait_seconds=20, study_instance_uid=loaded.study_instance_uid
        )
        again = await subscriber.next_detected(
            wait_seconds=3, study_instance_uid=loaded.study_instance_uid
        )
    assert detected is not None, "the sweep never announced the study"
    assert detected.source == "reconcile"
    assert [m.id for m in detected.models] == ["lung-nodule-reference"]
    assert again is None, "a later sweep announced the study a second time"


async def test_pacs_study_with_an_ambiguous_accession_is_refused(
    infra: Infrastructure, subscriber: RunningSubscriber
) -> None:
    """Two orders carrying the same accession number: the subscriber does not guess the patient;
    400 saying so, nothing registered, nothing published."""
    loaded = await asyncio.to_thread(load_fresh_study, infra, "head-normal", slices=10, size=64)
    uid = loaded.study_instance_uid
    assert await subscriber.next_detected(study_instance_uid=uid, source="fhir-rest-hook")
    fhir = FhirClient(FhirSettings(base_url=infra.fhir_base_url))
    try:
        await fhir.execute(loaded.imaging_study_id or "", method="delete")
        order = await fhir.read_resource(loaded.fhir_ids["ServiceRequest"])
        twin = {key: value for key, value in order.items() if key not in ("id", "meta")}
        someone_else = await fhir.create_resource({"resourceType": "Patient"})
        twin["subject"] = {"reference": f"Patient/{someone_else['id']}"}
        await fhir.create_resource(twin)
    finally:
        await fhir.close()
    async with aiohttp.ClientSession() as http:
        response = await subscriber.post_pacs_event(
            http,
            {
                "study_instance_uid": loaded.study_instance_uid,
                "accession_number": loaded.accession_number,
                "modalities": ["CT"],
            },
        )
        outcome = await response.json(content_type=None)
    assert response.status == 400
    assert "2 ServiceRequest with its accession number" in outcome["issue"][0]["diagnostics"]
    assert await subscriber.next_detected(wait_seconds=0.5, study_instance_uid=uid) is None


async def _delete_subscriptions(fhir: FhirClient, port: int) -> None:
    """Delete the Subscriptions a test made for a subscriber on `port`."""
    for subscription in (
        await fhir.resources("Subscription").search(url=f"http://127.0.0.1:{port}/fhir").fetch_all()
    ):
        await fhir.execute(f"Subscription/{subscription['id']}", method="delete")


async def test_subscription_is_brought_up_to_date_when_the_secret_changes(
    infra: Infrastructure,
) -> None:
    """Restarting with a rotated hook secret updates the existing Subscription's header instead
    of leaving the FHIR server sending the old one (or creating a second Subscription)."""
    port = _free_port()
    fhir = FhirClient(FhirSettings(base_url=infra.fhir_base_url))
    base = {"port": port, "public_url": f"http://127.0.0.1:{port}"}
    try:
        await ensure_subscription(
            fhir, SubscriberSettings.model_validate({**base, "hook_secret": "old"})
        )
        await ensure_subscription(
            fhir, SubscriberSettings.model_validate({**base, "hook_secret": "new"})
        )
        found = (
            await fhir.resources("Subscription")
            .search(url=f"http://127.0.0.1:{port}/fhir")
            .fetch_all()
        )
        assert len(found) == 1
        assert found[0]["channel"]["header"] == ["Authorization: Bearer new"]
    finally:
        await _delete_subscriptions(fhir, port)
        await fhir.close()


async def test_at_start_the_subscription_waits_out_a_fhir_server_that_is_not_answering_yet(
    infra: Infrastructure,
) -> None:
    """With the FHIR server unreachable at start-up (a HAPI still booting), the subscriber
    tries again, logging each try, and makes its Subscription once the server answers; with
    no time left it gives up with the server's error instead of waiting for ever."""
    port = _free_port()
    proxy = TcpProxy(int(infra.fhir_base_url.split(":")[2].split("/")[0]))
    await proxy.up()
    await proxy.down()
    fhir = FhirClient(FhirSettings(base_url=f"http://127.0.0.1:{proxy.port}/fhir"))
    settings = SubscriberSettings.model_validate(
        {"port": port, "public_url": f"http://127.0.0.1:{port}", "subscription_startup_seconds": 60}
    )
    direct = FhirClient(FhirSettings(base_url=infra.fhir_base_url))
    try:
        with structlog.testing.capture_logs() as logs:
            with pytest.raises(RemoteUnavailable):
                await ensure_subscription_at_start(
                    fhir, settings.model_copy(update={"subscription_startup_seconds": 0})
                )
            assert [entry["event"] for entry in logs] == ["subscription_not_made"]
            starting = asyncio.create_task(ensure_subscription_at_start(fhir, settings))

            async def retried() -> bool:
                return any(entry["event"] == "subscription_retry" for entry in logs)

            await until(retried, "a logged second try while the FHIR server is unreachable")
            await proxy.up()
            reference = await asyncio.wait_for(starting, timeout=60)
        assert (await direct.read_resource(reference))["status"] == "active"
    finally:
        await proxy.down()
        await _delete_subscriptions(direct, port)
        await fhir.close()
        await direct.close()


class _RacingDeletes(FhirClient):
    """A FHIR client whose first DELETEs are refused with the 409 HAPI answers a DELETE that
    races its own write of the resource (HAPI-0550 version-constraint failure)."""

    refusals = 2

    async def execute(
        self,
        path: str,
        method: str = "post",
        data: dict[Any, Any] | None = None,
        params: dict[Any, Any] | None = None,
    ) -> Any:
        if method == "delete" and self.refusals > 0:
            self.refusals -= 1
            raise RemoteConflict(
                f"FHIR DELETE {path}: HAPI-0550: version constraint failure",
                url=path,
                status=409,
            )
        return await super().execute(path, method, data=data, params=params)


async def test_a_claim_whose_release_races_the_server_is_released_on_a_retry(
    infra: Infrastructure,
) -> None:
    """Releasing a claim the FHIR server refuses twice with a transient 409 is retried until
    the claim Task is gone: an orphaned claim would block the study for good."""
    fhir = _RacingDeletes(FhirSettings(base_url=infra.fhir_base_url))
    dicomweb = DicomWebClient(DicomWebSettings(base_url=infra.orthanc_dicomweb_url))
    seeded = await seed_study(fhir, critical=False)
    run = study_run_value(seeded.study_instance_uid, "ich-reference", "1")
    task = analysis_claim_task(
        value=run,
        imaging_study=seeded.imaging_study,
        patient=seeded.patient,
        model_id="ich-reference",
        model_version="1",
        correlation_id=str(uuid.uuid4()),
    )
    claim, created = await fhir.create_once(task, f"identifier={ANALYSIS_CLAIM_SYSTEM}|{run}")
    assert created
    announcer = StudyAnnouncer(
        SubscriberSettings(),
        load_registry(ROOT / "registry" / "models.yaml"),
        fhir,
        dicomweb,
        Bus(BrokerSettings(url=infra.amqp_url), "test-subscriber-release"),
    )
    try:
        await announcer._release_claims([claim])
        assert fhir.refusals == 0
        remaining = (
            await fhir.resources("Task")
            .search(identifier=f"{ANALYSIS_CLAIM_SYSTEM}|{run}")
            .fetch_all()
        )
    finally:
        await fhir.close()
        await dicomweb.close()
    assert remaining == []


def _orm(control_id: str, accession: str | None, *, message_type: str = "ORM^O01") -> str:
    """An IHE Scheduled Workflow order (ORM^O01) saying the study was performed (ORC-5 CM),
    its accession in OBR-18."""
    obr = ["OBR", "1", "ORD-1", accession or "", "CTHEAD^CT head without contrast"]
    obr += [""] * (18 - len(obr)) + [accession or ""]
    return "\r".join(
        [
            f"MSH|^~\\&|RIS|HOSPITAL|RADMESH|HOSPITAL|20261201120000||{message_type}|{control_id}|P|2.5.1",
            "PID|1||PAT-1^^^HOSPITAL^MR||TEST^SEED",
            f"ORC|SC|ORD-1|{accession or ''}||CM",
            "|".join(obr),
        ]
    )


async def _acknowledged(port: int, messages: list[str]) -> list[hl7.Message]:
    """Each message sent with python-hl7's MLLP client on one connection, and its ACK."""
    reader, writer = await hl7.mllp.open_hl7_connection("127.0.0.1", port)
    answers = []
    try:
        for message in messages:
            writer.writemessage(hl7.parse(message) if message.startswith("MSH") else message)
            await writer.drain()
            answers.append(await asyncio.wait_for(reader.readmessage(), 30))
    finally:
        writer.close()
        await writer.wait_closed()
    return answers


async def test_an_hl7_order_over_mllp_starts_the_run_and_bad_messages_get_ae_or_ar(
    infra: Infrastructure,
) -> None:
    """A site without FHIR Subscriptions: the order (ORM^O01, the accession in OBR-18) for a
    study the PACS holds and the FHIR server has no ImagingStudy for is acknowledged AA and
    announced; on the same connection, text that is not HL7 and an ADT get AR, an order naming
    no study AE, and the listener goes on answering (a last valid order: AA)."""
    port = _free_port()
    loaded = await asyncio.to_thread(
        load_fresh_study, infra, "head-bleed", slices=10, size=64, with_imaging_study=False
    )
    async with running_subscriber(infra, mllp_port=port) as subscriber:
        acks = await _acknowledged(
            port,
            [
                _orm("CTRL-1", loaded.accession_number),
                "this is not HL7",
                _orm("CTRL-2", loaded.accession_number, message_type="ADT^A01"),
                _orm("CTRL-3", None),
                _orm("CTRL-4", loaded.accession_number),
            ],
        )
        codes = [
            (str(a.extract_field("MSA", 1, 1)), str(a.extract_field("MSA", 1, 2))) for a in acks
        ]
        assert codes[0] == ("AA", "CTRL-1")
        assert codes[1][0] == "AR"
        assert codes[2] == ("AR", "CTRL-2")
        assert codes[3] == ("AE", "CTRL-3")
        assert codes[4] == ("AA", "CTRL-4")
        assert "announced" in str(acks[0].extract_field("MSA", 1, 3))
        assert "names no study" in str(acks[3].extract_field("MSA", 1, 3))
        detected = await subscriber.next_detected(
            study_instance_uid=loaded.study_instance_uid, source="hl7-order"
        )
        assert detected is not None
        assert [m.id for m in detected.models] == ["ich-reference"]
        assert detected.study.patient is not None  # found by the order's accession


async def test_a_run_claimed_and_never_announced_is_announced_by_one_look_within_a_minute(
    infra: Infrastructure,
) -> None:
    """A subscriber stopped between claiming a run and publishing it leaves the claim `ready`:
    a look after `unannounced_claims_after_seconds` announces the run (study.detected for that
    run alone, its generation kept) and sets the claim `in-progress` with a note; a claim not
    that old is left alone, and a second look announces nothing more."""
    fhir = FhirClient(FhirSettings(base_url=infra.fhir_base_url))
    seeded = await seed_study(fhir, critical=True)
    registry = load_registry(ROOT / "registry" / "models.yaml")
    imaging_study = await fhir.read_resource(seeded.imaging_study)
    won, claim = await claim_run(  # what the killed subscriber had done: claimed, no publish
        fhir,
        imaging_study,
        seeded.study_instance_uid,
        registry.get("ich-reference", "1"),
        str(uuid.uuid4()),
        generation=3,
    )
    published: list[Event] = []

    async def publish(event: Event) -> None:
        published.append(event)

    async def no_endpoints(imaging_study: dict[str, Any]) -> dict[str, str]:
        return {}

    watch = RedriveClaims(
        fhir, publish, no_endpoints, after_minutes=30, max_attempts=3, unannounced_after_seconds=60
    )
    now = datetime.now(UTC)
    try:
        assert won and claim["status"] == "ready"
        assert await watch.announce_unannounced(now, imaging_study=seeded.imaging_study) == 0
        later = now + timedelta(seconds=61)
        assert await watch.announce_unannounced(later, imaging_study=seeded.imaging_study) == 1
        assert await watch.announce_unannounced(later, imaging_study=seeded.imaging_study) == 0
        assert await watch.sweep(later, imaging_study=seeded.imaging_study) == 0  # fresh again
        final = await fhir.read_resource(f"Task/{claim['id']}")
    finally:
        await fhir.close()
    assert len(published) == 1
    event = published[0]
    assert isinstance(event, StudyDetected)
    assert event.study.imaging_study == seeded.imaging_study
    assert [(m.id, m.version, m.generation) for m in event.models] == [("ich-reference", "1", 3)]
    assert final["status"] == "in-progress"
    assert [n["text"].split(" on ")[0] for n in final["note"]] == [ANNOUNCE_NOTE]


async def test_a_run_claimed_and_never_finished_is_announced_again_then_given_up_visibly(
    infra: Infrastructure,
) -> None:
    """A claim left `in-progress` past the re-drive age is announced again (study.detected for
    that run alone, its generation kept, the attempt noted on the claim); a claim not that old
    is left alone; after the last attempt the claim is `failed`, saying why, and nothing more
    is announced."""
    fhir = FhirClient(FhirSettings(base_url=infra.fhir_base_url))
    seeded = await seed_study(fhir, critical=False)
    run = study_run_value(seeded.study_instance_uid, "ich-reference", "1", 2)
    task = analysis_claim_task(
        value=run,
        imaging_study=seeded.imaging_study,
        patient=seeded.patient,
        model_id="ich-reference",
        model_version="1",
        correlation_id=str(uuid.uuid4()),
    )
    claim, _ = await fhir.create_once(task, f"identifier={ANALYSIS_CLAIM_SYSTEM}|{run}")
    published: list[Event] = []

    async def publish(event: Event) -> None:
        published.append(event)

    async def no_endpoints(imaging_study: dict[str, Any]) -> dict[str, str]:
        return {}

    sweep = RedriveClaims(fhir, publish, no_endpoints, after_minutes=30, max_attempts=2)
    now = datetime.now(UTC)
    try:
        assert await sweep.sweep(now, imaging_study=seeded.imaging_study) == 0  # not stale yet
        later = [now + timedelta(minutes=31 * step) for step in (1, 2, 3)]
        assert await sweep.sweep(later[0], imaging_study=seeded.imaging_study) == 1
        assert await sweep.sweep(later[1], imaging_study=seeded.imaging_study) == 1
        assert await sweep.sweep(later[2], imaging_study=seeded.imaging_study) == 0
        final = await fhir.read_resource(f"Task/{claim['id']}")
    finally:
        await fhir.close()
    assert len(published) == 2
    for event in published:
        assert isinstance(event, StudyDetected)
        assert event.source == "reconcile"
        assert event.study.imaging_study == seeded.imaging_study
        assert [(m.id, m.version, m.generation) for m in event.models] == [
            ("ich-reference", "1", 2)
        ]
    assert [n["text"].split(" (")[0] for n in final["note"]] == [REDRIVE_NOTE, REDRIVE_NOTE]
    assert final["status"] == "failed"
    assert "did not finish after 2 re-drives" in final["statusReason"]["text"]


async def _advertised_topics(fhir: FhirClient) -> list[str]:
    capability = await fhir.execute("metadata", "get")
    return [
        str(extension.get("valueCanonical"))
        for rest in capability.get("rest", [])
        for resource in rest.get("resource", [])
        if resource.get("type") == "Subscription"
        for extension in resource.get("extension", [])
        if extension.get("url") == TOPIC_CANONICAL_EXTENSION
    ]


async def test_a_server_advertising_the_backport_ig_gets_a_topic_subscription_that_delivers(
    infra: Infrastructure,
) -> None:
    """The development HAPI advertises the Subscriptions Backport IG and radmesh's topic (once
    it has loaded it): the subscriber asks for a topic-based Subscription (backport profile,
    the topic as criteria, filtered, id-only), HAPI activates it, and an available head CT
    stored afterwards reaches the subscriber as an id-only event notification, which it
    answers with a transaction-response and announces."""
    settings = SubscriberSettings()
    fhir = FhirClient(FhirSettings(base_url=infra.fhir_base_url))
    try:
        topics: list[str] = []

        async def advertised() -> bool:
            topics[:] = await _advertised_topics(fhir)
            return settings.subscription_topic in topics

        # HAPI loads a stored topic within a minute and caches its CapabilityStatement for one.
        await until(advertised, "HAPI advertises radmesh's subscription topic", seconds=150)
        async with running_subscriber(infra) as subscriber:
            (subscription,) = (
                await fhir.resources("Subscription")
                .search(url=f"{subscriber.own.public_url}/fhir")
                .fetch_all()
            )
            assert subscription["meta"]["profile"] == [BACKPORT_SUBSCRIPTION_PROFILE]
            assert subscription["criteria"] == settings.subscription_topic
            assert subscription["status"] == "active"
            loaded = await asyncio.to_thread(
                load_fresh_study, infra, "head-bleed", slices=10, size=64
            )
            detected = await subscriber.next_detected(
                wait_seconds=20, study_instance_uid=loaded.study_instance_uid
            )
    finally:
        await fhir.close()
    assert detected is not None, "HAPI's topic notification started no run"
    assert detected.source == "fhir-rest-hook"
    assert detected.study.imaging_study == loaded.imaging_study_id
