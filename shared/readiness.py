"""What a service's readiness (`/readyz`) waits for: the broker, and each remote server the
service cannot do its work without (its FHIR server, its PACS, its model servers), reached by
a TCP connection to the server's host and port (no request, no credentials, no load on it).
A server that does not take the connection within the timeout is named in the answer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from shared.registry import Registry
from shared.settings import RadmeshSettings

__all__ = ["Dependency", "fhir_server", "model_servers", "pacs", "unreachable"]

_DEFAULT_PORTS = {"http": 80, "https": 443, "amqp": 5672, "amqps": 5671}


@dataclass(frozen=True)
class Dependency:
    """A remote server a service requires: a name for people and its base URL."""

    name: str
    url: str

    @property
    def address(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        return parts.hostname or "localhost", parts.port or _DEFAULT_PORTS.get(parts.scheme, 80)


async def _reachable(dependency: Dependency, timeout_seconds: float) -> bool:
    host, port = dependency.address
    try:
        async with asyncio.timeout(timeout_seconds):
            _reader, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def unreachable(
    dependencies: Sequence[Dependency], timeout_seconds: float = 2.0
) -> list[str]:
    """The dependencies that do not take a TCP connection now, as `name (host:port)`."""
    reached = await asyncio.gather(*(_reachable(d, timeout_seconds) for d in dependencies))
    return [
        f"{d.name} ({d.address[0]}:{d.address[1]})"
        for d, ok in zip(dependencies, reached, strict=True)
        if not ok
    ]


def fhir_server(settings: RadmeshSettings) -> Dependency:
    return Dependency("the FHIR server", settings.fhir.base_url)


def pacs(settings: RadmeshSettings) -> Dependency:
    return Dependency("the PACS", settings.dicomweb.base_url)


def model_servers(registry: Registry) -> list[Dependency]:
    """Each model server the registry calls, once."""
    urls = dict.fromkeys(model.endpoint.url for model in registry.models)
    return [Dependency(f"the model server {url}", url) for url in urls]
