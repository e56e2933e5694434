"""A PHI canary through the whole mesh: a patient whose name, MRN, birth date, accession numbers,
referring physician and institution are unmistakable (in the DICOM headers stored to the PACS, in
the FHIR Patient, ServiceRequest and Practitioner, and in the RIS's HL7 orders) goes through all
six services — a head CT with a bleed (results, an alert, a verification Task, a radiologist's
accept, the clinician's acknowledgement through the alert's signed link), a normal head CT of
hers from a sloppy modality (her name without carets, her birth date as YYYY-MM-DD, which the
DICOM libraries complain about, quoting them), and a head CT with slices missing, which the
model's input checks refuse (a dead letter). None of her identifiers, in any usual spelling,
shows up in a service's log, a dead letter (body or headers), a file of the blob store other than
the pixel files themselves, or an exported span (README: "Logs never carry patient names or
identifiers")."""

from __future__ import annotations

import asyncio
import json
import random
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import hl7
import hl7.mllp
import pydicom
import pytest

from samples.dicom_series import PatientInfo, StudyIdentity
from samples.load import LoadResult, Settings, load_study
from samples.mesh_watch import MeshWatcher, StudyProgress
from shared.bus import REASON_HEADER, ServiceQueues
from shared.dead_letters import SERVICES as CONSUMERS
from shared.messages import AlertRaised, FindingVerified, ResultsPosted, SeriesManifest
from tests.conftest import Infrastructure
from tests.e2e.conftest import SERVICES, Mesh
from tests.identity import access_token
from tests.waiting import until

pytestmark = pytest.mark.integration

# Slices 14–16 of 32 never reach the PACS: a gap of four slice spacings, which the head CT
# model's input checks refuse (registry/models.yaml: uneven_spacing defaults to refuse).
MISSING_SLICES = frozenset({14, 15, 16})


@dataclass(frozen=True)
class Canary:
    """One patient's identity, random per run, that nothing but the PACS and the FHIR record
    (and the pixel files fetched from the PACS) may hold."""

    family: str
    given: str
    patient_id: str
    birth_date: str  # YYYYMMDD
    accession_numbers: tuple[str, str, str]  # the bleed's, the sloppy modality's, the gappy
    physician_family: str
    physician_given: str
    institution: str

    @classmethod
    def hatch(cls) -> Canary:
        tag = "".join(random.choices(string.ascii_lowercase, k=6))
        born = date(1901, 1, 1) + timedelta(days=random.randrange(365 * 30))
        return cls(
            family=f"Canaryzz{tag}",
            given=f"Tweety{tag}",
            patient_id=f"ZZMRN{random.randrange(10**8, 10**9)}",
            birth_date=born.strftime("%Y%m%d"),
            accession_numbers=(f"ZZACC{tag}1", f"ZZACC{tag}2", f"ZZACC{tag}3"),  # SH: ≤ 16
            physician_family=f"Referzz{tag}",
            physician_given=f"Petra{tag}",
            institution=f"Zz{tag} Canary Infirmary",
        )

    @property
    def birth_date_iso(self) -> str:
        return f"{self.birth_date[:4]}-{self.birth_date[4:6]}-{self.birth_date[6:]}"

    def identity(self, accession_number: str, *, sloppy: bool = False) -> StudyIdentity:
        """Her identity for one study; `sloppy`: the DICOM header as a modality that writes the
        name without carets and the birth date in ISO form has it (the record stays right)."""
        return StudyIdentity(
            patient=PatientInfo(
                name=f"{self.family}^{self.given}",
                patient_id=self.patient_id,
                birth_date=self.birth_date,
                sex="F",
            ),
            accession_number=accession_number,
            referring_physician=f"{self.physician_family}^{self.physician_given}^^DR",
            institution_name=self.institution,
            written_as=(
                (
                    ("PatientName", f"{self.family} {self.given}".upper()),
                    ("PatientBirthDate", self.birth_date_iso),
                )
                if sloppy
                else ()
            ),
        )

    def patterns(self) -> dict[str, re.Pattern[str]]:
        """What must not appear, by what it is: each identifier in its usual spellings, in any
        case (names also as DICOM PN, "Given Family" and "Family Given"; the birth date as
        DICOM DA and as FHIR date, not inside a longer number)."""
        words = {
            "patient family name": self.family,
            "patient given name": self.given,
            "patient name (DICOM PN)": f"{self.family}^{self.given}",
            "patient name (Given Family)": f"{self.given} {self.family}",
            "patient name (Family Given)": f"{self.family} {self.given}",
            "patient ID (MRN)": self.patient_id,
            "accession number (bleed)": self.accession_numbers[0],
            "accession number (sloppy modality)": self.accession_numbers[1],
            "accession number (slices missing)": self.accession_numbers[2],
            "referring physician's family name": self.physician_family,
            "referring physician's given name": self.physician_given,
            "institution name": self.institution,
        }
        patterns = {
            what: re.compile(re.escape(value), re.IGNORECASE) for what, value in words.items()
        }
        for what, value in (
            ("birth date (YYYYMMDD)", self.birth_date),
            ("birth date (YYYY-MM-DD)", self.birth_date_iso),
        ):
            patterns[what] = re.compile(rf"(?<!\d){re.escape(value)}(?!\d)")
        return patterns


def _leaks(patterns: dict[str, re.Pattern[str]], texts: Iterable[tuple[str, str]]) -> list[str]:
    """Where each pattern matches in the (where, text) pairs, with the text around it."""
    found = []
    for where, text in texts:
        for what, pattern in patterns.items():
            match = pattern.search(text)
            if match is not None:
                around = text[max(0, match.start() - 80) : match.end() + 80]
                found.append(f"{where}: {what} in …{around}…")
    return found


def _header_text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else repr(value)


async def _dead_letters(
    amqp_url: str, prefix: str, take_off: set[str]
) -> list[tuple[str, str, str]]:
    """(queue, correlation id, the whole message as text: properties, headers and body) of every
    dead letter on the consumers' dead-letter queues, browsed; those of the runs in `take_off`
    are taken off the shared queues, the others go back unacknowledged when the channel
    closes."""
    letters = []
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        for service in CONSUMERS:
            name = ServiceQueues(service, prefix).dead_letter_queue
            queue = await channel.declare_queue(name, passive=True)
            while (message := await queue.get(no_ack=False, fail=False)) is not None:
                properties = json.dumps(message.info(), default=_header_text)
                body = message.body.decode("utf-8", "replace")
                letters.append((name, str(message.correlation_id), f"{properties}\n{body}"))
                if message.correlation_id in take_off:
                    await message.ack()
        await channel.close()
    finally:
        await connection.close()
    return letters


def _blob_files(root: Path) -> tuple[list[Path], list[Path]]:
    """The blob store's files: (the pixel files the manifests name, every other file)."""
    files = [path for path in root.rglob("*") if path.is_file()]
    pixels = {
        root / instance.blob_key
        for path in files
        if path.name == "manifest.json"
        for instance in SeriesManifest.model_validate_json(path.read_bytes()).instances
    }
    return sorted(pixels), sorted(path for path in files if path not in pixels)


def _span_services(mesh: Mesh, correlation_id: str) -> set[str]:
    """The services with an exported span in a trace of the run."""
    traces = mesh.spans.runs.get(correlation_id, set())
    return {service for trace_id, service, _ in mesh.spans.spans if trace_id in traces}


@dataclass(frozen=True)
class CanaryStudies:
    """Her three studies as loaded, and how the mesh took them."""

    bleed: LoadResult
    sloppy: LoadResult
    gappy: LoadResult
    progress: dict[str, StudyProgress]  # the bleed's and the sloppy one's events, by study UID
    gappy_run: str  # the correlation id of the dead-lettered run

    def run(self, study: LoadResult) -> str:
        detected = self.progress[study.study_instance_uid].first("study.detected")
        assert detected is not None
        return str(detected.correlation_id)


async def _inference_refused(mesh: Mesh, study: LoadResult) -> list[str]:
    """The runs of `study` in the inference service's dead-letter queue (browsed, left there),
    each refused for its uneven slice spacing."""
    runs = []
    connection = await aio_pika.connect(mesh.settings.broker.url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(
            ServiceQueues("inference", mesh.settings.broker.queue_prefix).dead_letter_queue,
            passive=True,
        )
        while (message := await queue.get(no_ack=False, fail=False)) is not None:
            if study.study_instance_uid.encode() in message.body:
                reason = _header_text((message.headers or {}).get(REASON_HEADER))
                assert "uneven slice spacing" in reason, reason
                runs.append(str(message.correlation_id))
        await channel.close()  # every browsed letter goes back to the queue
    finally:
        await connection.close()
    return runs


async def _canary_studies(mesh: Mesh, canary: Canary) -> CanaryStudies:
    """Her head CT with a bleed analysed (results, alert, Task), her normal head CT from the
    sloppy modality analysed (results, Task), and her head CT with slices missing
    dead-lettered by the inference service."""
    watcher = MeshWatcher(mesh.settings.broker.url, mesh.settings.broker.exchange, mesh.direct_fhir)
    await watcher.start()
    try:
        loaded = []
        for scenario, accession_number, sloppy, missing in (
            ("head-bleed", canary.accession_numbers[0], False, frozenset[int]()),
            ("head-normal", canary.accession_numbers[1], True, frozenset[int]()),
            ("head-bleed", canary.accession_numbers[2], False, MISSING_SLICES),
        ):
            loaded.append(
                await asyncio.to_thread(
                    load_study,
                    scenario,
                    settings=Settings.from_env(),
                    seed=random.randrange(10**7, 10**8),
                    identity=canary.identity(accession_number, sloppy=sloppy),
                    missing_slices=missing,
                )
            )
            if not missing:
                watcher.track(loaded[-1].study_instance_uid)
        bleed, sloppy_study, gappy = loaded
        incomplete = await watcher.wait(120)
        assert not incomplete, f"{[p.missing() for p in incomplete]}\n{mesh.log_tail('mapper')}"
        progress = watcher.studies[bleed.study_instance_uid]

        async def alerted() -> bool:
            await watcher.poll()
            return bool(progress.of_type("alert.raised"))

        await until(alerted, "the notifier raises the bleed's alert", seconds=60)
    finally:
        await watcher.stop()
    refused: list[str] = []

    async def dead_lettered() -> bool:
        refused[:] = await _inference_refused(mesh, gappy)
        return bool(refused)

    await until(dead_lettered, "the inference service dead-letters the gappy study", 60)
    return CanaryStudies(bleed, sloppy_study, gappy, dict(watcher.studies), refused[0])


def _orm(canary: Canary, control_id: str, accession_number: str) -> str:
    """The RIS's ORM^O01 saying the study was performed, with the whole patient (PID: MRN,
    name, birth date, sex, address), the referring doctor (PV1-8) and the accession (OBR-18)."""
    obr = ["OBR", "1", "ORD-1", accession_number, "CTHEAD^CT head without contrast"]
    obr += [""] * (18 - len(obr)) + [accession_number]
    return "\r".join(
        [
            f"MSH|^~\\&|RIS|CANARY|RADMESH|CANARY|20261201120000||ORM^O01|{control_id}|P|2.5.1",
            f"PID|1||{canary.patient_id}^^^{canary.institution}^MR||{canary.family}^"
            f"{canary.given}||{canary.birth_date}|F|||1 Canary Lane^^Zzville",
            f"PV1|1|O|||||||{canary.physician_family}^{canary.physician_given}^^^^DR",
            f"ORC|SC|ORD-1|{accession_number}||CM",
            "|".join(obr),
        ]
    )


async def _hl7_orders(canary: Canary, accession_number: str) -> list[str]:
    """The MSA-1 of each answer to the canary's orders over MLLP (the subscriber's listener,
    README "What the subscriber takes"): the analysed study's order, an order naming no study,
    and a PID segment that is no HL7 message."""
    reader, writer = await hl7.mllp.open_hl7_connection("127.0.0.1", 2575)
    codes = []
    try:
        for message in (
            hl7.parse(_orm(canary, "CANARY-1", accession_number)),
            hl7.parse(_orm(canary, "CANARY-2", "")),
            _orm(canary, "CANARY-3", accession_number).split("\r", 1)[1],
        ):
            writer.writemessage(message)
            await writer.drain()
            answer = await asyncio.wait_for(reader.readmessage(), 30)
            codes.append(str(answer.extract_field("MSA", 1, 1)))
    finally:
        writer.close()
        await writer.wait_closed()
    return codes


async def _verify_and_acknowledge(
    mesh: Mesh, infra: Infrastructure, progress: StudyProgress
) -> None:
    """rad1 opens the bleed's Task and accepts it; the ordering clinician acknowledges the alert
    through its signed link; the mapper and the notifier have handled the verdict."""
    (posted,) = progress.of_type("results.posted")
    assert isinstance(posted, ResultsPosted)
    task = progress.tasks[posted.diagnostic_report].split("/")[1]
    token = await access_token(infra, "rad1")
    watcher = MeshWatcher(mesh.settings.broker.url, mesh.settings.broker.exchange, mesh.direct_fhir)
    await watcher.start()
    try:
        verdicts = watcher.track(progress.study_instance_uid)
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
            async with http.get(f"http://127.0.0.1:8095/tasks/{task}") as response:
                assert response.status == 200, await response.text()
            async with http.post(f"http://127.0.0.1:8095/tasks/{task}/accept", json={}) as response:
                assert response.status == 200, await response.text()

        async def verified() -> bool:
            await watcher.poll()
            return bool(verdicts.of_type("finding.verified"))

        await until(verified, "the verification service publishes finding.verified")
    finally:
        await watcher.stop()
    (verdict,) = verdicts.of_type("finding.verified")
    assert isinstance(verdict, FindingVerified)
    (alert,) = progress.of_type("alert.raised")
    assert isinstance(alert, AlertRaised)
    communication = await mesh.direct_fhir.read_resource(alert.communication)
    (link,) = [
        part["contentAttachment"]["url"]
        for part in communication["payload"]
        if "contentAttachment" in part
    ]
    async with aiohttp.ClientSession() as http:
        async with http.get(link) as response:
            assert response.status == 200, await response.text()
        async with http.post(link, headers={"Accept": "application/json"}) as response:
            assert response.status == 200, await response.text()
    for service in ("mapper", "notifier"):
        await mesh.wait_for_log(
            service,
            verdict.correlation_id,
            lambda lines: any(
                line.get("event") == "message_handled"
                and line.get("event_type") == "finding.verified"
                for line in lines
            ),
        )


# The loader writes the sloppy modality's birth date; pydicom warns about it, as it should.
@pytest.mark.filterwarnings("ignore:Invalid value for VR DA:UserWarning")
async def test_the_canary_patients_identifiers_appear_in_no_log_dead_letter_manifest_or_span(
    mesh: Mesh, infra: Infrastructure
) -> None:
    """Her three head CTs through the six services (results, alert, Task, accept,
    acknowledgement; results from the sloppy modality's headers; a dead letter for the one with
    slices missing) and her RIS's orders over MLLP: her name, MRN, birth date, accession
    numbers, referring physician and institution (any case, DICOM PN and DA forms, FHIR forms)
    are in no service's log, no dead letter on the consumers' dead-letter queues, no blob-store
    file but the fetched pixel files, and no exported span — while the pixel files and the FHIR
    Patient do hold them (the canary really went in)."""
    canary = Canary.hatch()
    studies = await _canary_studies(mesh, canary)
    bleed = studies.progress[studies.bleed.study_instance_uid]
    assert await _hl7_orders(canary, studies.bleed.accession_number) == ["AA", "AE", "AR"]
    await _verify_and_acknowledge(mesh, infra, bleed)

    async def exported() -> bool:
        names = {(service, name) for _, service, name in mesh.spans.spans}
        return (
            all(
                _span_services(mesh, studies.run(study))
                >= {f"radmesh-{service}" for service in SERVICES}
                for study in (studies.bleed, studies.sloppy)
            )
            and "radmesh-inference" in _span_services(mesh, studies.gappy_run)
            and ("radmesh-verification", "POST /alert-links/{token}") in names
            and ("radmesh-mapper", "mapper consume finding.verified") in names
            and ("radmesh-notifier", "notifier consume finding.verified") in names
        )

    await until(exported, "every service exports the canary runs' spans")

    # The canary went in: the record and the fetched pixels name her.
    (posted,) = bleed.of_type("results.posted")
    patient = await mesh.direct_fhir.read_resource(posted.study.patient or "")
    assert (patient["name"][0]["family"], patient["birthDate"]) == (
        canary.family,
        canary.birth_date_iso,
    )
    assert [i["value"] for i in patient["identifier"]] == [canary.patient_id]
    order = await mesh.direct_fhir.read_resource(posted.study.service_request or "")
    assert [i["value"] for i in order["identifier"]] == [studies.bleed.accession_number]
    pixels, others = _blob_files(Path(mesh.env["RADMESH_STORAGE__BLOB_DIR"]))
    for study, written_as in (
        (studies.bleed, (f"{canary.family}^{canary.given}", canary.birth_date)),
        (studies.sloppy, (f"{canary.family} {canary.given}".upper(), canary.birth_date_iso)),
        (studies.gappy, (f"{canary.family}^{canary.given}", canary.birth_date)),
    ):
        fetched = [path for path in pixels if study.study_instance_uid in path.parts]
        assert fetched, f"no pixel file of {study.study_instance_uid} in the blob store"
        header = pydicom.dcmread(fetched[0], stop_before_pixels=True)
        assert (str(header.PatientName), header["PatientBirthDate"].value) == written_as
        assert header.AccessionNumber == study.accession_number
        assert header.InstitutionName == canary.institution
        assert any(
            path.name == "manifest.json" and study.study_instance_uid in path.parts
            for path in others
        ), f"no manifest of {study.study_instance_uid} in the blob store"

    letters = await _dead_letters(
        mesh.settings.broker.url, mesh.settings.broker.queue_prefix, take_off={studies.gappy_run}
    )
    assert [queue for queue, run, _ in letters if run == studies.gappy_run] == [
        ServiceQueues("inference", mesh.settings.broker.queue_prefix).dead_letter_queue
    ]
    texts: list[tuple[str, str]] = []
    for service in SERVICES:
        for number, line in enumerate(
            (mesh.logs / f"{service}.log").read_text(errors="replace").splitlines(), 1
        ):
            texts.append((f"{service}.log line {number}", line))
    texts += [(f"dead letter of run {run} on {queue}", text) for queue, run, text in letters]
    texts += [(f"blob store {path}", path.read_bytes().decode("latin-1")) for path in others]
    # Protobuf text format: every span's name, attributes, events, links and status, and the
    # resource's attributes (non-ASCII would be escaped; the canary's identifiers are ASCII).
    texts += [("exported spans", str(export)) for export in list(mesh.spans.exports)]
    leaks = _leaks(canary.patterns(), texts)
    assert not leaks, f"{len(leaks)} leaks of the canary's identity:\n" + "\n".join(leaks)
