"""The key images of a finding: which slices (from the Observation's image extension), where on
them (its centre voxel), and how to window them for people (by the model's body part).

The pictures themselves come from the PACS's WADO-RS `/rendered` (shared/dicomweb.py); only an
instance a finding of the Task names is ever fetched.
"""

from __future__ import annotations

from typing import Any

from shared.identifiers import DICOM_IMAGE_EXTENSION

__all__ = ["DEFAULT_WINDOW", "WINDOWS", "display_window", "image_references"]

# CT windows (center, width in HU) a radiologist would start from, by DICOM Body Part Examined.
_BRAIN = (40.0, 80.0)
_LUNG = (-600.0, 1500.0)
WINDOWS = {
    "HEAD": _BRAIN,
    "BRAIN": _BRAIN,
    "CHEST": _LUNG,
    "LUNG": _LUNG,
    "THORAX": _LUNG,
}
DEFAULT_WINDOW = (40.0, 400.0)  # soft tissue


def display_window(body_parts: tuple[str, ...] | list[str]) -> tuple[float, float]:
    """The window of the first body part that has one; soft tissue otherwise."""
    return next((WINDOWS[part] for part in body_parts if part in WINDOWS), DEFAULT_WINDOW)


def _uid(value: Any) -> str | None:
    return value.removeprefix("urn:oid:") if isinstance(value, str) else None


def image_references(observation: dict[str, Any]) -> list[dict[str, Any]]:
    """[{series, sop, centre}] of each instance the Observation's image extension names;
    centre is [z, y, x] voxel indices (or None)."""
    found: list[dict[str, Any]] = []
    for extension in observation.get("extension", []):
        if extension.get("url") != DICOM_IMAGE_EXTENSION:
            continue
        parts = extension.get("extension", [])
        series = next(
            (_uid(p.get("valueOid")) for p in parts if p.get("url") == "seriesInstanceUid"), None
        )
        centre_text = next(
            (p.get("valueString") for p in parts if p.get("url") == "centreVoxel"), None
        )
        centre: list[float] | None = None
        if isinstance(centre_text, str):
            try:
                centre = [float(v) for v in centre_text.split()]
            except ValueError:
                centre = None
        for part in parts:
            sop = _uid(part.get("valueOid")) if part.get("url") == "sopInstanceUid" else None
            if series and sop:
                found.append({"series": series, "sop": sop, "centre": centre})
    return found
