"""services.subscriber.hl7_orders: which orders are read, and how each is acknowledged."""

from __future__ import annotations

import hl7
import pytest

from services.subscriber.hl7_orders import Hl7Listener, Hl7Order, Hl7Rejected, ack, read_order
from shared.errors import InvalidMessage, RemoteRejected, RemoteUnavailable

MSH = "MSH|^~\\&|RIS|HOSP|RADMESH|HOSP|20261201120000||{type}|CTRL-9|P|2.5.1"


def _message(kind: str, *segments: str) -> str:
    return "\r".join([MSH.format(type=kind), *segments])


def test_an_omi_names_its_study_by_ipc_and_an_orm_by_zds_or_accession() -> None:
    omi = read_order(_message("OMI^O23", "PID|1||P1", "ORC|SC|O1", "IPC|ACC-7||1.2.840.99.1"))
    assert omi == Hl7Order("CTRL-9", "OMI^O23", "1.2.840.99.1", "ACC-7")
    orm = read_order(
        _message("ORM^O01", "ORC|SC|O1|ACC-8", "ZDS|1.2.840.99.2^RIS^Application^DICOM")
    )
    assert (orm.study_instance_uid, orm.accession_number) == ("1.2.840.99.2", "ACC-8")


@pytest.mark.parametrize(
    ("text", "error", "reason"),
    [
        ("not hl7 at all", Hl7Rejected, "not an HL7 v2 message"),
        (_message("ADT^A01", "PID|1||P1"), Hl7Rejected, r"ADT\^A01 is not taken"),
        (_message("ORM^O01", "ORC|SC|O1"), InvalidMessage, "names no study"),
        (_message("ORM^O01", "ZDS|%00^RIS"), InvalidMessage, "not a DICOM UID"),
        (_message("ORM^O01", "ORC|SC|O1|ACC 1' OR 1=1"), InvalidMessage, "accession number"),
    ],
)
def test_what_is_not_a_usable_order_is_refused_saying_why(
    text: str, error: type[Exception], reason: str
) -> None:
    with pytest.raises(error, match=reason):
        read_order(text)


def test_the_ack_answers_the_message_in_kind_with_the_words() -> None:
    request = _message("ORM^O01", "ORC|SC|O1|ACC-1")
    answer = hl7.parse(ack(request, "AE", "the order names | no study"))
    assert str(answer.extract_field("MSH", 1, 9, 1, 1)) == "ACK"
    assert str(answer.extract_field("MSA", 1, 1)) == "AE"
    assert str(answer.extract_field("MSA", 1, 2)) == "CTRL-9"
    assert str(answer.extract_field("MSA", 1, 3)) == "the order names   no study"
    assert str(hl7.parse(ack("garbage", "AR", "x")).extract_field("MSA", 1, 1)) == "AR"


async def test_a_pacs_or_fhir_outage_is_ar_so_the_sender_retries() -> None:
    async def unavailable(order: Hl7Order) -> str:
        raise RemoteUnavailable("PACS down", url="http://pacs", status=None)

    listener = Hl7Listener("127.0.0.1", 0, unavailable)
    answer = hl7.parse(await listener.answer(_message("ORM^O01", "ORC|SC|O1|ACC-1")))
    assert str(answer.extract_field("MSA", 1, 1)) == "AR"
    assert "send again later" in str(answer.extract_field("MSA", 1, 3))


async def test_a_refusal_retrying_cannot_fix_is_ae_and_a_bug_is_ar_without_dropping_the_line() -> (
    None
):
    async def refused(order: Hl7Order) -> str:
        raise RemoteRejected("FHIR POST: 422", url="http://fhir", status=422)

    async def broken(order: Hl7Order) -> str:
        raise KeyError("a bug")

    message = _message("ORM^O01", "ORC|SC|O1|ACC-1")
    answer = hl7.parse(await Hl7Listener("127.0.0.1", 0, refused).answer(message))
    assert str(answer.extract_field("MSA", 1, 1)) == "AE"
    answer = hl7.parse(await Hl7Listener("127.0.0.1", 0, broken).answer(message))
    assert str(answer.extract_field("MSA", 1, 1)) == "AR"
    assert "internal error" in str(answer.extract_field("MSA", 1, 3))
