"""A service's /readyz against the real broker and a server it requires, cut off and back."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Sequence

import aiohttp
import pytest

from shared.bus import Bus
from shared.messages import Event, StudyDetected
from shared.readiness import Dependency
from shared.runtime import bus_service, start_http
from shared.settings import BrokerSettings
from tests.broker_objects import delete_broker_objects
from tests.conftest import Infrastructure
from tests.tcp_proxy import TcpProxy
from tests.waiting import until

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_readiness_goes_false_naming_a_required_server_while_it_is_unreachable(
    infra: Infrastructure,
) -> None:
    """Ready while the broker answers and the PACS it requires takes connections; 503 naming
    the PACS while a proxy in front of it refuses them; ready again once it is back."""
    proxy = TcpProxy(int(infra.orthanc_url.rsplit(":", 1)[1]))
    await proxy.up()
    prefix = f"radmesh.readiness-{uuid.uuid4().hex[:8]}"
    bus = Bus(BrokerSettings(url=infra.amqp_url, exchange=prefix, queue_prefix=prefix), "fetcher")

    async def nothing(event: StudyDetected) -> Sequence[Event]:
        return []

    bus.consume(StudyDetected, nothing)
    pacs = Dependency("the PACS", f"http://127.0.0.1:{proxy.port}/dicom-web")
    app = bus_service("fetcher", bus, requires=[pacs])
    await app.start()
    port = _free_port()
    runner = await start_http(app, "127.0.0.1", port)
    url = f"http://127.0.0.1:{port}/readyz"
    try:
        async with aiohttp.ClientSession() as http:

            async def answer() -> tuple[int, dict[str, object]]:
                async with http.get(url) as response:
                    return response.status, await response.json()

            assert await answer() == (200, {"status": "ready", "service": "fetcher"})
            await proxy.down()
            status, body = await answer()
            assert status == 503
            assert body["unreachable"] == [f"the PACS (127.0.0.1:{proxy.port})"]
            await proxy.up()

            async def ready_again() -> bool:
                return (await answer())[0] == 200

            await until(ready_again, "readiness back once the PACS takes connections again")
    finally:
        await runner.cleanup()
        await app.stop()
        await proxy.down()
        await delete_broker_objects(infra.amqp_url, prefix)
