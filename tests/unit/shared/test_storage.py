"""shared.storage: blobs are written whole or not at all, and keys cannot escape the store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared.errors import InvalidMessage, PermanentError
from shared.storage import BlobStore, PixelsGone


def test_a_written_blob_is_stored_whole_under_its_key(tmp_path: Path) -> None:
    """Chunks written through a BlobWriter read back as one blob of the summed size, named at
    commit, with no temporary file left."""
    store = BlobStore(tmp_path)
    writer = store.writer("1.2/1.2.3")
    writer.write(b"DICM")
    writer.write(memoryview(b"x" * 10))
    assert writer.commit("1.2/1.2.3/1.2.3.4.dcm") == 14
    assert store.read_bytes("1.2/1.2.3/1.2.3.4.dcm") == b"DICM" + b"x" * 10
    assert [path.name for path in (tmp_path / "1.2" / "1.2.3").iterdir()] == ["1.2.3.4.dcm"]


def test_an_aborted_blob_leaves_nothing_behind(tmp_path: Path) -> None:
    """A blob whose stream breaks off leaves neither the blob nor a temporary file."""
    store = BlobStore(tmp_path)
    writer = store.writer("study/series")
    writer.write(b"partial")
    writer.abort()
    assert list((tmp_path / "study" / "series").iterdir()) == []


def test_keys_outside_the_store_are_rejected(tmp_path: Path) -> None:
    """A message naming ../ or an absolute path is invalid, not a file-system write."""
    store = BlobStore(tmp_path)
    for key in ("../etc/passwd", "/etc/passwd", ""):
        with pytest.raises(InvalidMessage):
            store.path(key)


def test_sweep_deletes_runs_older_than_the_retention_and_keeps_the_rest(tmp_path: Path) -> None:
    """Runs whose newest file is older than the retention time are deleted whole (bytes freed
    counted); a run with one recent file is kept whole, even if its other files are old."""
    store = BlobStore(tmp_path)
    now = 1_000_000.0
    old = store.path("run-old/1.2/1.2.3/1.2.3.4.dcm")
    mixed_old = store.path("run-mixed/1.2/1.2.3/1.2.3.4.dcm")
    mixed_new = store.path("run-mixed/1.2/1.2.3/1.2.3.5.dcm")
    for path, age in ((old, 7200), (mixed_old, 7200), (mixed_new, 60)):
        store.write_bytes(str(path.relative_to(store.root)), b"x" * 100)
        os.utime(path, (now - age, now - age))
    result = store.sweep(older_than_seconds=3600, now=now)
    assert (result.runs_deleted, result.bytes_freed, result.runs_kept) == (1, 100, 1)
    assert not (tmp_path / "run-old").exists()
    assert mixed_old.exists() and mixed_new.exists()


def test_a_swept_blob_is_a_permanent_error_saying_what_to_do(tmp_path: Path) -> None:
    """Reading pixels that were swept (or never written) raises PixelsGone, a permanent error
    that says to replay study.detected, not a FileNotFoundError crash."""
    store = BlobStore(tmp_path)
    with pytest.raises(PixelsGone, match=r"replay the study's study\.detected") as raised:
        store.existing_path("run/1.2/1.2.3/1.2.3.4.dcm")
    assert isinstance(raised.value, PermanentError)
