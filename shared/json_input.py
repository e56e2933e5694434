"""The reading of JSON request bodies at radmesh's HTTP boundary: hostile input is refused with
an `InvalidMessage` saying what and where (the handlers answer it with a 400 OperationOutcome)
instead of reaching the code behind, where it used to become a 500: UTF-8 only, bounded nesting,
no lone surrogates, no NaN/Infinity or numbers out of range, no duplicate member names, and (for
FHIR resources) no nulls."""

from __future__ import annotations

import codecs
import json
import math
import re
from typing import Any, NoReturn, TypeAlias

from shared.errors import InvalidMessage

__all__ = ["MAX_INTEGER_DIGITS", "MAX_JSON_DEPTH", "read_json"]

MAX_JSON_DEPTH = 64  # a FHIR Bundle of ImagingStudies with extensions nests ~15 levels
MAX_INTEGER_DIGITS = 4300  # Python's own limit for int(str) (sys.get_int_max_str_digits())
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # how a surrogate gets into JSON text


def read_json(body: bytes, *, fhir: bool = False, not_json: str = "body is not JSON") -> Any:
    """The JSON value of a request body, or InvalidMessage saying what is wrong and where.

    Refused: bytes that are not UTF-8 (a UTF-8 byte order mark is skipped), text that is not
    JSON (the message starts with `not_json`), nesting deeper than MAX_JSON_DEPTH, integers
    longer than MAX_INTEGER_DIGITS, NaN/Infinity and numbers out of float range, a member name
    twice in one object, lone UTF-16 surrogates (\\ud800 escapes: not text, unencodable later);
    with `fhir`, any null (FHIR JSON has none, except inside an array of primitives that has
    its `_name` companion).

    The checks after parsing cost little on ordinary bodies: the depth walk visits containers
    only, and the walk over every string and null runs only when the text has a surrogate
    escape that did not pair up, or (FHIR) the word null."""
    try:
        text = body.removeprefix(codecs.BOM_UTF8).decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidMessage(
            f"{not_json}: it is not UTF-8 (byte 0x{body[error.start]:02x} at {error.start})"
        ) from error
    try:
        value = json.loads(
            text,
            parse_int=_integer,
            parse_float=_float,
            parse_constant=_constant,
            object_pairs_hook=_object,
        )
    except RecursionError as error:  # far deeper than MAX_JSON_DEPTH
        raise InvalidMessage(f"body nests deeper than {MAX_JSON_DEPTH} levels") from error
    except ValueError as error:  # JSONDecodeError
        raise InvalidMessage(f"{not_json}: {error}") from error
    too_deep = _too_deep(value)
    if too_deep is not None:
        raise InvalidMessage(
            f"body nests deeper than {MAX_JSON_DEPTH} levels (at {_path(too_deep)[:120]})"
        )
    surrogates = _SURROGATE_ESCAPE.search(text) is not None and not _encodable(value)
    nulls = fhir and "null" in text
    if surrogates or nulls:
        _check_strings_and_nulls(value, surrogates=surrogates, nulls=nulls)
    return value


def _integer(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise InvalidMessage(
            f"body has an integer of {len(digits.lstrip('-'))} digits; "
            f"at most {MAX_INTEGER_DIGITS} are accepted"
        )
    return int(digits)


def _float(literal: str) -> float:
    number = float(literal)
    if not math.isfinite(number):
        raise InvalidMessage(f"body has a number out of range: {literal[:40]}")
    return number


def _constant(name: str) -> NoReturn:
    raise InvalidMessage(f"body has {name}, which is not a JSON number (RFC 8259)")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members = dict(pairs)
    if len(members) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise InvalidMessage(f"body has the member {name[:60]!r} twice in one object")
            seen.add(name)
    return members


# A location in the body: (parent, key), rendered as pydantic does ("entry.0.resource.series").
_Where: TypeAlias = "tuple[_Where, str | int] | None"
_CONTAINERS = frozenset({dict, list})  # what json.loads (with _object) builds


def _path(where: _Where) -> str:
    parts: list[str] = []
    while where is not None:
        where, key = where
        parts.append(str(key)[:40])
    path = ".".join(reversed(parts)) or "<body>"
    return path if len(path) <= 200 else f"{path[:200]}..."


def _too_deep(value: Any) -> _Where | None:
    """Where a container sits deeper than MAX_JSON_DEPTH levels, or None. Breadth first over
    containers only, without paths (wide bodies cost little); the path of a refusal is found
    afterwards, up through the levels kept."""
    levels: list[list[Any]] = [[value] if type(value) in _CONTAINERS else []]
    while levels[-1]:
        if len(levels) > MAX_JSON_DEPTH:
            return _where_is(levels[-1][0], levels)
        below: list[Any] = []
        for node in levels[-1]:
            members = node.values() if type(node) is dict else node
            below.extend(child for child in members if type(child) in _CONTAINERS)
        levels.append(below)
    return None


def _where_is(target: Any, levels: list[list[Any]]) -> _Where:
    keys: list[str | int] = []
    for level in reversed(levels[:-1]):
        for node in level:
            members = node.items() if type(node) is dict else enumerate(node)
            key = next((key for key, child in members if child is target), None)
            if key is not None:
                keys.append(key)
                target = node
                break
    where: _Where = None
    for key in reversed(keys):
        where = (where, key)
    return where


def _encodable(value: Any) -> bool:
    """False when a string holds a lone surrogate (paired escapes were joined by the parser)."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _has_surrogate(text: str) -> bool:
    return not text.isascii() and _SURROGATE.search(text) is not None


def _check_strings_and_nulls(value: Any, *, surrogates: bool, nulls: bool) -> None:
    """Find the lone surrogate or the FHIR null, and say where (depth is already bounded)."""
    if surrogates and isinstance(value, str) and _has_surrogate(value):
        raise _surrogate_in(None)
    stack: list[tuple[Any, _Where]] = [(value, None)] if type(value) in _CONTAINERS else []
    while stack:
        node, where = stack.pop()
        members = node.items() if type(node) is dict else enumerate(node)
        for key, item in members:
            if type(key) is str:  # a member of an object
                if surrogates and _has_surrogate(key):
                    raise InvalidMessage(
                        f"{_path(where)}: a member name has a lone UTF-16 surrogate "
                        "(\\ud800-\\udfff), which is not text"
                    )
                if nulls:
                    _refuse_fhir_null(node, key, item, where)
            if type(item) is str:
                if surrogates and _has_surrogate(item):
                    raise _surrogate_in((where, key))
            elif type(item) in _CONTAINERS:
                stack.append((item, (where, key)))


def _surrogate_in(where: _Where) -> InvalidMessage:
    return InvalidMessage(f"{_path(where)}: a lone UTF-16 surrogate (\\ud800-\\udfff) is not text")


def _refuse_fhir_null(node: dict[str, Any], key: str, item: Any, where: _Where) -> None:
    if item is None:
        raise InvalidMessage(
            f"{_path((where, key))}: null is not allowed in FHIR JSON; leave the element out"
        )
    if isinstance(item, list) and None in item:
        companion = key[1:] if key.startswith("_") else f"_{key}"
        if companion not in node:  # nulls only align an array of primitives with its extensions
            raise InvalidMessage(
                f"{_path(((where, key), item.index(None)))}: null is not allowed in FHIR JSON "
                f"(only in an array of primitives with its {companion!r} companion)"
            )
