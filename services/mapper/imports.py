"""structured-report.detected → another AI product's SR read from the PACS → the same FHIR
results a model run gets (MapResults) → results.posted, so the verification Task, the alert
rules and every verdict apply to it as to radmesh's own models.

The SR is read with WADO-RS metadata (its content tree is in it; no bulk data needed). It is
imported when one of its makers (third_party_sr.makers) is a product the registry's
`imports` declares at that version; the run is that product's, generation 1, its Provenance
naming the SR as a source. Not imported, logged with the reason and counted
(`radmesh_structured_reports_not_imported_total{reason}`), never silently: radmesh's own SRs
(Manufacturer radmesh, or a maker that is one of the registry's models), a product the
registry does not import, an SR with no finding the registry maps. An SR radmesh cannot read
is dead-lettered with the reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

from services.mapper.handlers import MapResults
from services.mapper.structured_report import dataset_from_metadata
from services.mapper.third_party_sr import (
    ProducingEquipment,
    makers,
    read_measurement_report,
)
from shared.dicomweb import DicomWebClient
from shared.errors import PermanentError
from shared.iocm import RADMESH_MANUFACTURER
from shared.messages import Event, InferenceCompleted, ModelRef, StructuredReportDetected
from shared.metrics import REPORTS_NOT_IMPORTED
from shared.registry import ImportedAlgorithm, Registry

__all__ = ["ImportResults"]

log = structlog.get_logger(__name__)


def _not_imported(kind: str, reason: str, **fields: object) -> list[Event]:
    REPORTS_NOT_IMPORTED.labels(reason=kind).inc()
    log_method = log.info if kind == "radmesh-own" else log.warning
    log_method("structured_report_not_imported", kind=kind, reason=reason, **fields)
    return []


class ImportResults:
    """Handler of structured-report.detected (see the module)."""

    def __init__(self, registry: Registry, dicomweb: DicomWebClient, results: MapResults) -> None:
        self.registry = registry
        self.dicomweb = dicomweb
        self.results = results

    def _own(self, maker: ProducingEquipment) -> bool:
        """Whether the maker is one of radmesh's models (its SR's Contributing Equipment)."""
        return any(
            (model.manufacturer, model.id) == (maker.manufacturer, maker.manufacturer_model_name)
            for model in self.registry.models
        )

    def _imported(self, found: list[ProducingEquipment]) -> ImportedAlgorithm | None:
        """The registry's product that the first maker it knows is, or None."""
        for maker in found:
            try:
                return self.registry.imported(
                    maker.manufacturer, maker.manufacturer_model_name, maker.software_version
                )
            except KeyError:
                continue
        return None

    async def __call__(self, event: StructuredReportDetected) -> Sequence[Event]:
        study_uid = event.study.study_instance_uid
        metadata = await self.dicomweb.retrieve_instance_metadata(
            study_uid, event.series_instance_uid, event.sop_instance_uid
        )
        if metadata is None:
            raise PermanentError(
                f"the PACS answered no metadata for SR {event.sop_instance_uid}; "
                "message dead-lettered"
            )
        dataset = dataset_from_metadata(metadata)
        uid = event.sop_instance_uid
        found = makers(dataset)
        if str(dataset.get("Manufacturer", "")) == RADMESH_MANUFACTURER or any(
            self._own(maker) for maker in found
        ):
            return _not_imported("radmesh-own", "radmesh wrote it", sop_instance_uid=uid)
        if not found:
            return _not_imported(
                "maker-unknown",
                "neither its Contributing Equipment nor its General Equipment names a "
                "manufacturer and a model",
                sop_instance_uid=uid,
            )
        algorithm = self._imported(found)
        if algorithm is None:
            named = "; ".join(
                f"{m.manufacturer} {m.manufacturer_model_name} {m.software_version}".strip()
                for m in found
            )
            return _not_imported(
                "product-not-imported",
                f"made by {named}: no product of the registry's imports (add it there to map "
                "its results)",
                sop_instance_uid=uid,
            )
        content = await asyncio.to_thread(read_measurement_report, dataset, algorithm)
        if content.unmapped:
            log.warning(
                "measurement_groups_not_imported",
                model=algorithm.id,
                groups=content.unmapped,
                reason="their Finding is none of the codes the registry maps for this product",
            )
        if not content.findings:
            return _not_imported(
                "no-mapped-finding",
                f"none of its {content.unmapped} measurement groups is a finding the registry "
                f"maps for {algorithm.id} {algorithm.version}",
                sop_instance_uid=uid,
            )
        completed = event.follow(
            InferenceCompleted,
            study=event.study,
            model=ModelRef(id=algorithm.id, version=algorithm.version),
            findings=content.findings,
            inference_duration_ms=0.0,
            evidence=content.evidence,
            source_report=uid,
        )
        log.info(
            "structured_report_imported",
            model=algorithm.id,
            version=algorithm.version,
            sop_instance_uid=uid,
            findings=len(content.findings),
        )
        return await self.results.post(completed, cause=event)
