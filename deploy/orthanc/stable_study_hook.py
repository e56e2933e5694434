"""Orthanc Python plugin: announces every stable study to radmesh with a signed webhook.

Loaded by Orthanc itself (PythonScript in the generated config) and run by Debian's system
python3, so it uses the standard library only. On ChangeType.STABLE_STUDY it queues the study;
a background thread reads the study from Orthanc's REST API, builds a JSON event without any
patient-identifying data and POSTs it to $RADMESH_PACS_HOOK_URL with

    X-Radmesh-Signature: sha256=<hex HMAC-SHA256 of the raw body, key $RADMESH_PACS_HOOK_SECRET>

retrying with backoff. Orthanc's change thread is never blocked by the network.
See deploy/orthanc/README.md for the event's shape.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import queue
import threading
import urllib.error
import urllib.request
from typing import Any

import orthanc  # type: ignore[import-not-found]  # provided by Orthanc at run time

EVENT_TYPE = "stable-study"
SCHEMA_VERSION = 1
SIGNATURE_HEADER = "X-Radmesh-Signature"

HOOK_URL = os.environ.get("RADMESH_PACS_HOOK_URL", "")
HOOK_SECRET = os.environ.get("RADMESH_PACS_HOOK_SECRET", "").encode("utf-8")
ATTEMPTS = int(os.environ.get("RADMESH_PACS_HOOK_ATTEMPTS", "5"))
TIMEOUT_S = float(os.environ.get("RADMESH_PACS_HOOK_TIMEOUT", "5"))
HTTP_PORT = os.environ.get("RADMESH_ORTHANC_HTTP_PORT", "8042")
DICOMWEB_ROOT = f"http://127.0.0.1:{HTTP_PORT}/dicom-web"
# Per-instance SOP class look-ups are local and cheap, but bounded for huge series: past this
# many instances only the first and last instance of a series are sampled.
SOP_CLASS_SCAN_LIMIT = 500

_queue: queue.Queue[str | None] = queue.Queue()
_stopping = threading.Event()


def _get_json(uri: str) -> Any:
    return json.loads(orthanc.RestApiGet(uri))


def _sop_class(instance_id: str) -> str | None:
    try:
        value = orthanc.RestApiGet(f"/instances/{instance_id}/metadata/SopClassUid")
    except Exception:  # metadata missing (should not happen for stored instances)
        return None
    text = value.decode("utf-8") if isinstance(value, bytes) else str(value)
    return text.strip() or None


def build_event(study_id: str) -> dict[str, Any]:
    """The event for one Orthanc study: identifiers, counts and what kinds of objects it holds."""
    study = _get_json(f"/studies/{study_id}")
    tags = study.get("MainDicomTags", {})
    series_out: list[dict[str, Any]] = []
    all_sop: set[str] = set()
    modalities: set[str] = set()
    for series_id in study.get("Series", []):
        series = _get_json(f"/series/{series_id}")
        stags = series.get("MainDicomTags", {})
        instances: list[str] = list(series.get("Instances", []))
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
    return {
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


def sign(body: bytes) -> str:
    """Header value: 'sha256=' + hex HMAC-SHA256 of the exact request body."""
    return "sha256=" + hmac.new(HOOK_SECRET, body, hashlib.sha256).hexdigest()


def _post(body: bytes, event_id: str) -> None:
    request = urllib.request.Request(
        HOOK_URL,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(body),
            "X-Radmesh-Event": EVENT_TYPE,
            "X-Radmesh-Event-Id": event_id,
            "User-Agent": "radmesh-orthanc-hook/1",
        },
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        response.read()


def deliver(study_id: str) -> None:
    try:
        event = build_event(study_id)
    except Exception as exc:  # the study may have been deleted meanwhile
        orthanc.LogError(f"radmesh hook: cannot describe study {study_id}: {exc!r}")
        return
    body = json.dumps(event, separators=(",", ":"), sort_keys=True).encode("utf-8")
    delay = 0.5
    for attempt in range(1, ATTEMPTS + 1):
        try:
            _post(body, event["event_id"])
            orthanc.LogInfo(f"radmesh hook: study {study_id} delivered (attempt {attempt})")
            return
        except urllib.error.HTTPError as exc:
            error = f"HTTP {exc.code}"
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                orthanc.LogError(f"radmesh hook: {HOOK_URL} refused study {study_id}: {error}")
                return
        except Exception as exc:  # connection refused, timeout, ...
            error = repr(exc)
        orthanc.LogWarning(
            f"radmesh hook: delivery of study {study_id} failed (attempt {attempt}/{ATTEMPTS}): "
            f"{error}"
        )
        if attempt == ATTEMPTS or _stopping.wait(delay):
            break
        delay = min(delay * 2, 10.0)
    orthanc.LogError(f"radmesh hook: giving up on study {study_id} after {ATTEMPTS} attempts")


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


def on_change(change_type: int, level: int, resource_id: str) -> None:
    if change_type == orthanc.ChangeType.STABLE_STUDY:
        if HOOK_URL:
            _queue.put(resource_id)
    elif change_type == orthanc.ChangeType.ORTHANC_STARTED:
        if not _thread.is_alive():
            _thread.start()
    elif change_type == orthanc.ChangeType.ORTHANC_STOPPED:
        _stopping.set()
        _queue.put(None)
        if _thread.is_alive():
            _thread.join(timeout=3)


if HOOK_URL:
    orthanc.LogWarning(f"radmesh hook: stable studies are announced to {HOOK_URL}")
else:
    orthanc.LogWarning("radmesh hook: RADMESH_PACS_HOOK_URL is empty, no events are sent")
orthanc.RegisterOnChangeCallback(on_change)
