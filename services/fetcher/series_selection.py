"""Which series of a study a model reads: the largest one its registry selector accepts."""

from __future__ import annotations

from shared.dicomweb import DicomWebClient, SeriesInfo
from shared.registry import Selector, SeriesSummary


async def select_series(
    client: DicomWebClient, study_instance_uid: str, series: list[SeriesInfo], selector: Selector
) -> SeriesInfo | None:
    """The matching series with the most instances (SOP classes asked of QIDO-RS only if needed)."""
    matching: list[SeriesInfo] = []
    for candidate in series:
        sop_class_uids: tuple[str, ...] = ()
        if selector.sop_class_uids:
            sop_class_uids = tuple(
                sorted(
                    await client.search_instance_sop_classes(
                        study_instance_uid, candidate.series_instance_uid
                    )
                )
            )
        summary = SeriesSummary(
            modality=candidate.modality,
            body_part_examined=candidate.body_part_examined,
            series_description=candidate.series_description,
            sop_class_uids=sop_class_uids,
            number_of_instances=candidate.number_of_instances,
        )
        if selector.matches(summary):
            matching.append(candidate)
    return max(matching, key=lambda info: info.number_of_instances, default=None)
