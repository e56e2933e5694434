"""services.mapper.imports: which SRs in the PACS become FHIR results, with a fake PACS answering
the SR's metadata and a fake FHIR server (tests/unit/services/test_mapper_handlers.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
from prometheus_client import REGISTRY as METRICS
from pydicom import Dataset

from samples.dicom_series import describe_study, iter_instances
from samples.phantoms import head_ct
from services.mapper.handlers import MapResults
from services.mapper.imports import ImportResults
from services.mapper.structured_report import dataset_from_metadata
from shared.dicomweb import DicomWebClient
from shared.fhir import FhirClient
from shared.iocm import RADMESH_MANUFACTURER
from shared.messages import ResultsPosted, StructuredReportDetected, StudyRef
from shared.metrics import REPORTS_NOT_IMPORTED
from shared.registry import load_registry
from tests.unit.services.test_mapper_handlers import FakeFhir
from tests.vendor_sr import volumetric_sr

REGISTRY = load_registry(Path(__file__).resolve().parents[3] / "registry" / "models.yaml")


class FakePacs:
    """Answers one instance's WADO-RS metadata: the SR's."""

    def __init__(self, document: Dataset) -> None:
        self.metadata = document.to_json_dict()

    async def retrieve_instance_metadata(
        self, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str
    ) -> dict[str, Any]:
        return self.metadata


@pytest.fixture(scope="module")
def images() -> list[Dataset]:
    phantom = head_ct(seed=4, slices=8, size=32)
    info = describe_study(phantom, scenario="imports-unit", seed=4)
    return [dataset_from_metadata(ds.to_json_dict()) for ds in list(iter_instances(phantom, info))]


async def _import(document: Dataset) -> tuple[list[Any], FakeFhir]:
    fhir = FakeFhir()
    results = MapResults(REGISTRY, cast(FhirClient, fhir), None)
    handler = ImportResults(REGISTRY, cast(DicomWebClient, FakePacs(document)), results)
    event = StructuredReportDetected(
        study=StudyRef(
            study_instance_uid=str(document.StudyInstanceUID),
            imaging_study="ImagingStudy/s",
            patient="Patient/p",
        ),
        series_instance_uid=str(document.SeriesInstanceUID),
        sop_instance_uid=str(document.SOPInstanceUID),
        sop_class_uid=str(document.SOPClassUID),
    )
    return list(await handler(event)), fhir


def _not_imported(kind: str) -> float:
    """radmesh_structured_reports_not_imported_total{reason=kind}, as /metrics shows it."""
    REPORTS_NOT_IMPORTED.labels(reason=kind)  # the sample exists from here on
    value = METRICS.get_sample_value(
        "radmesh_structured_reports_not_imported_total", {"reason": kind}
    )
    return float(value or 0.0)


async def test_the_registrys_product_is_posted_as_its_own_run_naming_the_sr(
    images: list[Dataset],
) -> None:
    """One transaction for the product's run (its Device, Observations, report, Provenance with
    the SR as a source), then results.posted with the critical finding, caused by the detection."""
    document = volumetric_sr(images[:4])
    published, fhir = await _import(document)
    (posted,) = published
    assert isinstance(posted, ResultsPosted)
    assert (posted.model.id, posted.model.version) == ("vendor-ich-triage", "2.4")
    assert [f.critical for f in posted.findings] == [True, False]
    (bundle,) = fhir.transactions
    (provenance,) = [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Provenance"
    ]
    sources = [entity["what"].get("identifier", {}).get("value") for entity in provenance["entity"]]
    assert f"urn:oid:{document.SOPInstanceUID}" in sources


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        ("radmesh", "radmesh-own"),
        ("radmesh-model", "radmesh-own"),
        ("other-product", "product-not-imported"),
        ("no-maker", "maker-unknown"),
    ],
)
async def test_an_sr_radmesh_does_not_import_writes_nothing_and_is_counted(
    images: list[Dataset], change: str, kind: str
) -> None:
    """radmesh's own SR (by its Manufacturer, or a maker that is one of its models), another
    product's, or one naming no maker: nothing written, nothing published, counted by reason."""
    document = volumetric_sr(images[:4])
    vendor = document.ContributingEquipmentSequence[1]
    if change == "radmesh":
        document.Manufacturer = RADMESH_MANUFACTURER
    elif change == "radmesh-model":
        model = REGISTRY.get("ich-reference", "1")
        vendor.Manufacturer, vendor.ManufacturerModelName = model.manufacturer, model.id
    elif change == "other-product":
        vendor.ManufacturerModelName = "Bone Age"
    else:
        del document.ContributingEquipmentSequence
    before = _not_imported(kind)
    published, fhir = await _import(document)
    assert published == []
    assert fhir.transactions == []
    assert _not_imported(kind) == before + 1
