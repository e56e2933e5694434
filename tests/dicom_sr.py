"""Reading a DICOM SR's (or KOS's) content tree in the tests."""

from __future__ import annotations

from typing import Any

__all__ = ["content_items"]


def content_items(dataset: Any) -> list[Any]:
    """Every content item of the tree, depth first."""
    items: list[Any] = []
    for item in dataset.get("ContentSequence", []):
        items.append(item)
        items.extend(content_items(item))
    return items
