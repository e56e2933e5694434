"""Unit tests of the batched STOW-RS helpers (samples.dicomweb)."""

from __future__ import annotations

from email.parser import BytesParser
from email.policy import HTTP

from samples.dicomweb import multipart_related


def test_multipart_related_body_parses_back_to_the_same_parts() -> None:
    """The STOW-RS body is valid multipart/related with one application/dicom part per file."""
    parts = [b"DICM" + bytes(range(256)) * 3, b"\r\n--not-a-boundary\r\n", b""]
    boundary = "radmesh-test-boundary"
    body = multipart_related(parts, boundary)
    header = (
        f'Content-Type: multipart/related; type="application/dicom"; boundary={boundary}\r\n\r\n'
    ).encode()
    message = BytesParser(policy=HTTP).parsebytes(header + body)
    payloads = [p.get_payload(decode=True) for p in message.iter_parts()]
    assert payloads == parts
    assert all(p.get_content_type() == "application/dicom" for p in message.iter_parts())
