"""services.fetcher.handlers: a series the PACS serves only in part is not handed to a model."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from services.fetcher.handlers import FetchStudy
from services.fetcher.pacs import PacsDirectory
from shared.dicomweb import DicomWebClient, RetrievedInstance, SeriesInfo
from shared.errors import TransientError
from shared.messages import ModelRef, StudyDetected, StudyFetched, StudyRef
from shared.registry import load_registry
from shared.storage import BlobStore

REGISTRY = load_registry(Path(__file__).resolve().parents[3] / "registry" / "models.yaml")
SERIES = SeriesInfo("1.2.3.1", "CT", "HEAD", "Axial brain", number_of_instances=32)


class PartialPacs:
    """QIDO-RS lists 32 instances; WADO-RS serves `served` of them."""

    base_url = "http://pacs.example/dicom-web"

    def __init__(self, served: int) -> None:
        self.served = served

    async def search_series(self, study_instance_uid: str) -> list[SeriesInfo]:
        return [SERIES]

    async def series_holds_sop_class(
        self, study: str, series: str, sop_class_uids: tuple[str, ...]
    ) -> bool:
        return "1.2.840.10008.5.1.4.1.1.2" in sop_class_uids

    async def rejection_notes(self, study_instance_uid: str, series: Any) -> list[Any]:
        return []

    async def retrieve_series(
        self, study: str, series: str, store: BlobStore, prefix: str
    ) -> list[RetrievedInstance]:
        return [
            RetrievedInstance(
                f"1.2.3.1.{n}", "1.2.840.10008.5.1.4.1.1.2", n, f"{prefix}/instances", 10 * n, 10
            )
            for n in range(self.served)
        ]


def _handler(tmp_path: Path, served: int) -> FetchStudy:
    pacs = cast(DicomWebClient, PartialPacs(served))
    return FetchStudy(REGISTRY, pacs, BlobStore(tmp_path), PacsDirectory(pacs))


DETECTED = StudyDetected(
    study=StudyRef(study_instance_uid="1.2.3"),
    models=(ModelRef(id="ich-reference", version="1"),),
    source="manual",
)


async def test_a_series_served_in_part_is_fetched_again_later(tmp_path: Path) -> None:
    """30 of 32 listed instances: a transient error (retried; the PACS may still be receiving),
    never a study.fetched with a partial volume."""
    with pytest.raises(TransientError, match="QIDO-RS lists 32 instances, WADO-RS returned 30"):
        await _handler(tmp_path, 30)(DETECTED)


async def test_a_series_served_whole_is_handed_on(tmp_path: Path) -> None:
    (fetched,) = await _handler(tmp_path, 32)(DETECTED)
    assert isinstance(fetched, StudyFetched)
    assert len(fetched.series[0].instances) == 32
