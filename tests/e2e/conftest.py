"""The whole mesh for end-to-end tests: the six services as separate processes (as deployed), a
TCP proxy in front of the FHIR server that a test can take down, and an OTLP receiver that
collects every service's spans."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from shared.fhir import FhirClient
from shared.settings import (
    BrokerSettings,
    DicomWebSettings,
    FhirSettings,
    RadmeshSettings,
    SmartBackendSettings,
)
from tests.broker_objects import delete_broker_objects
from tests.conftest import Infrastructure
from tests.tcp_proxy import TcpProxy

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {
    "subscriber": 8090,
    "fetcher": 8091,
    "inference": 8092,
    "mapper": 8093,
    "notifier": 8094,
    "verification": 8095,
}


@dataclass
class SpanCollector:
    """An OTLP/HTTP trace receiver: (trace id, service name, span name) of every span exported,
    and each export as received."""

    spans: list[tuple[str, str, str]] = field(default_factory=list)
    runs: dict[str, set[str]] = field(default_factory=dict)  # correlation id → trace ids
    # Every export whole (resource, names, attributes, events, status), for a test of what the
    # spans carry rather than which exist.
    exports: list[ExportTraceServiceRequest] = field(default_factory=list)

    async def receive(self, request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.read())
        self.exports.append(export)
        for resource_spans in export.resource_spans:
            service = next(
                (
                    a.value.string_value
                    for a in resource_spans.resource.attributes
                    if a.key == "service.name"
                ),
                "?",
            )
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append((span.trace_id.hex(), service, span.name))
                    for attribute in span.attributes:
                        if attribute.key == "messaging.message.conversation_id":
                            self.runs.setdefault(attribute.value.string_value, set()).add(
                                span.trace_id.hex()
                            )
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )


@dataclass
class Mesh:
    settings: RadmeshSettings  # as the services see it (FHIR through the proxy)
    direct_fhir: FhirClient  # the test's own view of the FHIR server
    proxy: TcpProxy
    spans: SpanCollector
    processes: dict[str, asyncio.subprocess.Process]
    logs: Path
    env: dict[str, str]  # the services' environment (for the `radmesh` command in a test)
    launch: Callable[[str], Awaitable[asyncio.subprocess.Process]] | None = None

    async def restart(self, service: str) -> None:
        """Start `service` again (after a crash a test caused), its log appended to; fails the
        test when it does not become ready."""
        assert self.launch is not None
        self.processes[service] = await self.launch(service)
        if not await _ready(SERVICES[service], self.processes[service]):
            pytest.fail(f"{service} did not become ready again:\n{self.log_tail(service)}")

    def log_tail(self, service: str, lines: int = 30) -> str:
        text = (self.logs / f"{service}.log").read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def log_events(
        self,
        service: str,
        correlation_id: uuid.UUID | str,
        *events: str,
        bound_to: str = "correlation_id",
    ) -> list[dict[str, Any]]:
        """The service's JSON log lines bound to `correlation_id` (one study run; or the value
        of another field `bound_to`, e.g. study_instance_uid), in order; only those whose
        `event` is one of `events` when any are given. Lines that are not JSON (library output,
        a line still being written) are skipped."""
        found = []
        text = (self.logs / f"{service}.log").read_text(errors="replace")
        for line in text.splitlines():
            if not line.startswith("{"):
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(record, dict) or record.get(bound_to) != str(correlation_id):
                continue
            if not events or record.get("event") in events:
                found.append(record)
        return found

    async def wait_for_log(
        self,
        service: str,
        correlation_id: uuid.UUID | str,
        until: Callable[[list[dict[str, Any]]], bool],
        *,
        timeout_seconds: float = 60,
    ) -> list[dict[str, Any]]:
        """Poll the service's log lines of one study run until `until(lines)` holds; fails the
        test with the log's tail when it does not within the timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_seconds
        while True:
            lines = self.log_events(service, correlation_id)
            if until(lines):
                return lines
            if loop.time() > deadline:
                pytest.fail(
                    f"{service}: condition on the log lines of run {correlation_id} not met in "
                    f"{timeout_seconds:.0f} s; its lines: {[line.get('event') for line in lines]}"
                    f"\n{self.log_tail(service)}"
                )
            await asyncio.sleep(0.1)


async def only_resource(fhir: FhirClient, resource_type: str, **params: str) -> dict[str, Any]:
    """The one resource the search finds, as plain JSON."""
    bundle = await fhir.execute(resource_type, "get", params=params)
    found = [entry["resource"] for entry in bundle.get("entry", [])]
    assert len(found) == 1, (resource_type, params, len(found))
    plain: dict[str, Any] = json.loads(json.dumps(found[0]))
    return plain


async def _ready(port: int, process: asyncio.subprocess.Process, seconds: float = 60) -> bool:
    deadline = asyncio.get_running_loop().time() + seconds
    async with aiohttp.ClientSession() as http:
        while asyncio.get_running_loop().time() < deadline:
            if process.returncode is not None:
                return False
            try:
                async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                    if response.status == 200:
                        return True
            except aiohttp.ClientError:
                pass  # not listening yet
            await asyncio.sleep(0.2)
    return False


async def _cancel_open_verification_tasks(fhir: FhirClient, since: datetime) -> None:
    """Leave no verification Task this mesh's studies opened waiting on the shared FHIR
    server: its worklist would otherwise grow run after run (and the review page shows the
    oldest first, up to its limit)."""
    bundle: dict[str, Any] | None = await fhir.execute(
        "Task",
        "get",
        params={
            "status": "requested",
            "identifier": "urn:radmesh:task|",
            "_lastUpdated": f"ge{since.isoformat()}",
            "_count": 50,
        },
    )
    tasks: list[dict[str, Any]] = []
    while bundle is not None:
        tasks.extend(entry["resource"] for entry in bundle.get("entry", []))
        bundle = await fhir.next_page(bundle)
    for task in tasks:
        await fhir.execute(f"Task/{task['id']}", "put", data={**task, "status": "cancelled"})


@pytest.fixture(scope="module")
def mesh_overrides() -> dict[str, str]:
    """Settings a test module gives its mesh on top of the fixture's (override the fixture)."""
    return {}


@pytest.fixture(scope="module")
async def mesh(
    infra: Infrastructure,
    tmp_path_factory: pytest.TempPathFactory,
    mesh_overrides: dict[str, str],
) -> AsyncIterator[Mesh]:
    tag = uuid.uuid4().hex[:8]
    started = datetime.now(UTC)
    work = tmp_path_factory.mktemp("mesh")
    # The services reach the FHIR server on its SMART Backend Services port: every call they
    # make carries an access token from Keycloak (client radmesh-services, private_key_jwt).
    fhir_port = int(infra.fhir_smart_base_url.split(":")[2].split("/")[0])
    proxy = TcpProxy(fhir_port)
    await proxy.up()
    spans = SpanCollector()
    receiver = web.Application()
    receiver.add_routes([web.post("/v1/traces", spans.receive)])
    runner = web.AppRunner(receiver)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    otlp_port = runner.addresses[0][1]
    user, password = infra.orthanc_auth
    exchange = f"radmesh.e2e-{tag}"
    env = {
        **os.environ,
        "RADMESH_BROKER__URL": infra.amqp_url,
        "RADMESH_BROKER__EXCHANGE": exchange,
        # queues of its own too: the broker is shared with other meshes and `make mesh-up`
        "RADMESH_BROKER__QUEUE_PREFIX": exchange,
        "RADMESH_BROKER__RETRY_DELAYS_SECONDS": "[0.5, 1, 2, 4, 8]",
        "RADMESH_FHIR__BASE_URL": f"http://127.0.0.1:{proxy.port}/fhir",
        "RADMESH_FHIR__TIMEOUT_SECONDS": "5",
        "RADMESH_FHIR__SMART__CLIENT_ID": "radmesh-services",
        "RADMESH_FHIR__SMART__PRIVATE_KEY_FILE": str(
            infra.smart_key_dir / "radmesh-services.key.pem"
        ),
        "RADMESH_DICOMWEB__BASE_URL": infra.orthanc_dicomweb_url,
        "RADMESH_DICOMWEB__USERNAME": user,
        "RADMESH_DICOMWEB__PASSWORD": password,
        "RADMESH_STORAGE__BLOB_DIR": str(work / "blobs"),
        "RADMESH_REGISTRY_PATH": str(ROOT / "registry" / "models.yaml"),
        "RADMESH_TELEMETRY__LOG_FORMAT": "json",
        "RADMESH_TELEMETRY__OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_port}/v1/traces",
        "RADMESH_OIDC__ISSUER": infra.oidc_issuer,
        # Earlier tests leave unprocessed studies on the shared FHIR server; the mesh here reads
        # only what this module loads.
        "RADMESH_SUBSCRIBER_RECONCILE_HOURS": "0",
        "RADMESH_MAPPER_REDRIVE_INTERVAL_SECONDS": "0",  # nor re-drives their half-done runs
        "RADMESH_SUBSCRIBER_REDRIVE_CLAIMS_AFTER_MINUTES": "0",  # or their unfinished claims
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        **mesh_overrides,
    }
    processes: dict[str, asyncio.subprocess.Process] = {}
    # The subscriber reads the FHIR server directly; the services that write go through the
    # proxy, so a test can make the FHIR server unreachable for them mid-run.
    direct = {"subscriber": {"RADMESH_FHIR__BASE_URL": infra.fhir_smart_base_url}}

    async def launch(service: str) -> asyncio.subprocess.Process:
        with (work / f"{service}.log").open("ab") as log:  # appended: crash evidence stays
            return await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "shared.cli",
                "run",
                service,
                cwd=ROOT,
                env={**env, **direct.get(service, {})},
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )

    for service in SERVICES:
        processes[service] = await launch(service)
    settings = RadmeshSettings(
        broker=BrokerSettings(
            url=infra.amqp_url,
            exchange=exchange,
            queue_prefix=exchange,
            retry_delays_seconds=json.loads(env["RADMESH_BROKER__RETRY_DELAYS_SECONDS"]),
        ),
        fhir=FhirSettings(
            base_url=env["RADMESH_FHIR__BASE_URL"],
            smart=SmartBackendSettings(
                client_id=env["RADMESH_FHIR__SMART__CLIENT_ID"],
                private_key_file=Path(env["RADMESH_FHIR__SMART__PRIVATE_KEY_FILE"]),
            ),
        ),
        dicomweb=DicomWebSettings(base_url=infra.orthanc_dicomweb_url),
    )
    mesh = Mesh(
        settings=settings,
        direct_fhir=FhirClient(FhirSettings(base_url=infra.fhir_base_url)),
        proxy=proxy,
        spans=spans,
        processes=processes,
        logs=work,
        env={**env, **direct["subscriber"]},
        launch=launch,
    )
    try:
        for service, port in SERVICES.items():
            if not await _ready(port, processes[service]):
                pytest.fail(f"{service} did not become ready:\n{mesh.log_tail(service)}")
        yield mesh
    finally:
        for process in processes.values():
            if process.returncode is None:
                process.terminate()
        for process in processes.values():
            try:
                await asyncio.wait_for(process.wait(), timeout=20)
            except TimeoutError:
                process.kill()
                await process.wait()
        subscriptions = (
            await mesh.direct_fhir.resources("Subscription")
            .search(url="http://127.0.0.1:8090/fhir")
            .fetch_all()
        )
        for subscription in subscriptions:
            await mesh.direct_fhir.execute(f"Subscription/{subscription['id']}", method="delete")
        await _cancel_open_verification_tasks(mesh.direct_fhir, started)
        await mesh.direct_fhir.close()
        # its exchange and queues (durable: each mesh would leave ~40 behind), timers' delay
        # queues included
        await delete_broker_objects(infra.amqp_url, exchange)
        await runner.cleanup()
        await proxy.down()
