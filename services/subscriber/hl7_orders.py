"""HL7 v2 orders over MLLP: how a site without FHIR Subscriptions says "study performed".

The subscriber listens for MLLP (`RADMESH_SUBSCRIBER_MLLP_PORT`, 2575; 0 turns it off) and takes
ORM^O01 (IHE Scheduled Workflow) and OMI^O23 orders. The study is named by its Study Instance UID
(OMI: IPC-3; ORM: ZDS-1) or, failing that, its accession number (OMI: IPC-1; ORM: OBR-18, else
ORC-3), looked up in the PACS with QIDO-RS. A study the PACS has is announced like a PACS
stable-study event (its ImagingStudy found or registered, the models that apply claimed once); one
the PACS does not have yet is accepted and left to the PACS's stable-study event.

Every message gets an original-mode ACK (MSA-1), MSA-2 its control id, MSA-3 what happened:

- AA: accepted (announced, already analysed, or waiting for the PACS);
- AE: its content cannot be acted on (no study identifier, an accession the PACS does not know
  twice over, a malformed UID);
- AR: rejected without being processed (not HL7, not a supported message type, or radmesh cannot
  process it now: the FHIR server, the PACS or the broker unavailable, or an internal error,
  logged) — the sender retries; a server refusing radmesh's own request is AE (retrying does not
  help).

A malformed message never stops the listener; nothing logged names the patient.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import hl7
import hl7.mllp
import structlog

from shared.errors import InvalidMessage, RadmeshError, TransientError
from shared.identifiers import is_dicom_uid

__all__ = ["HL7_ORDER_TYPES", "Hl7Listener", "Hl7Order", "Hl7Rejected", "ack", "read_order"]

log = structlog.get_logger(__name__)

HL7_ORDER_TYPES = {("ORM", "O01"), ("OMI", "O23")}
_ACCESSION = re.compile(r"^[A-Za-z0-9._\-]{1,16}$")  # DICOM SH, and safe in a QIDO query
MAX_MESSAGE_BYTES = 1_000_000


class Hl7Rejected(ValueError):
    """The message is not one radmesh processes (answered AR)."""


@dataclass(frozen=True)
class Hl7Order:
    control_id: str
    message_type: str
    study_instance_uid: str | None
    accession_number: str | None


def _field(message: hl7.Message, segment: str, field: int, component: int = 1) -> str:
    try:
        return str(message.extract_field(segment, 1, field, 1, component) or "").strip()
    except (KeyError, IndexError):
        return ""


def read_order(text: str) -> Hl7Order:
    """The order a message carries; Hl7Rejected (AR) for what is not a supported order,
    InvalidMessage (AE) for one that names no usable study."""
    try:
        message = hl7.parse(text)
        kind = (_field(message, "MSH", 9, 1), _field(message, "MSH", 9, 2))
        control_id = _field(message, "MSH", 10)
    except Exception as error:  # python-hl7 raises several kinds on text that is not HL7
        raise Hl7Rejected(f"not an HL7 v2 message ({type(error).__name__})") from error
    if kind not in HL7_ORDER_TYPES:
        raise Hl7Rejected(
            f"message type {'^'.join(kind)} is not taken; radmesh takes ORM^O01 and OMI^O23"
        )
    if not control_id:
        raise Hl7Rejected("MSH-10 (message control id) is empty")
    if kind == ("OMI", "O23"):
        uid, accession = _field(message, "IPC", 3), _field(message, "IPC", 1)
    else:
        uid = _field(message, "ZDS", 1)
        accession = _field(message, "OBR", 18) or _field(message, "ORC", 3)
    if uid and not is_dicom_uid(uid):
        raise InvalidMessage(f"the Study Instance UID in {'^'.join(kind)} is not a DICOM UID")
    if accession and not _ACCESSION.fullmatch(accession):
        raise InvalidMessage("the accession number is not 1-16 letters, digits, '.', '_' or '-'")
    if not uid and not accession:
        raise InvalidMessage(
            "the order names no study: no Study Instance UID (IPC-3 / ZDS-1) and no accession "
            "number (IPC-1 / OBR-18 / ORC-3)"
        )
    return Hl7Order(control_id, "^".join(kind), uid or None, accession or None)


def ack(request: str, code: str, text: str) -> str:
    """The original-mode ACK of `request` (its MSH swapped) with MSA-3 saying what happened;
    a request that is not even HL7 gets a minimal ACK of its own."""
    safe = re.sub(r"[|^~\\&\r\n]", " ", text)[:200]
    try:
        message = hl7.parse(request)
        answer = str(message.create_ack(code, application="RADMESH"))
    except Exception:  # nothing to answer in kind: an ACK naming no control id
        now = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        answer = f"MSH|^~\\&|RADMESH||||{now}||ACK|{now}|P|2.5.1\rMSA|{code}|"
    return f"{answer.rstrip(chr(13))}|{safe}\r"


Announce = Callable[[Hl7Order], Awaitable[str]]


class Hl7Listener:
    """The MLLP server: one ACK per message, in order, per connection."""

    def __init__(self, host: str, port: int, announce: Announce) -> None:
        self.host = host
        self.port = port
        self.announce = announce
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await hl7.mllp.start_hl7_server(
            self._serve, host=self.host, port=self.port, limit=MAX_MESSAGE_BYTES
        )
        log.info("mllp_listening", host=self.host, port=self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: Any, writer: Any) -> None:
        try:
            while not reader.at_eof():
                try:
                    block = await reader.readblock()
                except asyncio.IncompleteReadError:
                    break
                except (hl7.mllp.InvalidBlockError, ValueError) as error:
                    log.warning("hl7_refused", code="AR", reason=f"bad MLLP block: {error}")
                    writer.writeblock(ack("", "AR", "not an MLLP block").encode())
                    await writer.drain()
                    continue
                writer.writeblock((await self.answer(block.decode("utf-8", "replace"))).encode())
                await writer.drain()
        finally:
            writer.close()

    async def answer(self, text: str) -> str:
        """The ACK of one message (never raises)."""
        structlog.contextvars.clear_contextvars()
        code, words = await self._decide(text)
        return ack(text, code, words)

    async def _decide(self, text: str) -> tuple[str, str]:
        """(MSA-1, MSA-3) for one message, each refusal logged with its reason."""
        try:
            order = read_order(text)
            outcome = await self.announce(order)
        except Hl7Rejected as error:
            log.warning("hl7_refused", code="AR", reason=str(error))
            return "AR", str(error)
        except InvalidMessage as error:
            log.warning("hl7_refused", code="AE", reason=str(error))
            return "AE", str(error)
        except TransientError as error:
            log.warning("hl7_not_processed", code="AR", error=str(error)[:300])
            return "AR", f"not processed, send again later: {type(error).__name__}"
        except RadmeshError as error:  # e.g. the FHIR server refused a write: not the sender's
            log.error("hl7_not_processed", code="AE", error=str(error)[:300])
            return "AE", f"not processed: {type(error).__name__} (see radmesh's log)"
        except Exception:  # a bug: the sender is answered, the listener goes on
            log.exception("hl7_not_processed", code="AR")
            return "AR", "not processed: internal error (logged); send again later"
        log.info("hl7_accepted", control_id=order.control_id, outcome=outcome)
        return "AA", outcome
