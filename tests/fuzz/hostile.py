"""Hostile values and JSON text as hypothesis strategies, shared by the HTTP and the queue fuzz
suites (tests/fuzz/mutations.py changes a valid document with them in one place):

- JSON text radmesh's readers must refuse: nesting deeper than any resource needs, integers of
  thousands of digits, NaN and Infinity, numbers out of float range, lone UTF-16 surrogates,
  a member name twice, truncated text, bytes that are not UTF-8;
- hostile values: overlong strings, control and bidi characters, bad DICOM UIDs, bad FHIR
  references, wrong JSON types, nulls.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from shared.identifiers import is_dicom_uid

__all__ = [
    "BAD_REFERENCES",
    "BAD_UIDS",
    "Members",
    "Raw",
    "bad_references",
    "bad_uids",
    "dumps",
    "hostile_bodies",
    "hostile_strings",
    "json_values",
    "raw_json",
    "wrong_type",
]


@dataclass(frozen=True)
class Raw:
    """JSON text written as it is: what `json.dumps` cannot write (a 4301-digit integer, NaN,
    nesting 100,000 levels deep)."""

    text: str


@dataclass(frozen=True)
class Members:
    """A JSON object written with exactly these members, a name twice included."""

    pairs: tuple[tuple[str, Any], ...]


def _encode(value: Any, out: list[str]) -> None:
    if isinstance(value, Raw):
        out.append(value.text)
    elif isinstance(value, Members | dict):
        pairs = value.pairs if isinstance(value, Members) else tuple(value.items())
        out.append("{")
        for number, (name, member) in enumerate(pairs):
            out.append(", " if number else "")
            out.append(json.dumps(name))
            out.append(": ")
            _encode(member, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for number, item in enumerate(value):
            out.append(", " if number else "")
            _encode(item, out)
        out.append("]")
    else:  # str (lone surrogates become \\udXXX escapes), numbers, booleans, None
        out.append(json.dumps(value))


def dumps(value: Any) -> bytes:
    """`value` as JSON text, `Raw` and `Members` written as they are; UTF-8."""
    out: list[str] = []
    _encode(value, out)
    return "".join(out).encode()


# -- values -------------------------------------------------------------------------------------

ODD_STRINGS = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "\r\n",
    "line\nbreak",
    "\u202eevil\u202c",  # right-to-left override
    "\u2028\u2029",
    "\ufeff",
    "\ufffd",
    "e\u0301\u0301\u0301",
    "\U0001f9e0",
    "١٢٣",  # Arabic-Indic digits
    "%00",
    "%s%n{0}{}",
    "../../etc/passwd",
    "a,b|c$d&_format=xml",
    "<script>alert(1)</script>",
    "' OR '1'='1",
    "${jndi:ldap://127.0.0.1/x}",
    "null",
    "true",
    "NaN",
)
OVERLONG_LENGTHS = (65, 129, 1025, 4097, 65_537, 1_048_577)

# Characters drawn from lists (cheaper to generate than by Unicode category): lone surrogates
# (high, low, and halves of an emoji), controls, format and bidi characters, line and paragraph
# separators, combining marks, private use.
SURROGATES = "\ud800\udbff\udc00\udfff\ud83d\ude00"
CONTROLS = (
    "\x00\x01\x07\x08\x0b\x0c\x1b\x7f\x85\x9f\u200b\u200d\u200e\u202a\u202e\u2066"
    "\u2069\ufeff\u2028\u2029\u0301\u0489\u20dd\ue000\uf8ff\U000f0000\ufffe"
)
hostile_strings: st.SearchStrategy[str] = st.one_of(
    st.sampled_from(ODD_STRINGS),
    st.text(st.sampled_from(SURROGATES), min_size=1, max_size=3).map(
        lambda surrogates: f"a{surrogates}b"
    ),
    st.text(st.sampled_from(CONTROLS), min_size=1, max_size=20),
    st.text(max_size=40),
    st.tuples(st.sampled_from(OVERLONG_LENGTHS), st.sampled_from("x9.é\U0001f9e0")).map(
        lambda spec: spec[1] * spec[0]
    ),
)

BAD_UIDS = (
    "",
    "0",  # a valid UID, but of nothing
    "01.2",
    "1.02.3",
    "1..2",
    ".1.2",
    "1.2.",
    "1.2.3a",
    "1.2.3 ",
    " 1.2.3",
    "1.2.3\n",
    "1.2.3\x00",
    "١.٢.٣",
    "1.2.3.%00",
    "../1.2.3",
    "1.2/3",
    "1.2.-3",
    "+1.2",
    "1e5",
    "urn:oid:1.2.3",
    "1" * 65,
    "2.25." + "9" * 60,
    "1." * 32 + "1",
)
bad_uids: st.SearchStrategy[str] = st.one_of(
    st.sampled_from(BAD_UIDS),
    st.text("0123456789.", min_size=1, max_size=80).filter(lambda uid: not is_dicom_uid(uid)),
    st.text(max_size=70),
)

BAD_REFERENCES = (
    "",
    "Patient",
    "Patient/",
    "Patient//1",
    "/Patient/1",
    "Patient/../Observation/1",
    "Patient/..",
    "Patient/1/_history/2",
    "http://evil.example/fhir/Patient/1",
    "urn:uuid:00000000-0000-0000-0000-000000000000",
    "#contained",
    "patient/1",
    "Patient/1?_format=xml",
    "Patient/1#fragment",
    "Patient/ 1",
    "Patient/1\n",
    "Patient/%2e%2e",
    "Patient/ä",
    "Patient/" + "a" * 65,
    "Observation/1",
    "Task/1",
)
bad_references: st.SearchStrategy[str] = st.one_of(
    st.sampled_from(BAD_REFERENCES),
    st.tuples(
        st.sampled_from(("Patient", "Observation", "ImagingStudy", "Task", "Practitioner", "")),
        st.text(max_size=70),
    ).map("/".join),
)

json_scalars: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    hostile_strings,
)
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


def _deep(depth: int, opener: str, closer: str, inner: str = "1") -> Raw:
    return Raw(opener * depth + inner + closer * depth)


raw_json: st.SearchStrategy[Raw] = st.one_of(
    st.integers(4301, 6000).map(lambda digits: Raw("9" * digits)),
    st.integers(4301, 5000).map(lambda digits: Raw("-" + "1" * digits)),
    st.sampled_from(
        (
            Raw("NaN"),
            Raw("Infinity"),
            Raw("-Infinity"),
            Raw("1e400"),
            Raw("-1e400"),
            Raw("1E+999999999"),
            Raw("123456789012345678901234567890.5e300"),
            _deep(100_000, "[", "]", ""),
            _deep(20_000, '{"a": ', "}"),
        )
    ),
    st.integers(65, 400).map(lambda depth: _deep(depth, "[", "]")),
    st.integers(65, 200).map(lambda depth: _deep(depth, '{"x": ', "}")),
)


def wrong_type(value: Any) -> st.SearchStrategy[Any]:
    """A JSON value of another type than `value`'s."""
    kinds: list[st.SearchStrategy[Any]] = [
        st.booleans(),
        st.integers(min_value=-(10**20), max_value=10**20),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=12),
        st.lists(json_scalars, max_size=3),
        st.dictionaries(st.text(max_size=8), json_scalars, max_size=3),
    ]
    same = {bool: 0, int: 1, float: 2, str: 3, list: 4, dict: 5}.get(type(value))
    return st.one_of([kind for number, kind in enumerate(kinds) if number != same])


def hostile_bodies(valid: Any) -> st.SearchStrategy[tuple[str, bytes]]:
    """(kind, body) of whole bodies: random bytes, `valid` truncated, in UTF-16 or Latin-1, any
    JSON value, hostile JSON text alone."""
    text = dumps(valid)
    return st.one_of(
        st.binary(min_size=1, max_size=2048).map(lambda body: ("random-bytes", body)),
        st.integers(1, len(text) - 1).map(lambda cut: ("truncated", text[:cut])),
        st.sampled_from(("utf-16", "utf-32", "latin-1", "cp1252")).map(
            lambda codec: (
                f"encoded-{codec}",
                text.decode().replace('"', '"\u00e9', 1).encode(codec, "replace"),
            )
        ),
        json_values.map(lambda value: ("json-value", dumps(value))),
        raw_json.map(lambda raw: ("hostile-json", raw.text.encode())),
    )
