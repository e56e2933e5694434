"""The blob store for pixel data (claim check): a directory here, a shared volume in Kubernetes.

Keys are relative POSIX paths such as `<study uid>/<series uid>/<sop instance uid>.dcm`. A blob is
written to a temporary file beside its destination and renamed into place when complete, so a
reader never sees a half-written instance and a retried fetch simply overwrites.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterable
from pathlib import Path, PurePosixPath

from shared.errors import InvalidMessage

__all__ = ["BlobStore"]


class BlobStore:
    """Blobs under one root directory."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """The file of a key; a key that would leave the root is an invalid message."""
        relative = PurePosixPath(key)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise InvalidMessage(f"blob key {key!r} is not a relative path inside the store")
        return self.root.joinpath(*relative.parts)

    async def write_stream(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        """Write a blob from a stream of chunks in constant memory; returns its size in bytes."""
        destination = self.path(key)
        destination.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=destination.parent, prefix=".part-")
        size = 0
        try:
            with os.fdopen(descriptor, "wb") as file:
                async for chunk in chunks:
                    file.write(chunk)
                    size += len(chunk)
            os.replace(temporary, destination)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        return size

    def write_bytes(self, key: str, data: bytes) -> int:
        """Write a small blob (e.g. a manifest) atomically."""
        destination = self.path(key)
        destination.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=destination.parent, prefix=".part-")
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        os.replace(temporary, destination)
        return len(data)

    def read_bytes(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete_prefix(self, prefix: str) -> None:
        """Remove every blob under a prefix (e.g. a study's pixels once its results are posted)."""
        shutil.rmtree(self.path(prefix), ignore_errors=True)
