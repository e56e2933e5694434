"""shared.dicomweb: a GET on a keep-alive connection the PACS closed while it sat idle."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from shared.dicomweb import DicomWebClient
from shared.errors import RemoteUnavailable
from shared.settings import DicomWebSettings

STUDY = {"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}


def _client(failures: int) -> tuple[DicomWebClient, list[str]]:
    """A client whose first `failures` reads find their connection closed by the PACS."""
    client = DicomWebClient(DicomWebSettings())
    calls: list[str] = []

    async def read_json(url: str, params: list[tuple[str, str]], what: str) -> list[Any]:
        calls.append(what)
        if len(calls) <= failures:
            raise aiohttp.ServerDisconnectedError()
        return [STUDY]

    client._read_json = read_json  # type: ignore[method-assign]
    return client, calls


async def test_a_query_on_a_connection_the_pacs_closed_goes_again_once() -> None:
    """Orthanc closes idle keep-alive connections after about a second: the QIDO-RS query that
    met one is sent again on a fresh connection (a hook answered 503 for it before)."""
    client, calls = _client(failures=1)
    assert await client.search_studies("A1") == ["1.2.3"]
    assert calls == ["QIDO-RS studies", "QIDO-RS studies"]


async def test_a_pacs_that_keeps_disconnecting_is_unavailable() -> None:
    client, calls = _client(failures=2)
    with pytest.raises(RemoteUnavailable, match="QIDO-RS studies"):
        await client.search_studies("A1")
    assert len(calls) == 2
