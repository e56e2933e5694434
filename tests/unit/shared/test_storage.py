"""shared.storage: blobs are written whole or not at all, and keys cannot escape the store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.errors import InvalidMessage
from shared.storage import BlobStore


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_streamed_blob_is_stored_whole(tmp_path: Path) -> None:
    """Chunks written through write_stream read back as one blob of the summed size."""
    store = BlobStore(tmp_path)
    size = await store.write_stream("1.2/1.2.3/1.2.3.4.dcm", _chunks(b"DICM", b"x" * 10))
    assert size == 14
    assert store.read_bytes("1.2/1.2.3/1.2.3.4.dcm") == b"DICM" + b"x" * 10


async def test_failed_stream_leaves_no_blob_behind(tmp_path: Path) -> None:
    """A stream that breaks off leaves neither the blob nor a temporary file."""
    store = BlobStore(tmp_path)

    async def broken() -> AsyncIterator[bytes]:
        yield b"partial"
        raise ConnectionError("PACS went away")

    with pytest.raises(ConnectionError):
        await store.write_stream("study/series/instance.dcm", broken())
    assert not store.exists("study/series/instance.dcm")
    assert list((tmp_path / "study" / "series").iterdir()) == []


def test_keys_outside_the_store_are_rejected(tmp_path: Path) -> None:
    """A message naming ../ or an absolute path is invalid, not a file-system write."""
    store = BlobStore(tmp_path)
    for key in ("../etc/passwd", "/etc/passwd", ""):
        with pytest.raises(InvalidMessage):
            store.path(key)
