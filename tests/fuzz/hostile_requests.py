"""Strategies of hostile HTTP requests: bodies mutated from a valid one, whole hostile bodies,
odd Content-Types, hostile credentials and path segments, assembled into `Request`s."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

from tests.fuzz.hostile import bad_references, bad_uids, dumps, hostile_bodies, hostile_strings
from tests.fuzz.http import FHIR_JSON, Request
from tests.fuzz.mutations import Mutation, mutations

__all__ = [
    "GOOD_CONTENT_TYPES",
    "ODD_CONTENT_TYPES",
    "BodyCases",
    "body_cases",
    "header_values",
    "hostile_ids",
    "mutation_expectations",
    "odd_content_types",
    "path_segment",
]

GOOD_CONTENT_TYPES = (
    FHIR_JSON,
    "application/json",
    f"{FHIR_JSON}; charset=utf-8",
    "application/json; charset=UTF-8",
)
ODD_CONTENT_TYPES = (
    f"{FHIR_JSON}; charset=utf-16",
    "application/json; charset=latin-1",
    'application/json; charset="utf-8"',
    "application/json; charset=",
    "application/json; charset=utf-8; charset=ascii",
    "application/json;;;",
    "APPLICATION/JSON",
    "application/fhir+xml",
    "application/xml",
    "text/html",
    "text/plain; charset=utf-8",
    "application/octet-stream",
    "multipart/form-data; boundary=x",
    "application/x-www-form-urlencoded",
    "image/png",
    "*/*",
    "application/*",
    "json",
    "",
    " ",
    ";",
    "/",
)

# what an HTTP header value can carry (no CR/LF, which a client refuses to send)
header_values: st.SearchStrategy[str] = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=120,
)
odd_content_types: st.SearchStrategy[str] = st.sampled_from(ODD_CONTENT_TYPES) | header_values

hostile_ids: st.SearchStrategy[str] = st.one_of(
    st.sampled_from(
        (
            "..",
            ".",
            "x" * 65,
            "%",
            "a%2Fb",
            "a b",
            "x\n",
            "ä",
            "-",
            "Task",
            "_history",
            "$everything",
        )
    ),
    hostile_strings.filter(lambda text: 0 < len(text) < 300),
    bad_references,
    bad_uids.filter(bool),
    st.text("abcXYZ019-.", min_size=1, max_size=70),
)


def path_segment(value: str) -> str:
    """`value` percent-encoded as one path segment (lone surrogates as their escapes)."""
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


def mutation_expectations(mutation: Mutation, *, fhir: bool) -> tuple[str, ...]:
    """What a 400 refusing `mutation` must name: the place (its path, an element's name on the
    way, the `name` of a Parameters parameter on the way), the value put there, or the kind of
    JSON text that is refused wherever it is."""
    path = mutation.path
    names = [part for part in path.split(".") if not part.isdigit()]
    places = [path, *names, *mutation.names]
    value = mutation.value
    if value is not None and len(value.strip()) >= 3:  # shorter ones would match by chance
        places.append(value[:20])
    # as written, and as a refusal quoting it with repr() writes it ('\x11', '\ud800')
    expected = [form for place in places for form in (place, repr(place)[1:-1][:40])]
    if value is not None and len(value) < 20:
        expected.append(repr(value))  # quoted whole, even a short one is no accident
    if mutation.kind == "null" and fhir:
        expected.append("null is not allowed")
    if mutation.kind == "duplicate-member":
        expected.append("twice")
    if mutation.kind in ("hostile-json", "hostile-string"):
        expected += ["deeper than", "digits", "NaN", "Infinity", "out of range", "surrogate"]
    return tuple(expected)


@dataclass(frozen=True)
class BodyCases:
    """Requests to one endpoint whose body is hostile: `valid` mutated in one place, whole
    hostile bodies, and `valid` under an odd Content-Type."""

    mutated: st.SearchStrategy[Request]
    whole: st.SearchStrategy[Request]
    typed: st.SearchStrategy[Request]


def body_cases(
    label: str,
    method: str,
    path: str,
    valid: Any,
    headers: tuple[tuple[str, str], ...],
    *,
    fhir: bool,
    body_of: Callable[[bytes], tuple[bytes, tuple[tuple[str, str], ...]]] | None = None,
) -> BodyCases:
    """The body cases of an endpoint; `body_of` turns a body into the one sent and headers of
    its own (the PACS hooks sign it)."""

    def request(
        kind: str, body: bytes, content_type: str | None, expect: tuple[str, ...]
    ) -> Request:
        sent, own = body_of(body) if body_of is not None else (body, ())
        typed = () if content_type is None else (("Content-Type", content_type),)
        return Request(f"{label} {kind}", method, path, sent, (*headers, *own, *typed), expect)

    good_types = st.sampled_from((*GOOD_CONTENT_TYPES, None))
    return BodyCases(
        mutated=st.tuples(mutations(valid, fhir=fhir), good_types).map(
            lambda case: request(
                f"mutation:{case[0].kind}",
                case[0].body,
                case[1],
                mutation_expectations(case[0], fhir=fhir),
            )
        ),
        whole=st.tuples(hostile_bodies(valid), good_types).map(
            lambda case: request(f"body:{case[0][0]}", case[0][1], case[1], ())
        ),
        typed=odd_content_types.map(
            lambda content_type: request("content-type", dumps(valid), content_type, ())
        ),
    )
