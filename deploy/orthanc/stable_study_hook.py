"""Orthanc Python plugin: announces every stable study, and every deletion of an announced
study, series or instance, to radmesh with signed webhooks.

Loaded by Orthanc itself (PythonScript in the generated config) and run by Debian's system
python3, so it uses the standard library only. On ChangeType.STABLE_STUDY it queues the study;
a background thread reads the study from Orthanc's REST API, builds a JSON event without any
patient-identifying data and POSTs it to $RADMESH_PACS_HOOK_URL with

    X-Radmesh-Signature: sha256=<hex HMAC-SHA256 of the raw body, key $RADMESH_PACS_HOOK_SECRET>

retrying with backoff. Orthanc's change thread is never blocked by the network.

Deletions: Orthanc names a deleted resource by its Orthanc id only, when its DICOM UIDs can no
longer be read. So the plugin remembers the UIDs behind the ids of every instance stored, its
series and its study (on NEW_INSTANCE, and again at each stable study; SQLite at
$RADMESH_PACS_HOOK_DB), and on
ChangeType.DELETED it POSTs a "deleted" event (the study's UID and the series whose images went,
or none when the whole study went) to $RADMESH_PACS_DELETED_HOOK_URL. Deletions arriving
together (a study's instances and series go one by one) are sent as one event per study.
See deploy/orthanc/README.md for the events' shapes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import queue
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import orthanc  # type: ignore[import-not-found]  # provided by Orthanc at run time

EVENT_TYPE = "stable-study"
DELETED_EVENT_TYPE = "deleted"
SCHEMA_VERSION = 1
SIGNATURE_HEADER = "X-Radmesh-Signature"

HOOK_URL = os.environ.get("RADMESH_PACS_HOOK_URL", "")
HOOK_SECRET = os.environ.get("RADMESH_PACS_HOOK_SECRET", "").encode("utf-8")
DELETED_HOOK_URL = os.environ.get("RADMESH_PACS_DELETED_HOOK_URL") or (
    HOOK_URL.rsplit("/", 1)[0] + "/deleted" if HOOK_URL else ""
)
HOOK_DB = os.environ.get("RADMESH_PACS_HOOK_DB", "")
# How long deletions are gathered before they are sent (one event per study).
DELETION_GATHER_S = 1.0
ATTEMPTS = int(os.environ.get("RADMESH_PACS_HOOK_ATTEMPTS", "5"))
TIMEOUT_S = float(os.environ.get("RADMESH_PACS_HOOK_TIMEOUT", "5"))
HTTP_PORT = os.environ.get("RADMESH_ORTHANC_HTTP_PORT", "8042")
DICOMWEB_ROOT = f"http://127.0.0.1:{HTTP_PORT}/dicom-web"
# Per-instance SOP class look-ups are local and cheap, but bounded for huge series: past this
# many instances only the first and last instance of a series are sampled.
SOP_CLASS_SCAN_LIMIT = 500

_queue: queue.Queue[str | None] = queue.Queue()
# ("new", Orthanc instance id) and ("deleted:<level>", Orthanc id), in the order Orthanc made
# them: one thread takes both, so a deletion is never looked up before its instance was noted.
_changes: queue.Queue[tuple[str, str] | None] = queue.Queue()
_series_seen: dict[str, tuple[str, str, str]] = {}  # series id → (study id, study UID, series UID)
_stopping = threading.Event()
_db_lock = threading.Lock()
_db: sqlite3.Connection | None = None


def _open_db() -> sqlite3.Connection | None:
    if not HOOK_DB:
        return None
    connection = sqlite3.connect(HOOK_DB, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=OFF")  # a lost row costs one unannounced deletion
    connection.execute(
        "CREATE TABLE IF NOT EXISTS announced (orthanc_id TEXT PRIMARY KEY, level TEXT NOT NULL,"
        " study_uid TEXT NOT NULL, series_uid TEXT)"
    )
    connection.commit()
    return connection


def remember(rows: list[tuple[str, str, str, str | None]]) -> None:
    """(Orthanc id, level, study UID, series UID) of what an announced study holds."""
    if _db is None:
        return
    with _db_lock:
        _db.executemany("INSERT OR REPLACE INTO announced VALUES (?, ?, ?, ?)", rows)
        _db.commit()


def forget(orthanc_ids: list[str]) -> list[tuple[str, str, str | None]]:
    """(level, study UID, series UID) of the deleted ids that were announced, and forget them."""
    if _db is None or not orthanc_ids:
        return []
    found: list[tuple[str, str, str | None]] = []
    with _db_lock:
        for orthanc_id in orthanc_ids:
            row = _db.execute(
                "SELECT level, study_uid, series_uid FROM announced WHERE orthanc_id = ?",
                (orthanc_id,),
            ).fetchone()
            if row is not None:
                found.append(row)
                _db.execute("DELETE FROM announced WHERE orthanc_id = ?", (orthanc_id,))
        _db.commit()
    return found


def _get_json(uri: str) -> Any:
    return json.loads(orthanc.RestApiGet(uri))


def _sop_class(instance_id: str) -> str | None:
    try:
        value = orthanc.RestApiGet(f"/instances/{instance_id}/metadata/SopClassUid")
    except Exception:  # metadata missing (should not happen for stored instances)
        return None
    text = value.decode("utf-8") if isinstance(value, bytes) else str(value)
    return text.strip() or None


def build_event(study_id: str) -> tuple[dict[str, Any], list[tuple[str, str, str, str | None]]]:
    """The event for one Orthanc study (identifiers, counts and what kinds of objects it holds),
    and the rows `remember` keeps for its deletion: (Orthanc id, level, study UID, series UID)."""
    study = _get_json(f"/studies/{study_id}")
    tags = study.get("MainDicomTags", {})
    study_uid = tags.get("StudyInstanceUID")
    rows: list[tuple[str, str, str, str | None]] = [(study_id, "study", study_uid, None)]
    series_out: list[dict[str, Any]] = []
    all_sop: set[str] = set()
    modalities: set[str] = set()
    for series_id in study.get("Series", []):
        series = _get_json(f"/series/{series_id}")
        stags = series.get("MainDicomTags", {})
        instances: list[str] = list(series.get("Instances", []))
        series_uid = stags.get("SeriesInstanceUID")
        rows.append((series_id, "series", study_uid, series_uid))
        rows += [(instance_id, "instance", study_uid, series_uid) for instance_id in instances]
        sample = (
            instances if len(instances) <= SOP_CLASS_SCAN_LIMIT else instances[:1] + instances[-1:]
        )
        sop = sorted({c for c in (_sop_class(i) for i in sample) if c})
        all_sop.update(sop)
        modality = stags.get("Modality")
        if modality:
            modalities.add(modality)
        number = stags.get("SeriesNumber")
        series_out.append(
            {
                "orthanc_series_id": series_id,
                "series_instance_uid": stags.get("SeriesInstanceUID"),
                "modality": modality,
                "series_number": int(number)
                if number and number.strip().lstrip("-").isdigit()
                else None,
                "series_description": stags.get("SeriesDescription"),
                "manufacturer": stags.get("Manufacturer"),
                "instance_count": len(instances),
                "sop_class_uids": sop,
            }
        )
    series_out.sort(
        key=lambda s: (
            s["series_number"] is None,
            s["series_number"] or 0,
            s["series_instance_uid"] or "",
        )
    )
    instance_count = sum(s["instance_count"] for s in series_out)
    last_update = study.get("LastUpdate")
    # Same study state -> same id: a subscriber can drop duplicates caused by retries.
    event_id = hashlib.sha256(f"{study_id}|{instance_count}|{last_update}".encode()).hexdigest()[
        :32
    ]
    event = {
        "event": EVENT_TYPE,
        "schema_version": SCHEMA_VERSION,
        "event_id": event_id,
        "emitted_at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
        "orthanc_study_id": study_id,
        "study_instance_uid": tags.get("StudyInstanceUID"),
        "accession_number": tags.get("AccessionNumber") or None,
        "last_update": last_update,
        "series_count": len(series_out),
        "instance_count": instance_count,
        "modalities": sorted(modalities),
        "sop_class_uids": sorted(all_sop),
        "series": series_out,
        "dicomweb_root": DICOMWEB_ROOT,
    }
    return event, rows


def sign(body: bytes) -> str:
    """Header value: 'sha256=' + hex HMAC-SHA256 of the exact request body."""
    return "sha256=" + hmac.new(HOOK_SECRET, body, hashlib.sha256).hexdigest()


def _post(url: str, body: bytes, event_type: str, event_id: str) -> None:
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(body),
            "X-Radmesh-Event": event_type,
            "X-Radmesh-Event-Id": event_id,
            "User-Agent": "radmesh-orthanc-hook/1",
        },
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        response.read()


def send(url: str, event: dict[str, Any], what: str) -> None:
    """POST a signed event, retrying with backoff (a 4xx other than 408/429 is final)."""
    body = json.dumps(event, separators=(",", ":"), sort_keys=True).encode("utf-8")
    delay = 0.5
    for attempt in range(1, ATTEMPTS + 1):
        try:
            _post(url, body, event["event"], event["event_id"])
            orthanc.LogInfo(f"radmesh hook: {what} delivered (attempt {attempt})")
            return
        except urllib.error.HTTPError as exc:
            error = f"HTTP {exc.code}"
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                orthanc.LogError(f"radmesh hook: {url} refused {what}: {error}")
                return
        except Exception as exc:  # connection refused, timeout, ...
            error = repr(exc)
        orthanc.LogWarning(
            f"radmesh hook: delivery of {what} failed (attempt {attempt}/{ATTEMPTS}): {error}"
        )
        if attempt == ATTEMPTS or _stopping.wait(delay):
            break
        delay = min(delay * 2, 10.0)
    orthanc.LogError(f"radmesh hook: giving up on {what} after {ATTEMPTS} attempts")


def deliver(study_id: str) -> None:
    try:
        event, rows = build_event(study_id)
    except Exception as exc:  # the study may have been deleted meanwhile
        orthanc.LogError(f"radmesh hook: cannot describe study {study_id}: {exc!r}")
        return
    remember(rows)
    send(HOOK_URL, event, f"study {study_id}")


_PATHS = {"study": "studies", "series": "series", "instance": "instances"}


def _exists(orthanc_id: str, level: str) -> bool:
    """Whether a resource is there again (OverwriteInstances replaces an instance stored twice
    under the same id: that is no deletion)."""
    try:
        orthanc.RestApiGet(f"/{_PATHS[level]}/{orthanc_id}")
    except Exception:  # 404: gone
        return False
    return True


def deletion_events(deleted: list[tuple[str, str, str | None]]) -> list[dict[str, Any]]:
    """One "deleted" event per study from (level, study UID, series UID) of deleted resources:
    the whole study, or the series whose instances went."""
    studies: dict[str, set[str] | None] = {}
    for level, study_uid, series_uid in deleted:
        if level == "study":
            studies[study_uid] = None
        elif studies.get(study_uid, set()) is not None and series_uid:
            studies.setdefault(study_uid, set()).add(series_uid)  # type: ignore[union-attr]
    events = []
    now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
    for study_uid, series in studies.items():
        series_uids = sorted(series or [])
        digest = hashlib.sha256(f"{study_uid}|{','.join(series_uids)}|{now}".encode())
        events.append(
            {
                "event": DELETED_EVENT_TYPE,
                "schema_version": SCHEMA_VERSION,
                "event_id": digest.hexdigest()[:32],
                "emitted_at": now,
                "study_instance_uid": study_uid,
                "whole_study": series is None,
                "series_instance_uids": series_uids,
            }
        )
    return events


def _note_instance(instance_id: str) -> None:
    """Remember the UIDs behind a newly stored instance (and its series and study), so that its
    deletion can be announced even before the study was ever stable."""
    try:
        instance = _get_json(f"/instances/{instance_id}")
        series_id = instance["ParentSeries"]
        if series_id not in _series_seen:
            series = _get_json(f"/series/{series_id}")
            study = _get_json(f"/studies/{series['ParentStudy']}")
            if len(_series_seen) > 10_000:
                _series_seen.clear()
            _series_seen[series_id] = (
                series["ParentStudy"],
                study["MainDicomTags"]["StudyInstanceUID"],
                series["MainDicomTags"]["SeriesInstanceUID"],
            )
    except Exception:  # deleted meanwhile: nothing to remember
        return
    study_id, study_uid, series_uid = _series_seen[series_id]
    remember(
        [
            (instance_id, "instance", study_uid, series_uid),
            (series_id, "series", study_uid, series_uid),
            (study_id, "study", study_uid, None),
        ]
    )


def _changes_worker() -> None:
    while True:
        first = _changes.get()
        if first is None or _stopping.is_set():
            return
        kind, orthanc_id = first
        if kind == "new":
            _note_instance(orthanc_id)
            continue
        batch = [(kind.removeprefix("deleted:"), orthanc_id)]
        deadline = time.monotonic() + DELETION_GATHER_S
        while (left := deadline - time.monotonic()) > 0:
            try:
                item = _changes.get(timeout=left)
            except queue.Empty:
                break
            if item is None:
                return
            if item[0] == "new":
                _note_instance(item[1])
            else:
                batch.append((item[0].removeprefix("deleted:"), item[1]))
        try:
            gone = [oid for level, oid in batch if not _exists(oid, level)]
            for event in deletion_events(forget(gone)):
                what = f"deletion in study {event['study_instance_uid']}"
                orthanc.LogWarning(f"radmesh hook: announcing the {what}")
                send(DELETED_HOOK_URL, event, what)
        except Exception as exc:  # never let the worker die
            orthanc.LogError(f"radmesh hook: unexpected error announcing deletions: {exc!r}")


def _worker() -> None:
    while True:
        study_id = _queue.get()
        if study_id is None or _stopping.is_set():
            return
        try:
            deliver(study_id)
        except Exception as exc:  # never let the worker die
            orthanc.LogError(f"radmesh hook: unexpected error for study {study_id}: {exc!r}")


_thread = threading.Thread(target=_worker, name="radmesh-pacs-hook", daemon=True)
_changes_thread = threading.Thread(target=_changes_worker, name="radmesh-pacs-changes", daemon=True)
_LEVELS = {
    orthanc.ResourceType.STUDY: "study",
    orthanc.ResourceType.SERIES: "series",
    orthanc.ResourceType.INSTANCE: "instance",
}


def on_change(change_type: int, level: int, resource_id: str) -> None:
    if change_type == orthanc.ChangeType.STABLE_STUDY:
        if HOOK_URL:
            _queue.put(resource_id)
    elif change_type == orthanc.ChangeType.NEW_INSTANCE:
        if DELETED_HOOK_URL and _db is not None:
            _changes.put(("new", resource_id))
    elif change_type == orthanc.ChangeType.DELETED:
        name = _LEVELS.get(level)
        if DELETED_HOOK_URL and _db is not None and name is not None:
            _changes.put((f"deleted:{name}", resource_id))
    elif change_type == orthanc.ChangeType.ORTHANC_STARTED:
        for thread in (_thread, _changes_thread):
            if not thread.is_alive():
                thread.start()
    elif change_type == orthanc.ChangeType.ORTHANC_STOPPED:
        _stopping.set()
        _queue.put(None)
        _changes.put(None)
        for thread in (_thread, _changes_thread):
            if thread.is_alive():
                thread.join(timeout=3)


_db = _open_db()
if HOOK_URL:
    orthanc.LogWarning(f"radmesh hook: stable studies are announced to {HOOK_URL}")
else:
    orthanc.LogWarning("radmesh hook: RADMESH_PACS_HOOK_URL is empty, no events are sent")
if DELETED_HOOK_URL and _db is not None:
    orthanc.LogWarning(f"radmesh hook: deletions are announced to {DELETED_HOOK_URL}")
else:
    orthanc.LogWarning("radmesh hook: no RADMESH_PACS_HOOK_DB, deletions are not announced")
orthanc.RegisterOnChangeCallback(on_change)
