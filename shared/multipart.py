"""A push parser for `multipart/related` bodies (RFC 2046 section 5.1), as WADO-RS sends them.

The body is fed in whatever chunks the socket gives; each part's bytes go to a sink as
memoryviews of those chunks, found with `bytes.find` (C speed) rather than read line by line,
so a series streams to the blob store at close to the wire's rate and in constant memory. Only
the bytes that could start a boundary (fewer than its length) are held between chunks.

    parser = MultipartParser(boundary_of(content_type), sink)
    for chunk in body:
        parser.feed(chunk)
    parser.close()  # MultipartError when the closing boundary never came
"""

from __future__ import annotations

import re
from enum import Enum, auto
from typing import Protocol

__all__ = ["MultipartError", "MultipartParser", "PartSink", "boundary_of"]

# Part headers longer than this are not a DICOMweb part (Content-Type, Content-Length,
# Content-Location): the body is not what it claims to be.
_MAX_HEADER_BYTES = 16 << 10
_BOUNDARY = re.compile(r"""boundary=(?:"([^"]{1,200})"|([^;,\s]{1,200}))""", re.IGNORECASE)


class MultipartError(ValueError):
    """The body is not a complete multipart/related body (no boundary, cut off, malformed)."""


class PartSink(Protocol):
    """Where the parts go: start, any number of data calls, end, for each part in order."""

    def start(self, headers: dict[str, str]) -> None: ...

    def data(self, chunk: memoryview) -> None: ...

    def end(self) -> None: ...


def boundary_of(content_type: str) -> bytes:
    """The boundary parameter of a multipart Content-Type header."""
    if not content_type.lower().lstrip().startswith("multipart/"):
        raise MultipartError(f"not a multipart body: Content-Type {content_type[:100]!r}")
    match = _BOUNDARY.search(content_type)
    if match is None:
        raise MultipartError(f"no boundary in Content-Type {content_type[:100]!r}")
    return (match.group(1) or match.group(2)).encode("ascii", "strict")


def _headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.decode("latin-1").split("\r\n"):
        name, colon, value = line.partition(":")
        if not colon:
            raise MultipartError(f"a part header line without a colon: {line[:100]!r}")
        headers[name.strip().lower()] = value.strip()
    return headers


class _State(Enum):
    PREAMBLE = auto()  # before the first boundary
    AFTER_BOUNDARY = auto()  # a boundary read: "--" ends the body, CRLF starts a part
    HEADERS = auto()
    BODY = auto()
    EPILOGUE = auto()  # after the closing boundary: ignored


class MultipartParser:
    """Feeds the parts of one multipart body to a sink."""

    def __init__(self, boundary: bytes, sink: PartSink) -> None:
        if not boundary:
            raise MultipartError("an empty multipart boundary")
        self._first = b"--" + boundary  # the first boundary may open the body without a CRLF
        self._delimiter = b"\r\n--" + boundary
        self._sink = sink
        self._state = _State.PREAMBLE
        self._pending = b""
        self.parts = 0  # parts complete
        self._steps = {
            _State.PREAMBLE: self._preamble,
            _State.AFTER_BOUNDARY: self._after_boundary,
            _State.HEADERS: self._headers_step,
            _State.BODY: self._body,
            _State.EPILOGUE: self._epilogue,
        }

    def feed(self, chunk: bytes) -> None:
        data = self._pending + chunk if self._pending else chunk
        view = memoryview(data)
        position, going = 0, True
        while going:
            position, going = self._steps[self._state](data, view, position)
        self._pending = data[position:]

    # Each step reads what it can from `position` on and returns where to go on and whether to
    # go on now (False: it needs more bytes, and keeps those from the returned position).

    def _body(self, data: bytes, view: memoryview, position: int) -> tuple[int, bool]:
        delimiter = self._delimiter
        found = data.find(delimiter, position)
        if found < 0:
            # all but what could be the start of a boundary cut off by the chunk's end
            safe = len(data) - len(delimiter) + 1
            if safe > position:
                self._sink.data(view[position:safe])
                return safe, False
            return position, False
        if found > position:
            self._sink.data(view[position:found])
        self._sink.end()
        self.parts += 1
        self._state = _State.AFTER_BOUNDARY
        return found + len(delimiter), True

    def _headers_step(self, data: bytes, view: memoryview, position: int) -> tuple[int, bool]:
        if len(data) - position < 2:
            return position, False
        if data.startswith(b"\r\n", position):  # no headers: the body starts at once
            self._sink.start({})
            self._state = _State.BODY
            return position + 2, True
        found = data.find(b"\r\n\r\n", position)
        if found < 0:
            if len(data) - position > _MAX_HEADER_BYTES:
                raise MultipartError(f"part {self.parts + 1}: headers over 16 KB")
            return position, False
        self._sink.start(_headers(data[position:found]))
        self._state = _State.BODY
        return found + 4, True

    def _after_boundary(self, data: bytes, view: memoryview, position: int) -> tuple[int, bool]:
        if len(data) - position < 2:
            return position, False
        if data.startswith(b"--", position):
            self._state = _State.EPILOGUE
            return position, True
        found = data.find(b"\r\n", position)
        if found < 0:
            if len(data) - position > 1024:
                raise MultipartError(f"part {self.parts + 1}: no line end after its boundary")
            return position, False
        if data[position:found].strip(b" \t"):  # only transport padding may follow
            raise MultipartError(f"part {self.parts + 1}: text after its boundary")
        self._state = _State.HEADERS
        return found + 2, True

    def _preamble(self, data: bytes, view: memoryview, position: int) -> tuple[int, bool]:
        found = data.find(self._first, position)
        if found < 0:
            return max(position, len(data) - len(self._first) + 1), False
        self._state = _State.AFTER_BOUNDARY
        return found + len(self._first), True

    def _epilogue(self, data: bytes, view: memoryview, position: int) -> tuple[int, bool]:
        return len(data), False

    def close(self) -> None:
        """The body has ended: anything but the closing boundary is a cut-off body."""
        if self._state is not _State.EPILOGUE:
            raise MultipartError(
                f"the multipart body ended before its closing boundary "
                f"({self.parts} parts complete)"
            )
