"""Which models read which series of a study, and why the others do not — from the PACS.

One home for turning QIDO-RS answers into what a registry selector looks at (`SeriesSummary`),
used by the subscriber (an ImagingStudy that lists no series) and by `radmesh route <study>`,
which prints the routing decision with the reason for every model that does not apply."""

from __future__ import annotations

from dataclasses import dataclass

from shared.dicomweb import DicomWebClient, SeriesInfo
from shared.iocm import rejected_series
from shared.registry import Registry, SeriesSummary

__all__ = ["StudySeries", "route_lines", "study_series"]


@dataclass(frozen=True)
class StudySeries:
    info: SeriesInfo
    summary: SeriesSummary
    rejected: bool = False  # an IOCM rejection note in the PACS rejects it


async def study_series(dicomweb: DicomWebClient, study_instance_uid: str) -> list[StudySeries]:
    """Every series of the study in the PACS as a selector sees it (SOP classes and instance
    counts from QIDO-RS per series), marked when a rejection note rejects it."""
    found = await dicomweb.search_series(study_instance_uid)
    notes = await dicomweb.rejection_notes(
        study_instance_uid, [(info.series_instance_uid, info.modality) for info in found]
    )
    rejected = rejected_series(notes)
    series = []
    for info in found:
        instances = await dicomweb.search_instances(study_instance_uid, info.series_instance_uid)
        summary = SeriesSummary(
            modality=info.modality,
            body_part_examined=info.body_part_examined,
            series_description=info.series_description,
            sop_class_uids=tuple(sorted({i.sop_class_uid for i in instances})),
            number_of_instances=len(instances),
        )
        series.append(StudySeries(info, summary, info.series_instance_uid in rejected))
    return series


def route_lines(registry: Registry, series: list[StudySeries]) -> list[str]:
    """The routing decision as lines for people: the series, then each model with the series
    it reads or, per series, why not."""
    lines = [f"{len(series)} series in the PACS:"]
    for item in series:
        summary = item.summary
        lines.append(
            f"  {item.info.series_instance_uid}: {summary.modality or '?'} "
            f"{summary.body_part_examined or '(no body part)'} "
            f"{summary.series_description or '(no description)'!r}, "
            f"{summary.number_of_instances} instances"
            + ("  [rejected by an IOCM rejection note]" if item.rejected else "")
        )
    usable = [item for item in series if not item.rejected]
    for model, reasons in registry.routes([item.summary for item in usable]):
        reads = [item for item, reason in zip(usable, reasons, strict=True) if reason is None]
        head = f"{model.id} {model.version} ({model.rollout})"
        if reads:
            uids = ", ".join(item.info.series_instance_uid for item in reads)
            lines.append(f"{head}: applies; reads {uids}")
            continue
        lines.append(f"{head}: does not apply")
        for item, reason in zip(usable, reasons, strict=True):
            lines.append(f"  {item.info.series_instance_uid}: {reason}")
        for item in series:
            if item.rejected:
                lines.append(f"  {item.info.series_instance_uid}: rejected in the PACS")
    return lines
