"""Retraction when the images change (IHE IOCM), through the whole mesh: a series deleted from
the PACS, a rejection note stored to it, or the ImagingStudy filed under another patient
retracts the AI results made from it (Observations and report entered-in-error, the
verification Task and the claim cancelled, the alert withdrawn saying why, the Flag closed, the
SR rejected in the PACS); a study sent again after a deletion is analysed afresh as the run's
next generation."""

from __future__ import annotations

import asyncio
import io
import random
import sys
from typing import Any

import aiohttp
import highdicom as hd
import pytest
import requests
from pydicom import dcmwrite

from samples.load import LoadResult, Settings, load_study
from samples.mesh_watch import MeshWatcher, StudyProgress
from services.mapper.key_images import key_images_uids
from services.mapper.rejection_note import rejection_note_uids
from services.mapper.segmentation import segmentation_uids
from services.mapper.structured_report import dataset_from_metadata, sr_uids
from shared.dicomweb import DicomWebClient
from shared.errors import RemoteRejected
from shared.fhir import FhirClient
from shared.messages import AlertRaised, ResultsPosted
from shared.registry import load_registry
from tests.e2e.conftest import ROOT, Mesh, only_resource
from tests.waiting import until

pytestmark = pytest.mark.integration

MODEL = load_registry(ROOT / "registry" / "models.yaml").get("ich-reference", "1")


async def _analysed(mesh: Mesh, seed: int | None = None) -> tuple[LoadResult, StudyProgress]:
    """A head CT with a bleed through the mesh: results, alert and Task written."""
    watcher = MeshWatcher(mesh.settings.broker.url, mesh.settings.broker.exchange, mesh.direct_fhir)
    await watcher.start()
    try:
        loaded = await asyncio.to_thread(
            load_study,
            "head-bleed",
            settings=Settings.from_env(),
            seed=seed if seed is not None else random.randrange(10**7, 10**8),
        )
        progress = watcher.track(loaded.study_instance_uid)
        incomplete = await watcher.wait(120)
        assert not incomplete, f"{progress.missing()}\n{mesh.log_tail('mapper')}"

        async def alerted() -> bool:
            await watcher.poll()
            return bool(progress.of_type("alert.raised"))

        await until(alerted, "the notifier raises the bleed's alert", seconds=60)
    finally:
        await watcher.stop()
    return loaded, progress


def _delete_series(series_instance_uid: str) -> None:
    settings = Settings.from_env()
    (hit,) = requests.post(
        f"{settings.orthanc_url}/tools/lookup",
        data=series_instance_uid,
        auth=settings.orthanc_auth,
        timeout=30,
    ).json()
    requests.delete(
        f"{settings.orthanc_url}{hit['Path']}", auth=settings.orthanc_auth, timeout=60
    ).raise_for_status()


async def _status(fhir: FhirClient, reference: str) -> str:
    return str((await fhir.read_resource(reference))["status"])


async def _assert_retracted(
    mesh: Mesh, progress: StudyProgress, reason_code: str, because: str
) -> None:
    """Every record of the run says it is retracted, with the IOCM reason."""
    fhir = mesh.direct_fhir
    (posted,) = progress.of_type("results.posted")
    assert isinstance(posted, ResultsPosted)

    async def report_retracted() -> bool:
        return await _status(fhir, posted.diagnostic_report) == "entered-in-error"

    await until(report_retracted, "the verification service retracts the report", seconds=60)
    report = await fhir.read_resource(posted.diagnostic_report)
    assert report["conclusion"].startswith("Retracted by radmesh")
    for finding in posted.findings:
        assert await _status(fhir, finding.observation) == "entered-in-error"
    task = await fhir.read_resource(progress.tasks[posted.diagnostic_report])
    assert task["status"] == "cancelled"
    assert task["statusReason"]["coding"][0]["code"] == reason_code
    run = posted.model.run_value(posted.study.study_instance_uid)
    claim = await only_resource(fhir, "Task", identifier=f"urn:radmesh:analysis-claim|{run}")
    assert claim["status"] == "cancelled"
    bundle = await fhir.execute("Provenance", "get", params={"target": posted.diagnostic_report})
    (retraction,) = [
        entry["resource"]
        for entry in bundle.get("entry", [])
        if entry["resource"].get("activity", {}).get("text") == "retract"
    ]
    assert retraction["activity"]["coding"][0]["code"] == "NULLIFY"
    assert retraction["reason"][0]["coding"][0]["code"] == reason_code

    (alert,) = progress.of_type("alert.raised")
    assert isinstance(alert, AlertRaised)

    async def alert_withdrawn() -> bool:
        return await _status(fhir, alert.communication_request) == "revoked"

    await until(alert_withdrawn, "the notifier withdraws the retracted bleed's alert")
    assert alert.flag is not None
    assert await _status(fhir, alert.flag) == "inactive"
    original = await fhir.read_resource(alert.communication)
    (key,) = [i for i in original["identifier"] if i["system"] == "urn:radmesh:communication"]
    withdrawal = await only_resource(
        fhir, "Communication", identifier=f"{key['system']}|{key['value']}/withdrawal"
    )
    text = withdrawal["payload"][0]["contentString"]
    assert "retracted" in text and because in text, text


async def _rejection_note_of_the_sr(mesh: Mesh, study: str, generation: int = 1) -> Any:
    """The note the mapper stored to reject the run's SR (None while there is none)."""
    series, note_uid = rejection_note_uids(study, MODEL, generation)
    pacs = DicomWebClient(mesh.settings.dicomweb)
    try:
        metadata = await pacs.retrieve_series_metadata(study, series)
    except RemoteRejected:
        return None
    finally:
        await pacs.close()
    return next(
        (d for d in map(dataset_from_metadata, metadata) if d.SOPInstanceUID == note_uid), None
    )


async def test_deleting_the_analysed_series_retracts_its_results_and_a_resend_is_analysed_afresh(
    mesh: Mesh,
) -> None:
    """The PACS deletes the head CT's series after its results were written: the Orthanc
    plugin's signed deletion event retracts them (113037, patient safety) and the mapper
    rejects the AI's SR, its key-image selection and its SEG in the PACS; the study sent again is analysed as generation 2 under
    new identifiers, with a new preliminary report, Task and alert, while the first stays
    retracted."""
    seed = random.randrange(10**7, 10**8)
    loaded, progress = await _analysed(mesh, seed)
    await asyncio.to_thread(_delete_series, loaded.series_instance_uid)
    await _assert_retracted(mesh, progress, "113037", "deleted from the PACS")

    notes: list[Any] = []

    async def sr_rejected() -> bool:
        notes[:] = [await _rejection_note_of_the_sr(mesh, loaded.study_instance_uid)]
        return notes[0] is not None

    await until(sr_rejected, "the mapper stores a rejection note for the AI's SR")
    assert notes[0].ConceptNameCodeSequence[0].CodeValue == "113037"
    rejected = {
        instance.ReferencedSOPInstanceUID
        for study in notes[0].CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for instance in series.ReferencedSOPSequence
    }
    assert rejected == {  # the AI's SR, the key images it selected, the bleed's SEG, together
        sr_uids(loaded.study_instance_uid, MODEL)[1],
        key_images_uids(loaded.study_instance_uid, MODEL)[1],
        segmentation_uids(loaded.study_instance_uid, MODEL)[1],
    }

    again, second = await _analysed(mesh, seed)
    assert again.study_instance_uid == loaded.study_instance_uid
    (posted,) = second.of_type("results.posted")
    assert posted.model.generation == 2
    report = await mesh.direct_fhir.read_resource(posted.diagnostic_report)
    assert report["status"] == "preliminary"
    assert [i["value"] for i in report["identifier"]] == [
        f"{loaded.study_instance_uid}/ich-reference/1/g2"
    ]
    task = await mesh.direct_fhir.read_resource(second.tasks[posted.diagnostic_report])
    assert task["status"] == "requested"
    (first,) = progress.of_type("results.posted")
    assert first.diagnostic_report != posted.diagnostic_report
    assert await _status(mesh.direct_fhir, first.diagnostic_report) == "entered-in-error"


async def test_a_rejection_note_in_the_pacs_retracts_the_results_and_no_model_reads_the_images_again(
    mesh: Mesh,
) -> None:
    """A site stores an IOCM rejection note (113001, rejected for quality reasons) naming the
    analysed CT: the results are retracted when the PACS next calls the study stable; a later
    hook for the study starts nothing, saying the series is rejected."""
    loaded, progress = await _analysed(mesh)
    pacs = DicomWebClient(mesh.settings.dicomweb)
    try:
        metadata = await pacs.retrieve_series_metadata(
            loaded.study_instance_uid, loaded.series_instance_uid
        )
        images = [dataset_from_metadata(item) for item in metadata]
        note = hd.ko.KeyObjectSelectionDocument(
            evidence=images,
            content=hd.ko.KeyObjectSelection(
                document_title=hd.sr.CodedConcept("113001", "DCM", "Rejected for Quality Reasons"),
                referenced_objects=images,
                observer_person_context=hd.sr.ObserverContext(
                    observer_type=hd.sr.CodedConcept("121006", "DCM", "Person"),
                    observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
                        name="Tech^Quality"
                    ),
                ),
            ),
            series_instance_uid=hd.UID(),
            series_number=900,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="Site QA",
        )
        buffer = io.BytesIO()
        dcmwrite(buffer, note, enforce_file_format=True)
        await pacs.store_instances([buffer.getvalue()])
    finally:
        await pacs.close()
    await _assert_retracted(mesh, progress, "113001", "rejected in the PACS")

    study = await mesh.direct_fhir.read_resource(loaded.imaging_study_id or "")
    async with aiohttp.ClientSession() as http:
        response = await http.put(
            f"http://127.0.0.1:8090/fhir/{loaded.imaging_study_id}",
            json=study,
            headers={"Authorization": "Bearer radmesh-dev-hook-secret"},
        )
        assert response.status == 200
        assert (
            "0 study.detected"
            in (await response.json(content_type=None))["issue"][0]["diagnostics"]
        )
    skipped = mesh.log_events(
        "subscriber", loaded.study_instance_uid, "study_skipped", bound_to="study_instance_uid"
    )
    assert "no model applies (1 series rejected in the PACS left out)" in {
        line.get("reason") for line in skipped
    }


async def test_a_study_filed_under_another_patient_retracts_the_runs_of_the_first_and_runs_again(
    mesh: Mesh,
) -> None:
    """The ImagingStudy is corrected to another patient (a wrong-patient filing found after the
    AI ran): the hook for the updated study retracts the first patient's results (113038,
    incorrect modality worklist entry) and the study is analysed afresh for the right patient,
    as generation 2."""
    loaded, progress = await _analysed(mesh)
    fhir = mesh.direct_fhir
    patient = await fhir.create_resource(
        {"resourceType": "Patient", "name": [{"family": "Corrected", "given": ["Right"]}]}
    )
    right = f"Patient/{patient['id']}"
    study = await fhir.read_resource(loaded.imaging_study_id or "")
    study["subject"] = {"reference": right}
    corrected = await fhir.update_resource(study)
    watcher = MeshWatcher(mesh.settings.broker.url, mesh.settings.broker.exchange, fhir)
    await watcher.start()
    try:
        again = watcher.track(loaded.study_instance_uid)
        async with aiohttp.ClientSession() as http:  # the hook HAPI sends for the update
            response = await http.put(
                f"http://127.0.0.1:8090/fhir/{loaded.imaging_study_id}",
                json=corrected,
                headers={"Authorization": "Bearer radmesh-dev-hook-secret"},
            )
            assert response.status == 200, await response.text()
        await _assert_retracted(mesh, progress, "113038", "filed under another patient")
        incomplete = await watcher.wait(120)
        assert not incomplete, f"{again.missing()}\n{mesh.log_tail('subscriber')}"
    finally:
        await watcher.stop()
    (posted,) = again.of_type("results.posted")
    assert posted.model.generation == 2
    assert posted.study.patient == right
    report = await fhir.read_resource(posted.diagnostic_report)
    assert (report["status"], report["subject"]["reference"]) == ("preliminary", right)


async def _radmesh(mesh: Mesh, *arguments: str) -> tuple[int, str]:
    """The `radmesh` command as an operator runs it, with the services' settings."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "shared.cli",
        *arguments,
        cwd=ROOT,
        env=mesh.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=180)
    return int(process.returncode or 0), output.decode(errors="replace")


async def test_rerun_retracts_the_earlier_results_and_analyses_the_study_as_its_next_generation(
    mesh: Mesh,
) -> None:
    """`radmesh rerun` on an analysed head CT: a report a radiologist decided is not retracted
    without --include-verified (exit 2, nothing changes); with it the earlier results are
    retracted as superseded (113001, the alert withdrawn saying an operator asked) and the study
    is analysed again as generation 2, with a new preliminary report and Task."""
    loaded, progress = await _analysed(mesh)
    (first,) = progress.of_type("results.posted")
    assert isinstance(first, ResultsPosted)
    report = await mesh.direct_fhir.read_resource(first.diagnostic_report)
    await mesh.direct_fhir.update_resource({**report, "status": "final"})  # as if verified

    status, said = await _radmesh(
        mesh, "rerun", loaded.study_instance_uid, "--reason", "model fixed"
    )
    assert status == 2, said
    assert f"{first.diagnostic_report} final" in said and "--include-verified" in said
    assert await _status(mesh.direct_fhir, first.diagnostic_report) == "final"

    watcher = MeshWatcher(mesh.settings.broker.url, mesh.settings.broker.exchange, mesh.direct_fhir)
    await watcher.start()
    try:
        again = watcher.track(loaded.study_instance_uid)
        status, said = await _radmesh(
            mesh,
            "rerun",
            loaded.study_instance_uid,
            "--reason",
            "model fixed",
            "--include-verified",
        )
        assert status == 0, f"{said}\n{mesh.log_tail('verification')}"
        assert "1 run(s) retracted" in said and "announced again" in said, said
        incomplete = await watcher.wait(120)
        assert not incomplete, f"{again.missing()}\n{mesh.log_tail('mapper')}"
    finally:
        await watcher.stop()
    await _assert_retracted(mesh, progress, "113001", "asked for the study to be analysed again")
    (posted,) = again.of_type("results.posted")
    assert posted.model.generation == 2
    assert posted.diagnostic_report != first.diagnostic_report
    assert await _status(mesh.direct_fhir, posted.diagnostic_report) == "preliminary"
    task = await mesh.direct_fhir.read_resource(again.tasks[posted.diagnostic_report])
    assert task["status"] == "requested"
    (detected,) = again.of_type("study.detected")
    assert detected.source == "manual"
