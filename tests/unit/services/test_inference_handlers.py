"""services.inference.handlers: what a study.fetched must name before a model is run."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.inference.handlers import RunModel
from shared.errors import InvalidMessage
from shared.messages import ModelRef, StudyFetched, StudyRef
from shared.registry import load_registry
from shared.storage import BlobStore

REGISTRY = load_registry(Path(__file__).resolve().parents[3] / "registry" / "models.yaml")


async def test_a_study_fetched_without_series_is_an_invalid_message(tmp_path: Path) -> None:
    """No series to read is an InvalidMessage saying so (dead-lettered at once), not the
    IndexError it was (dead-lettered as a bug)."""
    event = StudyFetched(
        study=StudyRef(study_instance_uid="1.2.3"),
        model=ModelRef(id="ich-reference", version="1"),
        series=(),
        fetch_duration_ms=1.0,
    )
    with pytest.raises(InvalidMessage, match="names no series"):
        await RunModel(REGISTRY, BlobStore(tmp_path))(event)
