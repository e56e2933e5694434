"""The blob store's retention sweep: the fetcher, which writes the pixels, deletes them again
once a run's retention time has passed (`RADMESH_STORAGE__RETENTION_MINUTES`)."""

from __future__ import annotations

import asyncio

import structlog

from shared.runtime import Periodic
from shared.settings import StorageSettings
from shared.storage import BlobStore

__all__ = ["RetentionSweep"]

log = structlog.get_logger(__name__)


class RetentionSweep:
    """Sweeps the store on start and every `sweep_interval_seconds` in the background."""

    def __init__(self, store: BlobStore, settings: StorageSettings) -> None:
        self.store = store
        self.settings = settings
        # A full or read-only disk must not stop the fetcher: logged, tried again next round.
        self._periodic = Periodic(
            self.sweep_once, settings.sweep_interval_seconds, "blob_sweep_failed", (OSError,)
        )

    async def sweep_once(self) -> int:
        """One sweep (in a worker thread: it walks the file system); returns runs deleted."""
        result = await asyncio.to_thread(self.store.sweep, self.settings.retention_minutes * 60)
        log.info(
            "blobs_swept",
            runs_deleted=result.runs_deleted,
            megabytes_freed=round(result.bytes_freed / 1e6, 1),
            runs_kept=result.runs_kept,
            retention_minutes=self.settings.retention_minutes,
        )
        return result.runs_deleted

    async def start(self) -> None:
        await self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()
