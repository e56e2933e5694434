"""Finding the SR documents of a stable study that another AI product stored in the PACS: the
instances of its SR series whose SOP class can hold a TID 1500 Measurement Report (Enhanced,
Comprehensive, Comprehensive 3D SR) and whose Manufacturer (QIDO-RS) is not radmesh. radmesh's
own SRs never leave this module: they are the output of a run, not the input of one.

Which product made a report, and whether radmesh imports it, is the mapper's to say
(services/mapper/imports.py): it is in the Contributing Equipment Sequence, which QIDO-RS does
not return."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from pydicom.uid import Comprehensive3DSRStorage, ComprehensiveSRStorage, EnhancedSRStorage

from services.subscriber.hook_bodies import StableSeries
from shared.dicomweb import DicomWebClient
from shared.iocm import RADMESH_MANUFACTURER

__all__ = ["MEASUREMENT_REPORT_SOP_CLASSES", "ReportInstance", "ReportsSeen", "new_reports"]

# The SR storage SOP classes a TID 1500 Measurement Report may be stored in (PS3.16 TID 1500).
MEASUREMENT_REPORT_SOP_CLASSES = frozenset(
    {str(EnhancedSRStorage), str(ComprehensiveSRStorage), str(Comprehensive3DSRStorage)}
)
_SR_MODALITY = "SR"


@dataclass(frozen=True)
class ReportInstance:
    """One SR document in the PACS that radmesh did not write."""

    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str


class ReportsSeen:
    """The SR documents this subscriber announced lately (SOP Instance UID → when): the PACS
    announces a study again whenever something is stored into it, and the report is the same.
    Forgotten after `window_seconds`; an announcement again is harmless (the mapper's writes
    are conditional creates), only wasted work."""

    def __init__(self, window_seconds: float) -> None:
        self.window_seconds = window_seconds
        self._seen: dict[str, float] = {}

    def __contains__(self, sop_instance_uid: object) -> bool:
        now = time.monotonic()
        for uid, when in list(self._seen.items()):
            if now - when > self.window_seconds:
                del self._seen[uid]
        return sop_instance_uid in self._seen

    def add(self, sop_instance_uid: str) -> None:
        self._seen[sop_instance_uid] = time.monotonic()


async def new_reports(
    dicomweb: DicomWebClient,
    study_instance_uid: str,
    series: Iterable[StableSeries],
    seen: ReportsSeen,
) -> list[ReportInstance]:
    """The SR documents of the study's SR series that another product wrote and that were not
    announced lately (one QIDO-RS instance search per SR series)."""
    found: list[ReportInstance] = []
    for stable in series:
        if stable.modality != _SR_MODALITY:
            continue
        instances = await dicomweb.search_instances(study_instance_uid, stable.series_instance_uid)
        found += [
            ReportInstance(
                stable.series_instance_uid, instance.sop_instance_uid, instance.sop_class_uid
            )
            for instance in instances
            if instance.sop_class_uid in MEASUREMENT_REPORT_SOP_CLASSES
            and instance.manufacturer != RADMESH_MANUFACTURER
            and instance.sop_instance_uid not in seen
        ]
    return found
