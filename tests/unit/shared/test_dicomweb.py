"""shared.dicomweb: a GET on a keep-alive connection the PACS closed while it sat idle; whether a
series holds a SOP class, from a PACS that matches the key and from one that ignores it."""

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


def _instance(sop_class_uid: str) -> dict[str, Any]:
    return {
        "00080016": {"vr": "UI", "Value": [sop_class_uid]},
        "00080018": {"vr": "UI", "Value": [f"{sop_class_uid}.9"]},
    }


async def test_a_pacs_that_ignores_the_sop_class_key_is_searched_in_full() -> None:
    """Asked whether a series holds a CT image, a PACS that ignores the SOPClassUID matching key
    answers its first instance, a Secondary Capture: the series' instances are then searched in
    full, and the CT image among them counts. A PACS that matches answers nothing for a class
    the series does not hold."""
    ct, capture = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.7"
    client = DicomWebClient(DicomWebSettings())
    asked: list[list[tuple[str, str]]] = []

    async def ignoring_the_key(url: str, params: list[tuple[str, str]], what: str) -> list[Any]:
        asked.append(params)
        return (
            [_instance(capture)]
            if ("limit", "1") in params
            else [
                _instance(capture),
                _instance(ct),
            ]
        )

    client._read_json = ignoring_the_key  # type: ignore[method-assign]
    assert await client.series_holds_sop_class("1.2", "1.2.1", [ct]) is True
    assert asked[0] == [("00080016", ct), ("includefield", "00080016"), ("limit", "1")]
    assert len(asked) == 2  # the full search

    async def matching(url: str, params: list[tuple[str, str]], what: str) -> list[Any]:
        return []

    client._read_json = matching  # type: ignore[method-assign]
    assert await client.series_holds_sop_class("1.2", "1.2.1", [capture]) is False
