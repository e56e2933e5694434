"""shared.multipart: the parts of a multipart/related body, whatever chunks it arrives in."""

from __future__ import annotations

import random

import pytest

from shared.multipart import MultipartError, MultipartParser, boundary_of

BOUNDARY = b"radmesh-0f3a"


class Parts:
    """A sink that keeps every part's headers and bytes, and checks the calls' order."""

    def __init__(self) -> None:
        self.parts: list[tuple[dict[str, str], bytearray]] = []
        self.open = False

    def start(self, headers: dict[str, str]) -> None:
        assert not self.open
        self.parts.append((headers, bytearray()))
        self.open = True

    def data(self, chunk: memoryview) -> None:
        assert self.open
        self.parts[-1][1].extend(chunk)

    def end(self) -> None:
        assert self.open
        self.open = False


def _body(*parts: bytes, preamble: bytes = b"", padding: bytes = b"") -> bytes:
    body = preamble
    for part in parts:
        body += b"--" + BOUNDARY + padding + b"\r\nContent-Type: application/dicom\r\n\r\n"
        body += part + b"\r\n"
    return body + b"--" + BOUNDARY + b"--\r\n"


def _parse(body: bytes, cuts: list[int]) -> Parts:
    sink = Parts()
    parser = MultipartParser(BOUNDARY, sink)
    start = 0
    for cut in [*sorted(cuts), len(body)]:
        parser.feed(body[start:cut])
        start = cut
    parser.close()
    return sink


# parts that look like a boundary without being one, an empty part, a large one
PARTS = [
    b"DICM" + b"\x00" * 300 + b"\r\n--radmesh-0f3" + b"\r\n-" + b"--" + BOUNDARY[:-1],
    b"",
    bytes(random.Random(7).randrange(256) for _ in range(200_000)),
    b"\r\n",
]


@pytest.mark.parametrize("seed", range(20))
def test_parts_are_the_same_whatever_chunks_the_body_arrives_in(seed: int) -> None:
    """Cut at random places (a boundary or a CRLF cut in two included), the body gives the
    same parts, bytes for bytes, with their headers."""
    body = _body(*PARTS, preamble=b"a preamble\r\n")
    chance = random.Random(seed)
    cuts = [chance.randrange(len(body)) for _ in range(chance.choice([1, 5, 50, 500]))]
    sink = _parse(body, cuts)
    assert [bytes(data) for _, data in sink.parts] == PARTS
    assert all(headers == {"content-type": "application/dicom"} for headers, _ in sink.parts)
    assert not sink.open


def test_a_body_fed_one_byte_at_a_time_gives_its_parts() -> None:
    body = _body(b"first", b"second", padding=b" \t")
    sink = _parse(body, list(range(1, len(body))))
    assert [bytes(data) for _, data in sink.parts] == [b"first", b"second"]


def test_a_part_without_headers_starts_its_body_at_once() -> None:
    body = b"--" + BOUNDARY + b"\r\n\r\nbare\r\n--" + BOUNDARY + b"--"
    sink = _parse(body, [len(BOUNDARY) + 3])
    assert sink.parts == [({}, bytearray(b"bare"))]


def test_a_body_cut_off_says_how_many_parts_were_complete() -> None:
    body = _body(b"first", b"second")
    sink = Parts()
    parser = MultipartParser(BOUNDARY, sink)
    parser.feed(body[: body.index(b"second") + 3])
    with pytest.raises(MultipartError, match=r"before its closing boundary \(1 parts complete\)"):
        parser.close()


def test_text_after_a_boundary_is_not_a_multipart_body() -> None:
    parser = MultipartParser(BOUNDARY, Parts())
    with pytest.raises(MultipartError, match="text after its boundary"):
        parser.feed(b"--" + BOUNDARY + b"garbage\r\n\r\n")


def test_endless_part_headers_are_refused() -> None:
    parser = MultipartParser(BOUNDARY, Parts())
    parser.feed(b"--" + BOUNDARY + b"\r\n")
    with pytest.raises(MultipartError, match="headers over 16 KB"):
        parser.feed(b"X-Long: " + b"a" * 20_000)


def test_a_part_header_line_without_a_colon_is_refused() -> None:
    parser = MultipartParser(BOUNDARY, Parts())
    with pytest.raises(MultipartError, match="without a colon"):
        parser.feed(b"--" + BOUNDARY + b"\r\nnot a header\r\n\r\nbody")


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        ('multipart/related; type="application/dicom"; boundary=abc-1', b"abc-1"),
        ('Multipart/Related; boundary="a b:c"; type="application/dicom"', b"a b:c"),
        ("multipart/related;BOUNDARY=xyz;type=application/dicom", b"xyz"),
    ],
)
def test_the_boundary_is_read_from_the_content_type(content_type: str, boundary: bytes) -> None:
    assert boundary_of(content_type) == boundary


@pytest.mark.parametrize(
    ("content_type", "reason"),
    [
        ("application/dicom+json", "not a multipart body"),
        ('multipart/related; type="application/dicom"', "no boundary"),
    ],
)
def test_a_content_type_without_a_boundary_is_an_error(content_type: str, reason: str) -> None:
    with pytest.raises(MultipartError, match=reason):
        boundary_of(content_type)
