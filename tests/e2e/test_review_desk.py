"""The review desk in a real browser (Debian's Chromium driven by Playwright) against the whole
mesh: a radiologist signs in through Keycloak, works the worklist, sees the key image with the
finding's location, accepts one bleed, rejects another, amends a nodule diameter; then the FHIR
server shows what each verdict changed. Screenshots go to .run/test-output/review-desk/."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from samples.demo import run_demo
from samples.load import LoadResult
from samples.mesh_watch import StudyProgress
from services.mapper.rejection_note import rejection_note_uids
from services.mapper.structured_report import dataset_from_metadata, sr_uids
from services.mapper.verified_report import verified_sr_uid
from shared.dicomweb import DicomWebClient
from shared.errors import RemoteRejected
from shared.fhir import FhirClient
from shared.messages import ResultsPosted
from shared.registry import load_registry
from tests.e2e.conftest import ROOT, SERVICES, Mesh, only_resource
from tests.identity import DEV_PASSWORD
from tests.waiting import until

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("RADMESH_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
# What this machine's closed network needs (no background connections, no sandbox as root).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CHROMIUM_INSTALLED = Path(CHROMIUM).exists()
PAGE = f"http://127.0.0.1:{SERVICES['verification']}/review"
SCREENSHOTS = ROOT / ".run" / "test-output" / "review-desk"

Studies = dict[str, tuple[LoadResult, StudyProgress]]


@pytest.fixture(scope="module")
async def studies(mesh: Mesh) -> Studies:
    """Two bleeds and a chest CT through the mesh, each with its verification Task."""
    loaded, progress, incomplete = await run_demo(
        mesh.settings,
        ("head-bleed", "head-bleed", "chest-nodules"),
        slices=32,
        size=256,
        timeout_seconds=180,
    )
    assert not incomplete, [p.missing() for p in incomplete]
    names = ("bleed-to-accept", "bleed-to-reject", "chest-to-amend")
    return {
        name: (result, progress[result.study_instance_uid])
        for name, result in zip(names, loaded, strict=True)
    }


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM_INSTALLED:
        pytest.fail(f"Chromium is not installed at {CHROMIUM} (Debian package chromium)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield launched
        await launched.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    opened = await context.new_page()
    yield opened
    await context.close()


def _posted(progress: StudyProgress) -> ResultsPosted:
    (posted,) = progress.of_type("results.posted")
    assert isinstance(posted, ResultsPosted)
    return posted


def _task_id(progress: StudyProgress) -> str:
    return progress.tasks[_posted(progress).diagnostic_report].split("/")[1]


async def _sign_in(page: Page, account: str) -> None:
    """Through Keycloak's own login form, as a person would."""
    await page.goto(PAGE)
    await page.get_by_test_id("sign-in").click()
    await page.fill("#username", account)
    await page.fill("#password", DEV_PASSWORD)
    await page.click("#kc-login")
    await expect(page.get_by_test_id("user")).to_contain_text("radiologist")


async def _open_study(page: Page, study_instance_uid: str) -> None:
    """Click the study's row in the worklist; wait for its view (with that Task's data)."""
    await page.goto(f"{PAGE}#/")
    row = page.locator(f'tr[data-testid="task"][data-study="{study_instance_uid}"]')
    task_id = await row.get_attribute("data-task")
    await row.click()
    await expect(page.locator(f'[data-testid="study"][data-task="{task_id}"]')).to_be_visible()


async def _recorded(page: Page, verdict: str) -> None:
    await expect(page.get_by_test_id("message")).to_contain_text(f"Recorded: {verdict}")


async def test_a_radiologist_reviews_the_worklist_in_the_browser_and_every_verdict_reaches_fhir(
    mesh: Mesh, studies: Studies, page: Page
) -> None:
    """rad1 signs in (Keycloak, authorization code + PKCE); the worklist puts every stat Task
    (the bleeds) before any routine one; the bleed's study view shows the model, its "not for
    clinical use" label, its findings and the key image from the PACS with the bleed's location
    drawn over it. rad1 accepts the first bleed (and the mapper stores the verified SR), rejects the second as a false positive (an IOCM rejection note for its SR), amends
    the chest's first nodule diameter. On the FHIR server: the accepted report is final and
    says verified by Rita Adler, clinician-asserted, with a Provenance naming her; the
    rejected one is entered-in-error, its CommunicationRequest and stat consult revoked and a
    withdrawal Communication sent to the ordering clinician; the diameter is amended with the
    AI's value in its note. Screenshots of the worklist and the study view are written."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    fhir = mesh.direct_fhir
    accept_load, accept = studies["bleed-to-accept"]
    reject_load, reject = studies["bleed-to-reject"]
    amend_load, amend = studies["chest-to-amend"]

    await _sign_in(page, "rad1")
    rows = page.get_by_test_id("task")
    await expect(rows.first).to_be_visible()
    priorities = [p.strip().lower() for p in await rows.locator("td.priority").all_inner_texts()]
    studies_shown = [await row.get_attribute("data-study") for row in await rows.all()]
    assert priorities[0] == "stat"
    assert priorities == sorted(priorities, key=lambda p: p != "stat"), "stat first"
    for load in (accept_load, reject_load):
        assert priorities[studies_shown.index(load.study_instance_uid)] == "stat"
    await page.screenshot(path=str(SCREENSHOTS / "worklist.png"))

    await _open_study(page, accept_load.study_instance_uid)
    await expect(page.get_by_test_id("study-model")).to_contain_text("Intracranial hemorrhage")
    await expect(page.get_by_test_id("not-for-clinical-use")).to_be_visible()
    await expect(page.get_by_test_id("finding").first).to_contain_text("Present")
    image = page.locator('[data-testid="key-image"][data-loaded="true"]')
    await expect(image).to_have_count(1)
    await expect(image.get_by_test_id("finding-location")).to_have_count(1)
    width = await image.locator("img").evaluate("img => img.naturalWidth")
    assert width == 256  # the PACS rendered the slice itself
    await page.screenshot(path=str(SCREENSHOTS / "study.png"), full_page=True)
    await page.get_by_test_id("accept").click()
    await _recorded(page, "accepted")

    await _open_study(page, reject_load.study_instance_uid)
    await page.get_by_test_id("reject-reason").select_option("false-positive")
    await page.get_by_test_id("reject-note").fill("calcified falx, not blood")
    await page.get_by_test_id("reject").click()
    await _recorded(page, "rejected")

    await _open_study(page, amend_load.study_instance_uid)
    diameter_row = page.locator('[data-testid="finding"]', has_text="Diameter").first
    observation = await diameter_row.get_attribute("data-observation")
    ai_value = float(await diameter_row.get_by_test_id("amend-value").input_value())
    corrected = round(ai_value + 1.5, 2)
    await diameter_row.get_by_test_id("amend-value").fill(str(corrected))
    await diameter_row.get_by_test_id("amend").click()
    await _recorded(page, "amended")

    await _assert_accepted(fhir, _posted(accept))
    await _assert_verified_sr_in_the_pacs(mesh, _posted(accept))
    await _assert_rejected_and_withdrawn(fhir, reject)
    await _assert_rejection_note_in_the_pacs(mesh, _posted(reject))
    await _assert_amended(fhir, _posted(amend), str(observation), ai_value, corrected)
    assert (SCREENSHOTS / "worklist.png").stat().st_size > 10_000
    assert (SCREENSHOTS / "study.png").stat().st_size > 10_000


async def _assert_accepted(fhir: FhirClient, posted: ResultsPosted) -> None:
    accepted = await fhir.read_resource(posted.diagnostic_report)
    assert accepted["status"] == "final"
    assert accepted["conclusion"].startswith("AI result, verified by Rita Adler on ")
    assert [s["code"] for s in accepted["meta"]["security"]] == ["CLINAST_AIRPT"]
    verifier = accepted["resultsInterpreter"][-1]["reference"]
    provenance = await only_resource(fhir, "Provenance", target=posted.diagnostic_report, agent=verifier)
    assert provenance["activity"]["text"] == "verify"


async def _assert_verified_sr_in_the_pacs(mesh: Mesh, posted: ResultsPosted) -> None:
    """The mapper stored the verified SR beside the AI's: VERIFIED, Rita Adler verifying, the
    preliminary SR as predecessor."""
    model = load_registry(ROOT / "registry" / "models.yaml").get(
        posted.model.id, posted.model.version
    )
    study = posted.study.study_instance_uid
    series, preliminary = sr_uids(study, model)
    pacs = DicomWebClient(mesh.settings.dicomweb)
    reports: dict[str, Any] = {}

    async def stored() -> bool:
        metadata = await pacs.retrieve_series_metadata(study, series)
        reports.update({str(d.SOPInstanceUID): d for d in map(dataset_from_metadata, metadata)})
        return verified_sr_uid(study, model) in reports

    try:
        await until(stored, "the mapper stores the verified SR")
    finally:
        await pacs.close()
    verified = reports[verified_sr_uid(study, model)]
    assert verified.VerificationFlag == "VERIFIED"
    assert str(verified.VerifyingObserverSequence[0].VerifyingObserverName) == "Adler^Rita"
    predecessor = verified.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]
    assert predecessor.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == preliminary
    assert reports[preliminary].VerificationFlag == "UNVERIFIED"


async def _assert_rejection_note_in_the_pacs(mesh: Mesh, posted: ResultsPosted) -> None:
    """The mapper stored an IOCM rejection note (KO, 113001) referencing the AI's SR."""
    model = load_registry(ROOT / "registry" / "models.yaml").get(
        posted.model.id, posted.model.version
    )
    study = posted.study.study_instance_uid
    series, note_uid = rejection_note_uids(study, model)
    pacs = DicomWebClient(mesh.settings.dicomweb)
    notes: list[Any] = []

    async def stored() -> bool:
        try:
            metadata = await pacs.retrieve_series_metadata(study, series)
        except RemoteRejected:
            return False
        notes[:] = [d for d in map(dataset_from_metadata, metadata) if d.SOPInstanceUID == note_uid]
        return bool(notes)

    try:
        await until(stored, "the mapper stores the rejection note")
    finally:
        await pacs.close()
    (note,) = notes
    assert note.ConceptNameCodeSequence[0].CodeValue == "113001"
    evidence = note.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == sr_uids(study, model)[1]


async def _assert_rejected_and_withdrawn(fhir: FhirClient, progress: StudyProgress) -> None:
    posted = _posted(progress)
    rejected = await fhir.read_resource(posted.diagnostic_report)
    assert rejected["status"] == "entered-in-error"
    assert "calcified falx" in rejected["conclusion"]
    (alert,) = progress.of_type("alert.raised")

    async def alert_withdrawn() -> bool:
        request = await fhir.read_resource(alert.communication_request)
        return bool(request["status"] == "revoked")

    await until(alert_withdrawn, "the notifier revokes the rejected bleed's CommunicationRequest")
    assert (await fhir.read_resource(alert.consult_service_request))["status"] == "revoked"
    original = await fhir.read_resource(alert.communication)
    (key,) = [i for i in original["identifier"] if i["system"] == "urn:radmesh:communication"]
    withdrawal = await only_resource(
        fhir, "Communication", identifier=f"{key['system']}|{key['value']}/withdrawal"
    )
    assert withdrawal["inResponseTo"] == [{"reference": alert.communication}]
    assert withdrawal["recipient"] == original["recipient"]
    assert "calcified falx" in withdrawal["payload"][0]["contentString"]


async def _assert_amended(
    fhir: FhirClient, posted: ResultsPosted, observation: str, ai_value: float, corrected: float
) -> None:
    amended = await fhir.read_resource(observation)
    assert amended["status"] == "amended"
    assert amended["valueQuantity"]["value"] == corrected
    assert f"the AI measured {ai_value:g} mm" in amended["note"][-1]["text"]
    assert (await fhir.read_resource(posted.diagnostic_report))["status"] == "final"


async def test_a_clinician_acknowledges_a_critical_alert_on_the_page_and_the_flag_clears(
    mesh: Mesh, studies: Studies, page: Page
) -> None:
    """clin1 signs in and lands on the open alerts (a clinician sees no worklist), finds the
    bleed's alert and acknowledges it: the CommunicationRequest is completed, the patient's
    Flag inactive, an acknowledgement Communication names the clinician; the alert leaves the
    list. A screenshot of the alerts is written."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    fhir = mesh.direct_fhir
    _, progress = studies["bleed-to-accept"]
    (alert,) = progress.of_type("alert.raised")
    request_id = alert.communication_request.split("/")[1]
    await page.goto(PAGE)
    await page.get_by_test_id("sign-in").click()
    await page.fill("#username", "clin1")
    await page.fill("#password", DEV_PASSWORD)
    await page.click("#kc-login")
    await expect(page.get_by_test_id("user")).to_contain_text("clinician")
    row = page.locator(f'tr[data-testid="alert"][data-alert="{request_id}"]')
    await expect(row).to_contain_text("Intracranial hemorrhage")
    await page.screenshot(path=str(SCREENSHOTS / "alerts.png"))
    await row.get_by_test_id("acknowledge").click()
    await expect(page.get_by_test_id("message")).to_contain_text("Acknowledged")
    await expect(row).to_have_count(0)

    assert (await fhir.read_resource(alert.communication_request))["status"] == "completed"
    assert alert.flag is not None
    assert (await fhir.read_resource(alert.flag))["status"] == "inactive"
    original = await fhir.read_resource(alert.communication)
    (key,) = [i for i in original["identifier"] if i["system"] == "urn:radmesh:communication"]
    acknowledgement = await only_resource(
        fhir, "Communication", identifier=f"{key['system']}|{key['value']}/acknowledgement"
    )
    assert acknowledgement["sender"]["display"] == "Clara Linde"
