"""Small DICOMweb helpers for Orthanc: batched STOW-RS and raw QIDO-RS query strings.

* STOW-RS: dicomweb-client's ``store_instances`` builds one request holding every instance in
  memory; here each batch (default 24 instances) is one multipart/related request, encoding of
  the next batch overlaps the upload of the previous one, and at most ``in_flight`` batches
  exist at once, so memory stays bounded for 300+ slice series.
* QIDO-RS: Orthanc 1.10 does not percent-decode query strings, so a wildcard or person-name
  search sent by a normal client (``PatientName=DOE%5EJOHN``, ``*`` -> ``%2A``) silently matches
  nothing. :func:`qido` sends the query string exactly as given (unencoded).
"""

from __future__ import annotations

import base64
import http.client
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

DICOM_JSON = "application/dicom+json"
REFERENCED_SOP_SEQUENCE = "00081199"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_INSTANCE_UID = "00081155"


class StowError(RuntimeError):
    """The PACS refused a STOW-RS request or some of its instances."""


@dataclass
class StowProgress:
    """Running totals of a STOW-RS upload."""

    instances: int = 0
    bytes: int = 0
    batches: int = 0
    seconds: float = 0.0
    stored_sop_uids: list[str] = field(default_factory=list)

    @property
    def instances_per_second(self) -> float:
        return self.instances / self.seconds if self.seconds > 0 else 0.0

    @property
    def megabytes_per_second(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0


def multipart_related(parts: Sequence[bytes], boundary: str) -> bytes:
    """A multipart/related body of DICOM Part 10 files (type application/dicom)."""
    delimiter = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode("ascii")
    chunks: list[bytes] = []
    for part in parts:
        chunks += [delimiter, part, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode("ascii"))
    return b"".join(chunks)


def _batches(items: Iterable[bytes], size: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class DicomWebClient:
    """A requests-based client for one DICOMweb root (e.g. http://127.0.0.1:8042/dicom-web)."""

    def __init__(self, root: str, auth: tuple[str, str] | None = None, timeout: float = 120.0):
        self.root = root.rstrip("/")
        self.auth = auth
        self.timeout = timeout
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.auth = self.auth
            self._local.session = session
        return session

    # ---------------------------------------------------------------- STOW-RS
    def store_batch(self, instances: Sequence[bytes], study_uid: str | None = None) -> list[str]:
        """POST one multipart/related STOW-RS request; returns the stored SOP Instance UIDs."""
        boundary = f"radmesh-{uuid.uuid4().hex}"
        url = f"{self.root}/studies" + (f"/{study_uid}" if study_uid else "")
        response = self._session().post(
            url,
            data=multipart_related(instances, boundary),
            headers={
                "Content-Type": (
                    f'multipart/related; type="application/dicom"; boundary={boundary}'
                ),
                "Accept": DICOM_JSON,
            },
            timeout=self.timeout,
        )
        if response.status_code not in (200, 202):
            raise StowError(f"STOW-RS {url} -> HTTP {response.status_code}: {response.text[:300]}")
        body: dict[str, Any] = response.json() if response.content else {}
        failed = body.get(FAILED_SOP_SEQUENCE, {}).get("Value", [])
        if failed or response.status_code == 202:
            raise StowError(f"STOW-RS {url}: {len(failed)} instance(s) refused: {failed[:3]}")
        stored: list[str] = []
        for item in body.get(REFERENCED_SOP_SEQUENCE, {}).get("Value", []):
            uid = item.get(REFERENCED_SOP_INSTANCE_UID, {}).get("Value", [None])[0]
            if uid:
                stored.append(str(uid))
        if len(stored) != len(instances):
            raise StowError(f"STOW-RS {url}: {len(instances)} sent but {len(stored)} stored")
        return stored

    def store(
        self,
        instances: Iterable[bytes],
        *,
        batch_size: int = 24,
        in_flight: int = 2,
        study_uid: str | None = None,
        on_batch: Callable[[StowProgress], None] | None = None,
    ) -> StowProgress:
        """Store instances in batches; encoding of the next batch overlaps the current upload."""
        progress = StowProgress()
        started = time.perf_counter()
        slots = threading.BoundedSemaphore(in_flight)
        lock = threading.Lock()
        pending: list[Future[None]] = []

        def upload(batch: list[bytes]) -> None:
            try:
                stored = self.store_batch(batch, study_uid)
                with lock:
                    progress.instances += len(batch)
                    progress.bytes += sum(len(b) for b in batch)
                    progress.batches += 1
                    progress.stored_sop_uids += stored
                    progress.seconds = time.perf_counter() - started
                    if on_batch is not None:
                        on_batch(progress)
            finally:
                slots.release()

        with ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="stow") as pool:
            for batch in _batches(instances, batch_size):
                slots.acquire()
                if any(f.done() and f.exception() for f in pending):
                    slots.release()
                    break
                pending.append(pool.submit(upload, batch))
            for future in pending:
                future.result()  # re-raises the first StowError
        progress.seconds = time.perf_counter() - started
        return progress

    # ---------------------------------------------------------------- QIDO-RS
    def qido(self, path: str, query: str = "") -> list[dict[str, Any]]:
        """GET {root}/{path}?{query} with the query string sent verbatim (no percent-encoding).

        Use it for wildcard (``*``) and person-name (``^``) matching, which Orthanc 1.10 only
        understands unencoded. The query must not contain spaces, '&' or '#' inside values.
        """
        # requests/urllib3 percent-encode '^' and friends whatever we do, so use http.client.
        parts = urlsplit(f"{self.root}/{path.lstrip('/')}")
        target = parts.path + (f"?{query}" if query else "")
        headers = {"Accept": DICOM_JSON}
        if self.auth is not None:
            token = base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {token}"
        connection = http.client.HTTPConnection(
            parts.hostname or "127.0.0.1", parts.port or 80, timeout=self.timeout
        )
        try:
            connection.request("GET", target, headers=headers)
            response = connection.getresponse()
            content = response.read()
        finally:
            connection.close()
        if response.status >= 300:
            raise requests.HTTPError(f"QIDO-RS {target} -> HTTP {response.status}")
        if response.status == 204 or not content:
            return []
        result: list[dict[str, Any]] = json.loads(content)
        return result
