"""services.inference.handlers: what a study.fetched must name before a model is run, and the
evidence an inference.completed names."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.inference.handlers import RunModel, evidence_of
from shared.errors import InvalidMessage
from shared.messages import BlobInstance, ModelRef, SeriesManifest, StudyFetched, StudyRef
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


def test_the_evidence_names_every_instance_read_grouped_by_sop_class_in_manifest_order() -> None:
    """Each instance of the series the model read is named once, under its own SOP class, in
    the manifest's order (what the mapper's SR references without asking the PACS)."""
    ct, enhanced = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1"
    classes = (ct, ct, enhanced, ct)
    series = SeriesManifest(
        series_instance_uid="1.2.3.4",
        modality="CT",
        instances=tuple(
            BlobInstance(
                sop_instance_uid=f"1.2.3.4.{number}",
                sop_class_uid=sop_class,
                blob_key=f"key-{number}",
                size_bytes=10,
            )
            for number, sop_class in enumerate(classes, start=1)
        ),
    )
    evidence = evidence_of(series)
    assert [(e.series_instance_uid, e.sop_class_uid, e.sop_instance_uids) for e in evidence] == [
        ("1.2.3.4", ct, ("1.2.3.4.1", "1.2.3.4.2", "1.2.3.4.4")),
        ("1.2.3.4", enhanced, ("1.2.3.4.3",)),
    ]
