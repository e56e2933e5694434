"""The blob store for pixel data (claim check): a directory here, a shared volume in Kubernetes.

Keys are relative POSIX paths such as `<run>/<series uid>/instances-<fetch>` (a series'
instances one after another; the manifest beside it names each one's offset and size). A blob
is written to a temporary file beside its destination and renamed into place when complete, so
a reader never sees a half-written instance; a retried fetch writes a blob of its own, and the
one an earlier manifest names stays as it was until the sweep.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from shared.errors import InvalidMessage, PermanentError

__all__ = ["BlobStore", "BlobWriter", "PixelsGone", "SweepResult"]


class PixelsGone(PermanentError):
    """A message names pixels that are no longer in the store (swept after the retention time,
    or never written): replaying the study's study.detected fetches them again."""


@dataclass(frozen=True)
class SweepResult:
    runs_deleted: int
    bytes_freed: int
    runs_kept: int


class _Window(io.RawIOBase):
    """A byte range of a file, read with `pread` as a seekable file of its own."""

    def __init__(self, path: Path, offset: int, size: int) -> None:
        super().__init__()
        self._descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._start, self._size, self._position = offset, size, 0
        self.name = str(path)  # what a reader such as pydicom names the file by

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        wanted = min(len(buffer), self._size - self._position)
        if wanted <= 0:
            return 0
        data = os.pread(self._descriptor, wanted, self._start + self._position)
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def tell(self) -> int:
        return self._position

    def close(self) -> None:
        if not self.closed:
            os.close(self._descriptor)
        super().close()


class BlobWriter:
    """One blob being written, as it arrives, to a temporary file in its directory; `commit`
    names it (one rename), `abort` removes it. Plain blocking writes: each lands in the page
    cache in well under a millisecond."""

    _FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC

    def __init__(self, store: BlobStore, directory: Path) -> None:
        self._store = store
        self._temporary = directory / f".part-{uuid.uuid4().hex}"
        self._descriptor: int | None = os.open(self._temporary, self._FLAGS, 0o600)
        self.size = 0

    def write(self, chunk: memoryview | bytes) -> None:
        assert self._descriptor is not None, "write after commit or abort"
        view = memoryview(chunk)
        while view:
            written = os.write(self._descriptor, view)
            view = view[written:]
        self.size += len(chunk)

    def _close(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None

    def window(self, offset: int, size: int) -> BinaryIO:
        """`size` bytes written so far from `offset`, as a file of their own (to read one
        instance's header back before the blob is named: a reader sees neither the instances
        before it nor those after, and reads only as far as it needs)."""
        return io.BufferedReader(_Window(self._temporary, offset, size))

    def commit(self, key: str) -> int:
        """The blob complete, under its key (in the same directory); returns its size."""
        self._close()
        os.replace(self._temporary, self._store.path(key))
        return self.size

    def abort(self) -> None:
        self._close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._temporary)


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

    def directory(self, directory_key: str) -> Path:
        """The directory of a key prefix, created if need be: where BlobWriters write."""
        directory = self.path(directory_key)
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    def writer(self, directory_key: str) -> BlobWriter:
        """A blob to be written into a directory (created if need be) and named at commit."""
        return BlobWriter(self, self.directory(directory_key))

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

    def read_range(self, key: str, offset: int, size: int) -> bytes:
        """`size` bytes from `offset` of a blob that must be there (a series' blob holds its
        instances one after another); PixelsGone when it is not, or shorter than that."""
        try:
            with self.existing_path(key).open("rb") as file:
                data = os.pread(file.fileno(), size, offset)
        except FileNotFoundError:  # swept between the check and the open: PixelsGone now
            self.existing_path(key)
            raise
        if len(data) != size:
            raise PixelsGone(
                f"blob {key} holds {offset + len(data)} bytes, not the {offset + size} its "
                "manifest names (cut short, or written anew since): replay the study's "
                "study.detected to fetch its pixels again"
            )
        return data

    def existing_path(self, key: str) -> Path:
        """The file of a key that must be there (PixelsGone when it is not)."""
        path = self.path(key)
        if not path.is_file():
            raise PixelsGone(
                f"blob {key} is not in the store (swept after the retention time, or never "
                "written): replay the study's study.detected to fetch its pixels again"
            )
        return path

    def delete_prefix(self, prefix: str) -> None:
        """Remove every blob under a prefix (e.g. a study's pixels once its results are posted)."""
        shutil.rmtree(self.path(prefix), ignore_errors=True)

    def sweep(self, older_than_seconds: float, now: float | None = None) -> SweepResult:
        """Delete each run's directory (`<run>/…`, one per study run) whose newest file is older
        than `older_than_seconds`: pixel data, patient data included, does not outlive the
        retention time. A run still being written (a recent file) is kept whole."""
        cutoff = (time.time() if now is None else now) - older_than_seconds
        deleted = freed = kept = 0
        for run in self.root.iterdir():
            if not run.is_dir() or run.name.startswith("."):
                continue
            stats = [path.stat() for path in run.rglob("*") if path.is_file()]
            newest = max((stat.st_mtime for stat in stats), default=run.stat().st_mtime)
            if newest >= cutoff:
                kept += 1
                continue
            size = sum(stat.st_size for stat in stats)
            shutil.rmtree(run, ignore_errors=True)
            deleted += 1
            freed += size
        return SweepResult(runs_deleted=deleted, bytes_freed=freed, runs_kept=kept)
