"""AI results out as HL7 v2 ORU^R01 over MLLP, for an EHR that takes results that way (optional:
`RADMESH_NOTIFIER_HL7_RESULTS_HOST`).

One ORU^R01 (v2.5.1) per state of a report, built from the FHIR record as it now stands, so
what the EHR gets is what the record says:

- results.posted (not in shadow rollout): the preliminary results;
- finding.verified: final (or corrected, when amended);
- finding.rejected, results.retracted: withdrawn.

A report with no Patient on the FHIR server is dead-lettered saying so: an EHR cannot file it.

Segments: MSH; PID from the study's Patient (identifiers, name, birth date, sex: the EHR
matches on them); ORC `RE` and OBR from the order (ORC-2/OBR-2 its placer order number, OBR-18
its accession number: the ServiceRequest's PLAC and ACSN identifiers) and the report (filler
number: the report's id; OBR-4 its code; OBR-7 the study's time; OBR-22 when the status changed;
OBR-24 RAD; OBR-25 the result status); NTE the
conclusion; per finding an OBX for its value (CWE present/absent, NM with UCUM units) and one
for its probability (DCM 122157), sharing an OBX-4 sub-ID; OBX-11 each Observation's status.

FHIR status → OBR-25 (HL7 Table 0123): preliminary P, final F, amended/corrected C, cancelled and
entered-in-error X. Observation status → OBX-11 (Table 0085): preliminary P, final F,
amended/corrected C, cancelled D (delete), entered-in-error W (post original as wrong).

MSH-10 (the control id) derives from the report and its version: a redelivered event sends the
same message again and a receiver that keeps control ids takes it once. The receiver's ACK
decides: AA/CA sent; AE/AR/CE/CR a permanent error naming its MSA-3, identifiers
redacted (the message is dead-lettered with it); no connection, no answer in time, or no ACK: a transient error (retried
like any remote call). Nothing logged names the patient.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import hl7
import hl7.mllp
import structlog

from shared.codes import SCHEME_DESIGNATORS, UCUM
from shared.errors import PermanentError, RemoteUnavailable
from shared.fhir import FhirClient
from shared.messages import (
    Event,
    FindingRejected,
    FindingVerified,
    ResultsPosted,
    ResultsRetracted,
)
from shared.narrative import concept_text
from shared.telemetry import REDACTED, without_quoted_values

__all__ = [
    "MllpSender",
    "ReportRecord",
    "SendResults",
    "build_oru",
    "observation_result_status",
    "report_result_status",
]

log = structlog.get_logger(__name__)

HL7_VERSION = "2.5.1"
_REPORT_STATUS = {
    "preliminary": "P",
    "final": "F",
    "amended": "C",
    "corrected": "C",
    "cancelled": "X",
    "entered-in-error": "X",
}
_OBSERVATION_STATUS = {
    "preliminary": "P",
    "final": "F",
    "amended": "C",
    "corrected": "C",
    "cancelled": "D",
    "entered-in-error": "W",
}
_ACCEPTED = {"AA", "CA"}
_DIGIT_WORDS = re.compile(r"\S*\d\S*")
_GENDER = {"male": "M", "female": "F", "other": "O", "unknown": "U"}
MAX_ACK_BYTES = 1_000_000


def report_result_status(status: str) -> str:
    """OBR-25 of a DiagnosticReport status; PermanentError for one no ORU can carry."""
    try:
        return _REPORT_STATUS[status]
    except KeyError:
        raise PermanentError(f"a report in status {status!r} has no HL7 result status") from None


def observation_result_status(status: str) -> str:
    """OBX-11 of an Observation status (unknown ones as not verified, R)."""
    return _OBSERVATION_STATUS.get(status, "R")


def _escaped(text: Any) -> str:
    """A value as HL7 v2 carries it: its delimiters escaped (\\F\\ \\S\\ \\T\\ \\R\\ \\E\\),
    line breaks as spaces."""
    value = str(text if text is not None else "")
    value = value.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\")
    value = value.replace("&", "\\T\\").replace("~", "\\R\\")
    return " ".join(value.split())


def _components(*values: Any) -> str:
    return "^".join(_escaped(v) for v in values).rstrip("^")


def _dtm(value: str | None) -> str:
    """A FHIR dateTime/instant as HL7 DTM (YYYYMMDDHHMMSS+ZZZZ; a date alone as YYYYMMDD)."""
    if not value:
        return ""
    if len(value) == 10:
        return value.replace("-", "")
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment.strftime("%Y%m%d%H%M%S") + (moment.strftime("%z") if moment.tzinfo else "")


def _coded(concept: dict[str, Any] | None) -> str:
    """A CodeableConcept as CWE: code^text^coding system (the first coding HL7 can name)."""
    concept = concept or {}
    for coding in concept.get("coding", []):
        system = SCHEME_DESIGNATORS.get(str(coding.get("system")))
        if system and coding.get("code"):
            return _components(
                coding["code"], coding.get("display") or concept_text(concept), system
            )
    return _components("", concept_text(concept))


def _segment(*fields: str) -> str:
    return "|".join(fields).rstrip("|")


@dataclass(frozen=True)
class ReportRecord:
    """What an ORU is made of, as the FHIR server holds it now."""

    report: dict[str, Any]
    observations: list[dict[str, Any]]
    patient: dict[str, Any] | None = None
    order: dict[str, Any] | None = None

    @property
    def reference(self) -> str:
        return f"DiagnosticReport/{self.report['id']}"

    @property
    def control_id(self) -> str:
        """MSH-10: the same for the same report version, another for each new one."""
        version = (self.report.get("meta") or {}).get("versionId", "")
        digest = hashlib.sha256(f"{self.reference}/{version}".encode()).hexdigest()
        return f"RM{digest[:18].upper()}"


def _pid(patient: dict[str, Any] | None) -> str:
    if patient is None:
        # an EHR files results under a patient: an ORU without one would only be refused
        raise PermanentError(
            "the report names no Patient on the FHIR server; no ORU^R01 can be filed without "
            "one; message dead-lettered"
        )
    identifiers = "~".join(
        _components(i.get("value"), "", "", i.get("system", ""), _identifier_type(i))
        for i in patient.get("identifier", [])
        if i.get("value")
    )
    name: dict[str, Any] = next(iter(patient.get("name", [])), {})
    given = " ".join(name.get("given", []))
    return _segment(
        "PID",
        "1",
        "",
        identifiers,
        "",
        _components(name.get("family", ""), given),
        "",
        _dtm(patient.get("birthDate")),
        _GENDER.get(str(patient.get("gender", "")), ""),
    )


def _identifier_type(identifier: dict[str, Any]) -> str:
    codes = [str(c.get("code")) for c in (identifier.get("type") or {}).get("coding", [])]
    return codes[0] if codes else "MR"


def _order_identifier(order: dict[str, Any] | None, type_code: str) -> str:
    """The order's identifier of one v2-0203 type (PLAC: placer order number, ACSN: accession
    number) as EI (value^namespace), or empty."""
    for identifier in (order or {}).get("identifier", []):
        codes = {c.get("code") for c in (identifier.get("type") or {}).get("coding", [])}
        if type_code in codes and identifier.get("value"):
            return _components(identifier["value"], identifier.get("system", ""))
    return ""


def _observation_segments(
    observation: dict[str, Any], set_id: int, sub_id: int, effective: str
) -> list[str]:
    status = observation_result_status(str(observation.get("status", "")))
    if "valueQuantity" in observation:
        quantity = observation["valueQuantity"]
        kind, value, units = "NM", _escaped(quantity.get("value")), _units(quantity)
    else:
        kind, value, units = "CWE", _coded(observation.get("valueCodeableConcept")), ""
    # OBX-1 set ID, -2 value type, -3 identifier, -4 sub-ID, -5 value, -6 units, -11 status,
    # -14 time of the observation
    rows = [(kind, _coded(observation.get("code")), value, units)]
    rows += [
        (
            "NM",
            _coded(c.get("code")),
            _escaped(c["valueQuantity"].get("value")),
            _units(c["valueQuantity"]),
        )
        for c in observation.get("component", [])
        if "valueQuantity" in c
    ]
    return [
        _segment(
            "OBX",
            str(set_id + n),
            kind_,
            code,
            str(sub_id),
            value_,
            units_,
            "",
            "",
            "",
            "",
            status,
            "",
            "",
            effective,
        )
        for n, (kind_, code, value_, units_) in enumerate(rows)
    ]


def _units(quantity: dict[str, Any]) -> str:
    unit = quantity.get("code") or quantity.get("unit") or ""
    return _components(unit, "", "UCUM") if quantity.get("system") == UCUM else _escaped(unit)


def build_oru(
    record: ReportRecord,
    *,
    now: datetime,
    receiving_application: str,
    receiving_facility: str,
    sending_facility: str,
) -> str:
    """The ORU^R01 of the record, segments ending in CR."""
    report = record.report
    result_status = report_result_status(str(report.get("status", "")))
    effective = _dtm(report.get("effectiveDateTime"))
    placer = _order_identifier(record.order, "PLAC")
    accession = _order_identifier(record.order, "ACSN").split("^", 1)[0]
    filler = _components(report["id"], "RADMESH")
    changed = _dtm((report.get("meta") or {}).get("lastUpdated")) or _dtm(now.isoformat())
    segments = [
        _segment(
            "MSH",
            "^~\\&",
            "RADMESH",
            _escaped(sending_facility),
            _escaped(receiving_application),
            _escaped(receiving_facility),
            _dtm(now.isoformat()),
            "",
            "ORU^R01^ORU_R01",
            record.control_id,
            "P",
            HL7_VERSION,
        ),
        _pid(record.patient),
        _segment("ORC", "RE", placer, filler, "", "CM"),
        _segment(
            "OBR",
            "1",
            placer,
            filler,
            _coded(report.get("code")),
            "",
            "",
            effective,
            *[""] * 10,  # OBR-8 … OBR-17
            accession,  # OBR-18 (placer field 1): the accession number, as IHE SWF has it
            "",
            "",
            "",
            changed,  # OBR-22
            "",
            "RAD",
            result_status,
        ),
        _segment("NTE", "1", "L", _escaped(report.get("conclusion", ""))),
    ]
    set_id = 1
    for sub_id, observation in enumerate(record.observations, start=1):
        added = _observation_segments(observation, set_id, sub_id, effective)
        segments += added
        set_id += len(added)
    return "\r".join(segments) + "\r"


def _without_identifiers(text: str) -> str:
    """A receiver's MSA-3, as radmesh logs and dead-letters it: quoted values and every word
    holding a digit (an MRN, an order number, a birth date) redacted, at most 200 characters."""
    return _DIGIT_WORDS.sub(REDACTED, without_quoted_values(text))[:200]


class MllpSender:
    """One MLLP connection per message to the receiver, its ACK awaited (python-hl7's client)."""

    def __init__(self, host: str, port: int, timeout_seconds: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout_seconds

    @property
    def where(self) -> str:
        return f"mllp://{self.host}:{self.port}"

    async def send(self, message: str) -> str:
        """Send `message`; returns the ACK code (AA/CA). RemoteUnavailable when the receiver
        cannot be reached or does not answer in time; PermanentError when it refuses."""
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await hl7.mllp.open_hl7_connection(
                    self.host, self.port, limit=MAX_ACK_BYTES
                )
                try:
                    writer.writeblock(message.encode())
                    await writer.drain()
                    answer = await reader.readblock()
                finally:
                    writer.close()
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as error:
            raise RemoteUnavailable(
                f"HL7 receiver did not take the ORU^R01 ({type(error).__name__}: {error}); "
                "message retried later",
                url=self.where,
                status=None,
            ) from error
        return self._acknowledged(answer.decode("utf-8", "replace"))

    def _acknowledged(self, text: str) -> str:
        try:
            ack = hl7.parse(text)
            code = str(ack.segment("MSA")[1])
            words = str(ack.segment("MSA")[3]) if len(ack.segment("MSA")) > 3 else ""
        except Exception as error:  # python-hl7 raises bare errors on a malformed answer
            raise RemoteUnavailable(
                f"HL7 receiver answered something that is not an ACK ({error}); message retried",
                url=self.where,
                status=None,
            ) from error
        if code not in _ACCEPTED:
            raise PermanentError(
                f"HL7 receiver refused the ORU^R01 with {code}: "
                f"{_without_identifiers(words) or 'no reason given'}; message dead-lettered"
            )
        return code


class SendResults:
    """Handler of results.posted, finding.verified, finding.rejected and results.retracted:
    the report's ORU^R01, as the record now stands, to the EHR."""

    def __init__(
        self,
        fhir: FhirClient,
        sender: MllpSender,
        *,
        receiving_application: str,
        receiving_facility: str,
        sending_facility: str,
    ) -> None:
        self.fhir = fhir
        self.sender = sender
        self.receiving_application = receiving_application
        self.receiving_facility = receiving_facility
        self.sending_facility = sending_facility

    async def on_posted(self, event: ResultsPosted) -> list[Event]:
        if event.rollout_mode == "shadow":
            log.info("hl7_result_skipped", reason="shadow rollout: nothing clinical is sent")
            return []
        return await self._send(event.diagnostic_report, event.event_type)

    async def on_changed(
        self, event: FindingVerified | FindingRejected | ResultsRetracted
    ) -> list[Event]:
        return await self._send(event.diagnostic_report, event.event_type)

    async def _send(self, reference: str, cause: str) -> list[Event]:
        """The report's subject and order as the record names them (a retraction after a
        patient refiling goes to the patient the results were filed under)."""
        report, observations = await self.fhir.read_report_with_results(reference)
        patient = (report.get("subject") or {}).get("reference")
        order_ref = next(
            (b["reference"] for b in report.get("basedOn", []) if "reference" in b), None
        )
        record = ReportRecord(
            report,
            observations,
            patient=await self.fhir.read_resource(patient) if patient else None,
            order=await self.fhir.read_resource(order_ref) if order_ref else None,
        )
        message = build_oru(
            record,
            now=datetime.now(UTC),
            receiving_application=self.receiving_application,
            receiving_facility=self.receiving_facility,
            sending_facility=self.sending_facility,
        )
        code = await self.sender.send(message)
        log.info(
            "hl7_result_sent",
            diagnostic_report=reference,
            cause=cause,
            result_status=report_result_status(str(report.get("status", ""))),
            control_id=record.control_id,
            ack=code,
            receiver=self.sender.where,
        )
        return []
