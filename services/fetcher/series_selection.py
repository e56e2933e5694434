"""Which series of a study a model reads: the largest one its registry selector accepts."""

from __future__ import annotations

from shared.dicomweb import DicomWebClient, SeriesInfo
from shared.registry import Selector, SeriesSummary


async def select_series(
    client: DicomWebClient, study_instance_uid: str, series: list[SeriesInfo], selector: Selector
) -> SeriesInfo | None:
    """The matching series with the most instances. Whether it holds an instance of the
    selector's SOP classes is asked of QIDO-RS (an instance-level search) only for a series that
    meets every other condition of the selector, and only when the selector names SOP classes."""
    without_classes = selector.model_copy(update={"sop_class_uids": ()})
    matching: list[SeriesInfo] = []
    for candidate in series:
        summary = SeriesSummary(
            modality=candidate.modality,
            body_part_examined=candidate.body_part_examined,
            series_description=candidate.series_description,
            number_of_instances=candidate.number_of_instances,
        )
        if not without_classes.matches(summary):
            continue
        if selector.sop_class_uids and not await client.series_holds_sop_class(
            study_instance_uid, candidate.series_instance_uid, selector.sop_class_uids
        ):
            continue
        matching.append(candidate)
    return max(matching, key=lambda info: info.number_of_instances, default=None)
