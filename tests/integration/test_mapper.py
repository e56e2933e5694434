"""The mapper's handler against the real FHIR server and Orthanc, on freshly loaded sample studies."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from samples.dicom_series import derive_uid
from samples.load import LoadResult
from services.mapper.handlers import MapResults, SupersedeReports, store_structured_report
from services.mapper.redrive import RedriveRuns
from services.mapper.structured_report import dataset_from_metadata, sr_uids
from services.mapper.verified_report import verified_sr_uid
from services.notifier.handlers import RaiseAlerts
from services.verification.handlers import CreateVerificationTask
from shared.fhir import FhirClient
from shared.messages import (
    Event,
    EvidenceSeries,
    Finding,
    FindingVerified,
    InferenceCompleted,
    ModelRef,
    ResultsPosted,
    StudyRef,
)
from shared.metrics import RUNS_REDRIVEN
from shared.registry import Registry, load_registry
from shared.settings import FhirSettings
from tests.conftest import Infrastructure
from tests.dicom_sr import content_items
from tests.integration.sample_studies import dicomweb_client, load_fresh_study

pytestmark = pytest.mark.integration

REGISTRY_PATH = Path(__file__).resolve().parents[2] / "registry" / "models.yaml"
SNOMED = "http://snomed.info/sct"


def _basic(infra: Infrastructure) -> dict[str, str]:
    user, password = infra.orthanc_auth
    return {"Authorization": aiohttp.encode_basic_auth(user, password)}


async def _answers(url: str, headers: dict[str, str] | None = None) -> bool:
    try:
        async with (
            aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=5)) as http,
            http.get(url) as response,
        ):
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


@pytest.fixture(scope="module")
async def servers(infra: Infrastructure) -> Infrastructure:
    """The FHIR server and Orthanc, once both answer (the tests fail, never skip, otherwise)."""
    if not await _answers(f"{infra.fhir_base_url}/metadata"):
        pytest.fail("FHIR server not answering (bash deploy/hapi-fhir/up.sh)")
    if not await _answers(f"{infra.orthanc_url}/system", _basic(infra)):
        pytest.fail("Orthanc not answering (bash deploy/orthanc/up.sh)")
    return infra


def _event(loaded: LoadResult, model: str, findings: tuple[Finding, ...]) -> InferenceCompleted:
    return InferenceCompleted(
        study=StudyRef(
            study_instance_uid=loaded.study_instance_uid,
            imaging_study=loaded.fhir_ids["ImagingStudy"],
            patient=loaded.fhir_ids["Patient"],
            service_request=loaded.fhir_ids["ServiceRequest"],
        ),
        model=ModelRef(id=model, version="1"),
        findings=findings,
        inference_duration_ms=842.0,
    )


class _Clients:
    def __init__(self, infra: Infrastructure) -> None:
        self.fhir = FhirClient(FhirSettings(base_url=infra.fhir_base_url))
        self.dicomweb = dicomweb_client(infra)

    def handler(self, registry: Registry) -> MapResults:
        return MapResults(registry, self.fhir, self.dicomweb)

    async def search(self, resource_type: str, **params: str) -> list[dict[str, Any]]:
        bundle = await self.fhir.execute(
            resource_type, method="get", params={**params, "_count": "100"}
        )
        return [dict(entry["resource"]) for entry in bundle.get("entry") or []]

    async def close(self) -> None:
        await self.fhir.close()
        await self.dicomweb.close()


@pytest.fixture
async def clients(servers: Infrastructure) -> Any:
    opened = _Clients(servers)
    yield opened
    await opened.close()


async def test_head_bleed_results_land_on_the_fhir_server_once_with_every_link(
    servers: Infrastructure, clients: _Clients
) -> None:
    """A bleed found by ich-reference becomes, on the FHIR server: a present ICH Observation with
    its probability, a volume Observation in mL derived from it, one preliminary DiagnosticReport
    with both results and the ICH conclusion code, the model's Device and a Provenance — linked to
    the Patient, the order and the ImagingStudy; delivering the same message again creates
    nothing new and answers the same references."""
    loaded = await asyncio.to_thread(load_fresh_study, servers, "head-bleed", slices=8, size=64)
    slices = tuple(derive_uid(loaded.series_instance_uid, "instance", i) for i in (3, 4))
    event = _event(
        loaded,
        "ich-reference",
        (
            Finding(
                finding_key="intracranial-hemorrhage",
                present=True,
                probability=0.91,
                center_voxel=(4.0, 30.0, 22.0),
                series_instance_uid=loaded.series_instance_uid,
                sop_instance_uids=slices,
            ),
            Finding(
                finding_key="hemorrhage-volume",
                present=True,
                value=14.2,
                unit="mL",
                series_instance_uid=loaded.series_instance_uid,
            ),
        ),
    )
    handler = clients.handler(load_registry(REGISTRY_PATH))
    first = await handler(event)
    second = await handler(event)

    assert len(first) == 1 and isinstance(first[0], ResultsPosted)
    posted = first[0]
    again = second[0]
    assert isinstance(again, ResultsPosted)
    assert (again.diagnostic_report, again.device, again.provenance) == (
        posted.diagnostic_report,
        posted.device,
        posted.provenance,
    )
    assert [f.observation for f in again.findings] == [f.observation for f in posted.findings]
    assert [(f.finding_key, f.present, f.critical) for f in posted.findings] == [
        ("intracranial-hemorrhage", True, True),
        ("hemorrhage-volume", True, False),
    ]

    run = f"{loaded.study_instance_uid}/ich-reference/1"
    hemorrhage = await clients.search(
        "Observation", identifier=f"urn:radmesh:observation|{run}/intracranial-hemorrhage/0"
    )
    volume = await clients.search(
        "Observation", identifier=f"urn:radmesh:observation|{run}/hemorrhage-volume/0"
    )
    reports = await clients.search(
        "DiagnosticReport", identifier=f"urn:radmesh:diagnosticreport|{run}"
    )
    provenances = await clients.search("Provenance", _tag=f"urn:radmesh:provenance|{run}")
    devices = await clients.search("Device", identifier="urn:radmesh:device|ich-reference/1")
    assert (len(hemorrhage), len(volume), len(reports), len(provenances), len(devices)) == (
        1,
        1,
        1,
        1,
        1,
    )

    ich, vol, report, provenance = hemorrhage[0], volume[0], reports[0], provenances[0]
    assert f"Observation/{ich['id']}" == posted.findings[0].observation
    assert ich["status"] == "preliminary"
    assert ich["code"]["coding"][0] == {
        "system": SNOMED,
        "code": "1386000",
        "display": "Intracranial hemorrhage",
    }
    assert ich["valueCodeableConcept"]["coding"][0]["code"] == "52101004"
    assert ich["component"][0]["valueQuantity"]["value"] == 0.91
    assert ich["subject"]["reference"] == loaded.fhir_ids["Patient"]
    assert ich["basedOn"][0]["reference"] == loaded.fhir_ids["ServiceRequest"]
    assert ich["derivedFrom"][0]["reference"] == loaded.fhir_ids["ImagingStudy"]
    assert ich["device"]["reference"] == posted.device
    assert ich["meta"]["security"][0]["code"] == "AIAST"
    assert ich["extension"][0]["extension"] == [
        {"url": "seriesInstanceUid", "valueOid": f"urn:oid:{loaded.series_instance_uid}"},
        *({"url": "sopInstanceUid", "valueOid": f"urn:oid:{uid}"} for uid in slices),
        {"url": "centreVoxel", "valueString": "4 30 22"},
    ]

    assert vol["valueQuantity"] == {
        "value": 14.2,
        "unit": "mL",
        "system": "http://unitsofmeasure.org",
        "code": "mL",
    }
    assert {"reference": posted.findings[0].observation} in vol["derivedFrom"]

    assert f"DiagnosticReport/{report['id']}" == posted.diagnostic_report
    assert report["status"] == "preliminary"
    assert report["code"]["coding"][0]["code"] == "24725-4"
    assert sorted(r["reference"] for r in report["result"]) == sorted(
        f.observation for f in posted.findings
    )
    assert report["imagingStudy"][0]["reference"] == loaded.fhir_ids["ImagingStudy"]
    assert [c["coding"][0]["code"] for c in report["conclusionCode"]] == ["1386000"]
    assert "Intracranial hemorrhage: present" in report["conclusion"]

    assert f"Provenance/{provenance['id']}" == posted.provenance
    # pinned to the versions the AI wrote (shared/provenance.py)
    assert sorted(t["reference"] for t in provenance["target"]) == sorted(
        f"{reference}/_history/1"
        for reference in [posted.diagnostic_report, *(f.observation for f in posted.findings)]
    )
    assert provenance["agent"][0]["who"]["reference"] == posted.device
    assert provenance["entity"][0]["what"]["reference"] == loaded.fhir_ids["ImagingStudy"]
    assert provenance["occurredPeriod"]["start"] < provenance["occurredPeriod"]["end"]
    assert devices[0]["version"][0]["value"] == "1"
    assert f"Device/{devices[0]['id']}" == posted.device


async def test_the_verification_task_is_written_with_the_results_and_not_again(
    servers: Infrastructure, clients: _Clients
) -> None:
    """The results' own transaction writes the report's verification Task (stat: the bleed is
    critical; focus the report; the results.posted's message id among its inputs), the event
    names it, and the verification service then writes nothing: given a FHIR server that is
    down, it still answers the event. A repeat of the message creates no second Task."""
    loaded = await asyncio.to_thread(load_fresh_study, servers, "head-bleed", slices=4, size=32)
    event = _event(
        loaded,
        "ich-reference",
        (
            Finding(
                finding_key="intracranial-hemorrhage",
                present=True,
                probability=0.88,
                series_instance_uid=loaded.series_instance_uid,
            ),
            Finding(finding_key="hemorrhage-volume", present=True, value=3.0, unit="mL"),
        ),
    )
    handler = MapResults(load_registry(REGISTRY_PATH), clients.fhir, None)
    (posted,) = await handler(event)
    assert isinstance(posted, ResultsPosted) and posted.verification_task is not None
    run = f"{loaded.study_instance_uid}/ich-reference/1"
    (task,) = await clients.search("Task", identifier=f"urn:radmesh:task|{run}")
    assert f"Task/{task['id']}" == posted.verification_task
    assert (task["status"], task["priority"]) == ("requested", "stat")
    assert task["focus"]["reference"] == posted.diagnostic_report
    assert task["requester"]["reference"] == posted.device
    inputs = {i["type"]["text"]: i for i in task["input"]}
    assert inputs["results-posted-message-id"]["valueString"] == str(posted.message_id)
    assert inputs["device"]["valueReference"]["reference"] == posted.device

    down = FhirClient(FhirSettings(base_url="http://127.0.0.1:9/fhir", timeout_seconds=2))
    try:
        assert await CreateVerificationTask(down)(posted) == []
    finally:
        await down.close()
    (again,) = await handler(event)
    assert isinstance(again, ResultsPosted) and again.verification_task == posted.verification_task
    assert len(await clients.search("Task", identifier=f"urn:radmesh:task|{run}")) == 1


async def test_a_server_that_versions_provenance_targets_gets_no_second_write(
    servers: Infrastructure, clients: _Clients, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The development HAPI auto-versions Provenance.target: the run's Provenance comes back
    from the transaction pinned to the versions written, and the mapper sends no PUT to pin
    it (shared/provenance.py still does on a server that does not)."""
    loaded = await asyncio.to_thread(load_fresh_study, servers, "head-normal", slices=8, size=64)
    event = _event(
        loaded,
        "ich-reference",
        (Finding(finding_key="intracranial-hemorrhage", present=False, probability=0.04),),
    )
    updated: list[str] = []
    update_resource = clients.fhir.update_resource

    async def recorded_update(resource: dict[str, Any]) -> dict[str, Any]:
        updated.append(str(resource.get("resourceType")))
        return await update_resource(resource)

    monkeypatch.setattr(clients.fhir, "update_resource", recorded_update)
    (posted,) = await clients.handler(load_registry(REGISTRY_PATH))(event)
    assert isinstance(posted, ResultsPosted)
    provenance = await clients.fhir.execute(posted.provenance, "get")
    assert sorted(t["reference"] for t in provenance["target"]) == sorted(
        f"{reference}/_history/1"
        for reference in [posted.diagnostic_report, *(f.observation for f in posted.findings)]
    )
    assert updated == []


async def test_structured_report_is_stored_in_the_study_once(
    servers: Infrastructure, clients: _Clients
) -> None:
    """The run's TID 1500 SR is in Orthanc, in the source study, under the deterministic series and
    SOP UIDs; a second delivery leaves one SR instance, not two."""
    loaded = await asyncio.to_thread(load_fresh_study, servers, "chest-nodule", slices=8, size=64)
    registry = load_registry(REGISTRY_PATH)
    event = _event(
        loaded,
        "lung-nodule-reference",
        (
            Finding(
                finding_key="lung-nodule",
                present=True,
                probability=0.77,
                series_instance_uid=loaded.series_instance_uid,
            ),
            Finding(
                finding_key="lung-nodule-diameter",
                present=True,
                value=8.4,
                unit="mm",
                series_instance_uid=loaded.series_instance_uid,
            ),
        ),
    )
    handler = clients.handler(registry)
    await handler(event)
    await handler(event)

    series_uid, sop_uid = sr_uids(
        loaded.study_instance_uid, registry.get("lung-nodule-reference", "1")
    )
    async with aiohttp.ClientSession(headers=_basic(servers)) as http:
        async with http.get(
            f"{servers.orthanc_dicomweb_url}/studies/{loaded.study_instance_uid}/series",
            params={"Modality": "SR"},
            headers={"Accept": "application/dicom+json"},
        ) as response:
            assert response.status == 200
            series = await response.json(content_type=None)
        async with http.get(
            f"{servers.orthanc_dicomweb_url}/studies/{loaded.study_instance_uid}"
            f"/series/{series_uid}/instances",
            headers={"Accept": "application/dicom+json"},
        ) as response:
            instances = await response.json(content_type=None)
        async with http.get(
            f"{servers.orthanc_dicomweb_url}/studies/{loaded.study_instance_uid}"
            f"/series/{series_uid}/metadata",
            headers={"Accept": "application/dicom+json"},
        ) as response:
            metadata = (await response.json(content_type=None))[0]
    assert [s["0020000E"]["Value"][0] for s in series] == [series_uid]
    assert [i["00080018"]["Value"][0] for i in instances] == [sop_uid]
    assert instances[0]["00080016"]["Value"][0] == "1.2.840.10008.5.1.4.1.1.88.34"
    report = dataset_from_metadata(metadata)
    processing = [  # highdicom also lists the scanner (acquisition) and itself (processing)
        (item.ManufacturerModelName, item.SoftwareVersions)
        for item in report.ContributingEquipmentSequence
        if item.PurposeOfReferenceCodeSequence[0].CodeValue == "109102"  # Processing Equipment
    ]
    assert ("lung-nodule-reference", "1") in processing  # next to highdicom itself
    assert report.ConceptNameCodeSequence[0].CodeValue == "126000"  # Imaging Measurement Report
    assert report.CurrentRequestedProcedureEvidenceSequence[0].StudyInstanceUID == (
        loaded.study_instance_uid
    )


async def test_an_sr_names_every_instance_the_model_read_from_the_manifest_alone(
    servers: Infrastructure, clients: _Clients, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An inference.completed that names what the model read (its evidence, from the fetcher's
    manifest) gives an SR in the PACS referencing each of those instances under the series,
    with the Patient and Study modules of the source study, while the mapper reads the
    metadata of one instance, not the series'."""
    loaded = await asyncio.to_thread(load_fresh_study, servers, "head-bleed", slices=12, size=64)
    registry = load_registry(REGISTRY_PATH)
    model = registry.get("ich-reference", "1")
    instances = await clients.dicomweb.search_instances(
        loaded.study_instance_uid, loaded.series_instance_uid
    )
    event = _event(
        loaded,
        "ich-reference",
        (
            Finding(
                finding_key="intracranial-hemorrhage",
                present=True,
                probability=0.91,
                series_instance_uid=loaded.series_instance_uid,
                sop_instance_uids=(instances[5].sop_instance_uid,),
            ),
            Finding(finding_key="hemorrhage-volume", present=True, value=6.0, unit="mL"),
        ),
    ).model_copy(
        update={
            "evidence": (
                EvidenceSeries(
                    series_instance_uid=loaded.series_instance_uid,
                    sop_class_uid=instances[0].sop_class_uid,
                    sop_instance_uids=tuple(i.sop_instance_uid for i in instances),
                ),
            )
        }
    )
    read: list[str] = []
    series_metadata = clients.dicomweb.retrieve_series_metadata

    async def counted(study_uid: str, series_uid: str) -> list[dict[str, Any]]:
        read.append(series_uid)
        return await series_metadata(study_uid, series_uid)

    monkeypatch.setattr(clients.dicomweb, "retrieve_series_metadata", counted)
    assert await store_structured_report(event, model, clients.dicomweb)
    monkeypatch.undo()
    assert read == []  # one instance's metadata, not the series'
    series_uid, _ = sr_uids(loaded.study_instance_uid, model)
    (metadata,) = await clients.dicomweb.retrieve_series_metadata(
        loaded.study_instance_uid, series_uid
    )
    report = dataset_from_metadata(metadata)
    (study,) = report.CurrentRequestedProcedureEvidenceSequence
    (series,) = study.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == loaded.series_instance_uid
    assert sorted(item.ReferencedSOPInstanceUID for item in series.ReferencedSOPSequence) == sorted(
        i.sop_instance_uid for i in instances
    )
    source_metadata = await clients.dicomweb.retrieve_series_metadata(
        loaded.study_instance_uid, loaded.series_instance_uid
    )
    source = dataset_from_metadata(source_metadata[0])
    for keyword in ("PatientID", "PatientBirthDate", "AccessionNumber", "StudyDate", "StudyID"):
        assert report.get(keyword) == source.get(keyword), f"{keyword} not copied from the study"


async def test_verified_results_store_a_verified_sr_naming_the_radiologist_and_its_predecessor(
    servers: Infrastructure, clients: _Clients
) -> None:
    """After a radiologist amended the nodule diameter from 8.4 to 9.1 mm and accepted,
    finding.verified stores a second SR in the run's series: VERIFIED, COMPLETE, the
    radiologist as Verifying Observer, the AI's SR as predecessor, the diameter corrected;
    the AI's SR stays as stored; a redelivery stores no third instance."""
    loaded = await asyncio.to_thread(load_fresh_study, servers, "chest-nodule", slices=8, size=64)
    registry = load_registry(REGISTRY_PATH)
    model = registry.get("lung-nodule-reference", "1")
    event = _event(
        loaded,
        model.id,
        (
            Finding(
                finding_key="lung-nodule",
                present=True,
                probability=0.77,
                center_voxel=(3.0, 30.0, 30.0),
                series_instance_uid=loaded.series_instance_uid,
                sop_instance_uids=(derive_uid(loaded.series_instance_uid, "instance", 3),),
            ),
            Finding(
                finding_key="lung-nodule-diameter",
                present=True,
                value=8.4,
                unit="mm",
                series_instance_uid=loaded.series_instance_uid,
            ),
        ),
    )
    (posted,) = await clients.handler(registry)(event)
    assert isinstance(posted, ResultsPosted)
    fhir = clients.fhir
    diameter = dict(await fhir.execute(posted.findings[1].observation, "get"))
    diameter["status"] = "amended"
    diameter["valueQuantity"] = {**diameter["valueQuantity"], "value": 9.1}
    await fhir.execute(posted.findings[1].observation, "put", data=diameter)
    verifier = loaded.fhir_ids["Practitioner"]
    verified_event = posted.follow(
        FindingVerified,
        study=posted.study,
        task="Task/verified-in-test",
        diagnostic_report=posted.diagnostic_report,
        verifier=verifier,
        provenance=posted.provenance,
        amended=True,
    )
    supersede = SupersedeReports(registry, fhir, clients.dicomweb, "Radiology, Test Hospital")
    assert await supersede.on_verified(verified_event) == []
    await supersede.on_verified(verified_event)

    series_uid, preliminary_uid = sr_uids(loaded.study_instance_uid, model)
    metadata = await clients.dicomweb.retrieve_series_metadata(
        loaded.study_instance_uid, series_uid
    )
    reports = {str(ds.SOPInstanceUID): ds for ds in map(dataset_from_metadata, metadata)}
    assert set(reports) == {preliminary_uid, verified_sr_uid(loaded.study_instance_uid, model)}
    preliminary = reports[preliminary_uid]
    verified = reports[verified_sr_uid(loaded.study_instance_uid, model)]
    assert (preliminary.VerificationFlag, verified.VerificationFlag) == ("UNVERIFIED", "VERIFIED")
    assert verified.CompletionFlag == "COMPLETE"
    observer = verified.VerifyingObserverSequence[0]
    practitioner = await fhir.read_resource(verifier)
    assert str(observer.VerifyingObserverName).split("^")[0] == practitioner["name"][0]["family"]
    assert observer.VerifyingOrganization == "Radiology, Test Hospital"
    predecessor = verified.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]
    assert predecessor.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == preliminary_uid
    diameters = [
        float(item.MeasuredValueSequence[0].NumericValue)
        for report in (preliminary, verified)
        for item in content_items(report)
        if item.get("ValueType") == "NUM"
        and item.ConceptNameCodeSequence[0].CodeValue == "81827009"
    ]
    assert diameters == [8.4, 9.1]


async def test_shadow_model_posts_nothing_to_the_clinical_record(
    servers: Infrastructure, clients: _Clients
) -> None:
    """A model in shadow rollout publishes nothing and leaves no Observation, DiagnosticReport
    or SR for the study."""
    loaded = await asyncio.to_thread(load_fresh_study, servers, "head-normal", slices=8, size=64)
    registry = load_registry(REGISTRY_PATH)
    shadow = Registry(
        models=tuple(model.model_copy(update={"rollout": "shadow"}) for model in registry.models)
    )
    event = _event(
        loaded,
        "ich-reference",
        (
            Finding(
                finding_key="intracranial-hemorrhage",
                present=False,
                probability=0.04,
                series_instance_uid=loaded.series_instance_uid,
            ),
        ),
    )
    assert await clients.handler(shadow)(event) == []
    run = f"{loaded.study_instance_uid}/ich-reference/1"
    assert (
        await clients.search(
            "Observation", identifier=f"urn:radmesh:observation|{run}/intracranial-hemorrhage/0"
        )
        == []
    )
    assert (
        await clients.search("DiagnosticReport", identifier=f"urn:radmesh:diagnosticreport|{run}")
        == []
    )
    series = await clients.dicomweb.search_series(loaded.study_instance_uid)
    assert [s.modality for s in series] == ["CT"]


async def test_a_run_whose_results_posted_was_lost_is_redriven_until_its_task_and_alert_exist(
    servers: Infrastructure, clients: _Clients
) -> None:
    """The bleed's results are on the FHIR server but results.posted never reached the
    verification service or the notifier (lost after the write): the consistency sweep rebuilds
    the event from the record — the same report, findings, Device and Provenance, the bleed
    critical — and once its consumers handled it, the next sweep finds nothing to do."""
    loaded = await asyncio.to_thread(load_fresh_study, servers, "head-bleed", slices=8, size=64)
    event = _event(
        loaded,
        "ich-reference",
        (
            Finding(finding_key="intracranial-hemorrhage", present=True, probability=0.91),
            Finding(finding_key="hemorrhage-volume", present=True, value=14.2, unit="mL"),
        ),
    )
    registry = load_registry(REGISTRY_PATH)
    (original,) = await MapResults(registry, clients.fhir, None)(event)  # published: lost
    assert isinstance(original, ResultsPosted)
    published: list[Event] = []

    async def publish(redriven: Event) -> None:
        published.append(redriven)

    sweep = RedriveRuns(registry, clients.fhir, publish, hours=0.05, grace_seconds=0)

    async def ours() -> list[ResultsPosted]:
        published.clear()
        await sweep.sweep()
        return [
            e
            for e in published
            if isinstance(e, ResultsPosted) and e.diagnostic_report == original.diagnostic_report
        ]

    (rebuilt,) = await ours()
    assert rebuilt.model_dump(include=_RUN_FIELDS) == original.model_dump(include=_RUN_FIELDS)
    assert [f.critical for f in rebuilt.findings] == [True, False]
    await CreateVerificationTask(clients.fhir)(rebuilt)
    assert await ours() != [], "the alert is still missing: the run is announced again"
    await RaiseAlerts(registry, clients.fhir)(rebuilt)
    assert await ours() == []


async def test_a_run_whose_sr_is_missing_from_the_pacs_has_it_stored_again_from_the_record(
    servers: Infrastructure, clients: _Clients
) -> None:
    """A nodule run whose results and verification Task are on the FHIR server but whose SR never
    reached the PACS: the consistency sweep stores the SR, rebuilt from the record (the nodule
    and its 8.4 mm diameter, the source series as evidence) under the run's UIDs, announces
    nothing else, and the next sweep finds the SR there."""
    loaded = await asyncio.to_thread(load_fresh_study, servers, "chest-nodules", slices=8, size=64)
    registry = load_registry(REGISTRY_PATH)
    model = registry.get("lung-nodule-reference", "1")
    event = _event(
        loaded,
        "lung-nodule-reference",
        (
            Finding(
                finding_key="lung-nodule",
                present=True,
                probability=0.77,
                center_voxel=(3.0, 20.0, 31.0),
                series_instance_uid=loaded.series_instance_uid,
            ),
            Finding(
                finding_key="lung-nodule-diameter",
                present=True,
                value=8.4,
                unit="mm",
                series_instance_uid=loaded.series_instance_uid,
            ),
        ),
    )
    (posted,) = await MapResults(registry, clients.fhir, None)(event)  # no SR written
    assert isinstance(posted, ResultsPosted)
    await CreateVerificationTask(clients.fhir)(posted)
    published: list[Event] = []

    async def publish(redriven: Event) -> None:
        published.append(redriven)

    sweep = RedriveRuns(
        registry, clients.fhir, publish, hours=0.05, grace_seconds=0, dicomweb=clients.dicomweb
    )
    series_uid, sop_uid = sr_uids(loaded.study_instance_uid, model)

    async def stored() -> list[Any]:
        found = await clients.dicomweb.search_instances(loaded.study_instance_uid, series_uid)
        return [i for i in found if i.sop_instance_uid == sop_uid]

    assert await stored() == []
    await sweep.sweep()
    assert len(await stored()) == 1
    assert not [
        e for e in published if getattr(e, "diagnostic_report", None) == posted.diagnostic_report
    ]
    (metadata,) = await clients.dicomweb.retrieve_series_metadata(
        loaded.study_instance_uid, series_uid
    )
    report = dataset_from_metadata(metadata)
    diameters = [
        float(item.MeasuredValueSequence[0].NumericValue)
        for item in content_items(report)
        if item.get("ValueType") == "NUM"
        and item.ConceptNameCodeSequence[0].CodeValue == "81827009"
    ]
    assert diameters == [8.4]
    evidence = report.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.SeriesInstanceUID == loaded.series_instance_uid
    before = RUNS_REDRIVEN.labels(missing="structured-report")._value.get()
    await sweep.sweep()
    assert RUNS_REDRIVEN.labels(missing="structured-report")._value.get() == before


_RUN_FIELDS = {"study", "model", "diagnostic_report", "device", "provenance", "findings"}
