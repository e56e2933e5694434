"""Documents mutated from a valid one in one place, as a hypothesis strategy: the case names the
path of the change in the notation of pydantic and `shared.json_input` (`series.0.modality.code`),
so a test can check that a refusal says where."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from tests.fuzz.hostile import (
    Members,
    Raw,
    bad_references,
    bad_uids,
    dumps,
    hostile_strings,
    json_values,
    raw_json,
    wrong_type,
)

__all__ = ["Mutation", "dotted", "mutations"]

Path = tuple[str | int, ...]


def _paths(document: Any, where: Path = ()) -> list[Path]:
    """Every place in a JSON document below its root."""
    found: list[Path] = []
    members: Sequence[tuple[str | int, Any]] = (
        list(document.items())
        if isinstance(document, dict)
        else list(enumerate(document))
        if isinstance(document, list)
        else []
    )
    for key, child in members:
        found.append((*where, key))
        found.extend(_paths(child, (*where, key)))
    return found


def _inner_names(element: Any, limit: int = 40) -> tuple[str, ...]:
    """The member names and `name`s within an element: a refusal of a changed element may well
    name a part of it (a Parameters resource without its parameters lacks its "type")."""
    found: list[str] = []
    stack = [element]
    while stack and len(found) < limit:
        node = stack.pop()
        if isinstance(node, dict):
            found += [str(key) for key in node]
            if isinstance(node.get("name"), str):
                found.append(node["name"])
            stack += list(node.values())
        elif isinstance(node, list):
            stack += node
    return tuple(found[:limit])


def _get(document: Any, path: Path) -> Any:
    for key in path:
        document = document[key]
    return document


def _replaced(document: Any, path: Path, change: Callable[[Any, str | int], None]) -> Any:
    changed = copy.deepcopy(document)
    change(_get(changed, path[:-1]), path[-1])
    return changed


def dotted(path: Path) -> str:
    """`series.0.uid`: a path as pydantic's errors and `shared.json_input` write it."""
    return ".".join(str(key) for key in path)


@dataclass(frozen=True)
class Mutation:
    """A valid document changed in one place: how (`kind`), where (`path`, dotted), the
    resulting body, the value put there as text (if one was), and names a refusal may give the
    place by: the `name`s of the elements on the way (a FHIR Parameters parameter is known by
    its name, not by its place) and the names within the changed element."""

    kind: str
    path: str
    body: bytes
    value: str | None = None
    names: tuple[str, ...] = ()

    def __repr__(self) -> str:  # failure reports: the change, not megabytes of body
        return f"Mutation({self.kind} at {self.path or '<body>'}: {self.body[:160]!r})"


def mutations(valid: Any, *, fhir: bool = False) -> st.SearchStrategy[Mutation]:
    """`valid` changed in one place: a value replaced by null, a value of another type, a
    hostile string, a bad DICOM UID or FHIR reference, hostile JSON text; an element removed;
    an unknown member added; a member written twice; a value wrapped in a list. With `fhir`,
    the unknown members are FHIR-looking (`extension`, `_status`, `modifierExtension`)."""
    # an element first (array items alike: ten instances are one element), then one place of it
    places: dict[str, list[Path]] = {}
    for place in _paths(valid):
        element = dotted(tuple("*" if isinstance(key, int) else key for key in place))
        places.setdefault(element, []).append(place)
    elements = sorted(places)
    return _mutation(valid, places, elements, fhir)


@st.composite
def _mutation(
    draw: st.DrawFn, valid: Any, places: dict[str, list[Path]], elements: list[str], fhir: bool
) -> Mutation:
    path = draw(st.sampled_from(places[draw(st.sampled_from(elements))]))
    current = _get(valid, path)
    parent = _get(valid, path[:-1])
    names = tuple(
        str(node["name"])
        for node in (_get(valid, path[:depth]) for depth in range(len(path) + 1))
        if isinstance(node, dict) and isinstance(node.get("name"), str)
    ) + _inner_names(current)
    kind = draw(
        st.sampled_from(
            (
                "null",
                "wrong-type",
                "hostile-string",
                "bad-uid",
                "bad-reference",
                "hostile-json",
                "removed",
                "unknown-member",
                "duplicate-member",
                "wrapped",
            )
        )
    )
    if kind in ("unknown-member", "duplicate-member") and not isinstance(parent, dict):
        kind = "removed"
    replacement: Any
    if kind == "null":
        replacement = None
    elif kind == "wrong-type":
        replacement = draw(wrong_type(current))
    elif kind == "hostile-string":
        replacement = draw(hostile_strings)
    elif kind == "bad-uid":
        replacement = draw(bad_uids)
    elif kind == "bad-reference":
        replacement = draw(bad_references)
    elif kind == "hostile-json":
        replacement = draw(raw_json)
    elif kind == "wrapped":
        replacement = [current]
    if kind == "removed":

        def remove(node: Any, key: str | int) -> None:
            del node[key]

        return Mutation(kind, dotted(path), dumps(_replaced(valid, path, remove)), names=names)
    if kind == "unknown-member":
        name = draw(
            st.sampled_from(("extension", "_status", "modifierExtension", "contained"))
            if fhir
            else st.text(min_size=1, max_size=12)
        )
        name = name if name not in parent else f"{name}-unknown"
        value = draw(json_values)

        def add(node: Any, key: str | int) -> None:
            node[name] = value

        return Mutation(
            kind, dotted((*path[:-1], name)), dumps(_replaced(valid, path, add)), name, names
        )
    if kind == "duplicate-member":
        # the object holding the member is written with the member twice, another value last
        pairs = Members((*parent.items(), (str(path[-1]), draw(json_values))))
        holder = pairs if len(path) == 1 else _replaced_by(valid, path[:-1], pairs)
        return Mutation(kind, dotted(path), dumps(holder), names=names)

    def put(node: Any, key: str | int) -> None:
        node[key] = replacement

    # what a refusal quoting the new value shows of it (Python's str of it, as f-strings write)
    text = None if replacement is None or isinstance(replacement, Raw) else str(replacement)
    return Mutation(kind, dotted(path), dumps(_replaced(valid, path, put)), text, names)


def _replaced_by(document: Any, path: Path, value: Any) -> Any:
    changed = copy.deepcopy(document)
    _get(changed, path[:-1])[path[-1]] = value
    return changed
