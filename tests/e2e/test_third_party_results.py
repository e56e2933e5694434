"""Another AI product's results in, FHIR out: a TID 1500 SR that a third-party product stores into
the PACS (made by tests/vendor_sr.py, not by radmesh's writer) becomes the same FHIR results,
verification Task and critical alert as radmesh's own models give; an SR of a product the
registry does not import is logged and left alone; radmesh's own SRs never come back in."""

from __future__ import annotations

import asyncio
import io
import random
from typing import Any

import highdicom as hd
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import Dataset
from pydicom.filewriter import dcmwrite

from samples.load import LoadResult, Settings, load_study
from samples.mesh_watch import MeshWatcher, StudyProgress
from services.mapper.structured_report import dataset_from_metadata
from shared.codes import PRESENT
from shared.iocm import RADMESH_MANUFACTURER
from shared.messages import ResultsPosted, StructuredReportDetected
from tests.e2e.conftest import Mesh
from tests.fhir_validators import fhir_js, fhir_resources, hapi_validate
from tests.vendor_sr import VENDOR_VERSION, volumetric_sr
from tests.waiting import until

pytestmark = pytest.mark.integration

PRODUCT = "vendor-ich-triage"


def _part10(document: Dataset) -> bytes:
    buffer = io.BytesIO()
    dcmwrite(buffer, document, enforce_file_format=True)
    return buffer.getvalue()


def _source_images(client: DICOMwebClient, loaded: LoadResult) -> list[Dataset]:
    """Four slices of the study, as the PACS describes them (the vendor's SR evidence)."""
    metadata = client.retrieve_series_metadata(
        loaded.study_instance_uid, loaded.series_instance_uid
    )
    images = sorted(
        (dataset_from_metadata(item) for item in metadata), key=lambda ds: int(ds.InstanceNumber)
    )
    return images[:4]


def _radmesh_reports(client: DICOMwebClient, study_instance_uid: str) -> set[str]:
    """The SOP Instance UIDs of the SRs radmesh stored in the study."""
    found = client.search_for_instances(
        study_instance_uid,
        search_filters={"Modality": "SR"},
        fields=["00080070"],
    )
    return {
        str(item["00080018"]["Value"][0])
        for item in found
        if RADMESH_MANUFACTURER in (item.get("00080070") or {}).get("Value", [])
    }


async def _analysed_then_imported(
    mesh: Mesh, client: DICOMwebClient
) -> tuple[LoadResult, StudyProgress, Dataset, Dataset]:
    """A clean head CT through the mesh (radmesh's model finds nothing, its SR is stored), then
    two SRs of other products stored into the study: the registry's vendor (a hemorrhage), and
    one it does not know; returns when the vendor's results have their Task and alert."""
    watcher = MeshWatcher(mesh.settings.broker.url, mesh.settings.broker.exchange, mesh.direct_fhir)
    await watcher.start()
    try:
        loaded = await asyncio.to_thread(
            load_study,
            "head-normal",
            settings=Settings.from_env(),
            seed=random.randrange(10**7, 10**8),
        )
        progress = watcher.track(loaded.study_instance_uid)
        assert not await watcher.wait(120), progress.missing()
        images = await asyncio.to_thread(_source_images, client, loaded)
        vendor = volumetric_sr(images, probability=0.93, volume_ml=4.5, centre_slice=1)
        unknown = volumetric_sr(images)
        for equipment in (unknown.ContributingEquipmentSequence[1], unknown):
            equipment.Manufacturer = "Another AI Company"
        unknown.ContributingEquipmentSequence[1].ManufacturerModelName = "Bone Age"
        await asyncio.to_thread(client.store_instances, [vendor, unknown])

        async def imported() -> bool:
            await watcher.poll()
            return any(posted.model.id == PRODUCT for posted in progress.of_type("results.posted"))

        await until(imported, "the mapper imports the vendor's SR", seconds=120)
        assert not await watcher.wait(120), progress.missing()
    finally:
        await watcher.stop()
    return loaded, progress, vendor, unknown


@pytest.fixture(scope="module")
def pacs(mesh: Mesh) -> DICOMwebClient:
    """The PACS as another product (and dicomweb-client, not radmesh's reader) reaches it."""
    session = requests.Session()
    password = mesh.settings.dicomweb.password
    session.auth = (
        mesh.settings.dicomweb.username or "",
        password.get_secret_value() if password else "",
    )
    return DICOMwebClient(url=mesh.settings.dicomweb.base_url, session=session)


@pytest.fixture(scope="module")
async def imported_run(
    mesh: Mesh, pacs: DICOMwebClient
) -> tuple[LoadResult, StudyProgress, Dataset, Dataset]:
    return await _analysed_then_imported(mesh, pacs)


def _identifier_values(resource: dict[str, Any]) -> set[str]:
    return {str(identifier.get("value")) for identifier in resource.get("identifier", [])}


async def test_another_products_sr_becomes_fhir_results_with_a_task_and_an_alert(
    mesh: Mesh, imported_run: tuple[LoadResult, StudyProgress, Dataset, Dataset]
) -> None:
    """The vendor's hemorrhage is a preliminary, AI-asserted Observation with its probability
    and the SR's tracking UID, its volume another; the report is the product's, its Provenance
    names the SR as a source; a verification Task and the critical alert follow, as for
    radmesh's own models."""
    _, progress, vendor, _ = imported_run
    (posted,) = [p for p in progress.of_type("results.posted") if p.model.id == PRODUCT]
    assert isinstance(posted, ResultsPosted)
    assert (posted.model.version, posted.rollout_mode) == (VENDOR_VERSION, "active")
    assert [(f.finding_key, f.present, f.critical) for f in posted.findings] == [
        ("intracranial-hemorrhage", True, True),
        ("hemorrhage-volume", True, False),
    ]
    fhir = mesh.direct_fhir
    hemorrhage, volume = [await fhir.read_resource(f.observation) for f in posted.findings]
    content = hd.sr.Comprehensive3DSR.from_dataset(vendor).content
    assert isinstance(content, hd.sr.MeasurementReport)
    (group,) = content.get_planar_roi_measurement_groups()
    assert f"urn:oid:{group.tracking_uid}" in _identifier_values(hemorrhage)
    assert hemorrhage["status"] == "preliminary"
    assert hemorrhage["valueCodeableConcept"]["coding"][0]["code"] == PRESENT.code
    assert hemorrhage["component"][0]["valueQuantity"]["value"] == pytest.approx(0.93)
    assert hemorrhage["meta"]["security"][0]["code"] == "AIAST"
    assert volume["valueQuantity"]["value"] == pytest.approx(4.5)
    assert volume["valueQuantity"]["code"] == "mL"
    report = await fhir.read_resource(posted.diagnostic_report)
    assert report["status"] == "preliminary"
    assert "Intracranial hemorrhage: present" in report["conclusion"]
    provenance = await fhir.read_resource(posted.provenance)
    sources = [entity["what"].get("identifier", {}).get("value") for entity in provenance["entity"]]
    assert f"urn:oid:{vendor.SOPInstanceUID}" in sources
    device = await fhir.read_resource(posted.device)
    assert device["manufacturer"] == "Example AI Vendor"
    task = await fhir.read_resource(progress.tasks[posted.diagnostic_report])
    assert task["status"] == "requested"
    assert any(
        alert.diagnostic_report == posted.diagnostic_report
        for alert in progress.of_type("alert.raised")
    )
    written = {
        reference: await fhir.read_resource(reference)
        for reference in (
            posted.diagnostic_report,
            posted.provenance,
            posted.device,
            *(finding.observation for finding in posted.findings),
        )
    }
    for validator, findings in {
        "$validate": await hapi_validate(str(fhir.url), written),
        "fhir.resources": fhir_resources(written),
        "FHIR.js": fhir_js(written),
    }.items():
        assert not findings.error_lines(), (validator, findings.error_lines())


async def test_an_sr_of_a_product_the_registry_does_not_import_is_logged_not_mapped(
    mesh: Mesh, imported_run: tuple[LoadResult, StudyProgress, Dataset, Dataset]
) -> None:
    """The unknown product's SR is announced, read, and left out with the reason in the
    mapper's log; no results are posted for it."""
    _, progress, _, unknown = imported_run
    (detected,) = [
        event
        for event in progress.of_type("structured-report.detected")
        if event.sop_instance_uid == str(unknown.SOPInstanceUID)
    ]
    assert isinstance(detected, StructuredReportDetected)
    lines = await mesh.wait_for_log(
        "mapper",
        detected.correlation_id,
        lambda lines: any(line.get("event") == "structured_report_not_imported" for line in lines),
    )
    (refusal,) = [line for line in lines if line.get("event") == "structured_report_not_imported"]
    assert refusal["kind"] == "product-not-imported"
    assert "Another AI Company Bone Age" in refusal["reason"]
    assert not progress.caused_by(detected, "results.posted")


async def test_radmeshs_own_srs_are_never_imported(
    mesh: Mesh,
    pacs: DICOMwebClient,
    imported_run: tuple[LoadResult, StudyProgress, Dataset, Dataset],
) -> None:
    """radmesh's SRs of the study (its model's) are in the PACS, and no detection ever named
    one: each model ran once, and the only imported run is the vendor's."""
    loaded, progress, vendor, unknown = imported_run
    own = await asyncio.to_thread(_radmesh_reports, pacs, loaded.study_instance_uid)
    assert own, "radmesh stored no SR in the study"
    detected = {event.sop_instance_uid for event in progress.of_type("structured-report.detected")}
    assert detected == {str(vendor.SOPInstanceUID), str(unknown.SOPInstanceUID)}
    assert sorted(posted.model.id for posted in progress.of_type("results.posted")) == [
        "ich-reference",
        PRODUCT,
    ]
