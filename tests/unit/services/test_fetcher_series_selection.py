"""services.fetcher.series_selection: the largest series a selector accepts, with as few
instance-level searches of the PACS as the selector allows."""

from __future__ import annotations

from typing import cast

from services.fetcher.series_selection import select_series
from shared.dicomweb import DicomWebClient, SeriesInfo
from shared.registry import Selector

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
SELECTOR = Selector(modalities=("CT",), body_parts=("HEAD",), sop_class_uids=(CT_IMAGE,))


class Pacs:
    """Answers whether each series holds one of the SOP classes asked for from `classes`,
    recording which series were asked."""

    def __init__(self, classes: dict[str, set[str]]) -> None:
        self.classes = classes
        self.asked: list[str] = []

    async def series_holds_sop_class(
        self, study: str, series: str, sop_class_uids: tuple[str, ...]
    ) -> bool:
        self.asked.append(series)
        return bool(self.classes[series] & set(sop_class_uids))


async def test_only_series_that_meet_the_other_conditions_are_searched_for_sop_classes() -> None:
    """radmesh's own SR series and a chest series fail on modality and body part: the PACS is
    asked for the SOP classes of the head CT series alone, and that series is chosen."""
    series = [
        SeriesInfo("1.1", "SR", None, "radmesh AI results", number_of_instances=1),
        SeriesInfo("1.2", "CT", "CHEST", "Chest", number_of_instances=200),
        SeriesInfo("1.3", "CT", "HEAD", "Axial brain", number_of_instances=32),
    ]
    pacs = Pacs({"1.3": {CT_IMAGE}})
    chosen = await select_series(cast(DicomWebClient, pacs), "1", series, SELECTOR)
    assert chosen is not None and chosen.series_instance_uid == "1.3"
    assert pacs.asked == ["1.3"]


async def test_a_series_of_another_sop_class_is_not_chosen_however_large() -> None:
    """Two head CT series: the larger holds only Enhanced CT images, not the model's class; the
    smaller is chosen."""
    series = [
        SeriesInfo("2.1", "CT", "HEAD", "Enhanced", number_of_instances=300),
        SeriesInfo("2.2", "CT", "HEAD", "Axial brain", number_of_instances=32),
    ]
    pacs = Pacs({"2.1": {"1.2.840.10008.5.1.4.1.1.2.1"}, "2.2": {CT_IMAGE}})
    chosen = await select_series(cast(DicomWebClient, pacs), "2", series, SELECTOR)
    assert chosen is not None and chosen.series_instance_uid == "2.2"
    assert sorted(pacs.asked) == ["2.1", "2.2"]
