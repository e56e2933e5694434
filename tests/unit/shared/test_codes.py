"""shared/codes.py: the one home of every code radmesh writes. Its DICOM-scheme codes have the
Code Meanings of DICOM PS3.16 (as pydicom's code dictionary holds them) and sit in the context
groups the templates bind them to; no other module of shared/ or services/ writes a code of its
own."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import cast, get_args

import pytest
from pydicom.sr._concepts_dict import concepts

from shared import codes
from shared.ai_transparency import AI_ASSERTED, CLINICIAN_ASSERTED_FROM_AI
from shared.codes import Coding

ROOT = Path(__file__).resolve().parents[3]
_DICOM_SCHEMES = {"SCT", "LN", "DCM"}


def _meanings() -> dict[tuple[str, str], dict[str, set[int]]]:
    """(scheme, code) → {Code Meaning: the CIDs pydicom lists it in}."""
    found: dict[tuple[str, str], dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    for scheme in _DICOM_SCHEMES:
        names = cast(dict[str, dict[str, tuple[str, list[int]]]], concepts[scheme])
        for by_code in names.values():
            for code, (meaning, cids) in by_code.items():
                found[(scheme, code)][meaning].update(cids)
    return found


MEANINGS = _meanings()


def _codings(value: object) -> Iterator[Coding]:
    if isinstance(value, Coding):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _codings(item)
    elif isinstance(value, tuple | list):
        for item in value:
            yield from _codings(item)


ALL = sorted(
    {coding for value in vars(codes).values() for coding in _codings(value)},
    key=lambda c: (c.system, c.code),
)
DICOM = [c for c in ALL if c.system in codes.SCHEME_DESIGNATORS and c.system != codes.UCUM]


def _in_cid(coding: Coding, cids: tuple[int, ...]) -> bool:
    lists = MEANINGS[(coding.scheme_designator, coding.code)].values()
    return any(set(cids) & listed for listed in lists)


@pytest.mark.parametrize("coding", DICOM, ids=lambda c: f"{c.scheme_designator}-{c.code}")
def test_dicom_code_meanings_are_pydicoms(coding: Coding) -> None:
    """Every SCT / LN / DCM code that PS3.16 has carries one of its Code Meanings, spelled
    exactly (case-sensitive); every DCM code is one PS3.16 defines."""
    meanings = MEANINGS.get((coding.scheme_designator, coding.code))
    if meanings is None:
        assert coding.system != codes.DCM, f"DCM {coding.code} is not in PS3.16"
        return  # a SNOMED CT / LOINC code DICOM does not use (FHIR only: ABSENT 2667000)
    assert coding.display in meanings, (coding, sorted(meanings))


def test_most_dicom_codes_are_checked() -> None:
    """The check above is not vacuous: all but FHIR's 2667000 are in pydicom's dictionary."""
    unchecked = [c for c in DICOM if (c.scheme_designator, c.code) not in MEANINGS]
    assert unchecked == [codes.ABSENT]


def test_one_display_per_code() -> None:
    """A SNOMED CT / LOINC / DCM code reads the same in FHIR and in DICOM: one display."""
    displays: dict[tuple[str, str], set[str]] = defaultdict(set)
    for coding in ALL:
        displays[(coding.system, coding.code)].add(coding.display)
    assert {key: words for key, words in displays.items() if len(words) > 1} == {}
    sr_value = codes.PROBABILITY.dicom()
    assert (sr_value.value, sr_value.scheme_designator, sr_value.meaning) == (
        "122157",
        "DCM",
        codes.PROBABILITY.fhir()["display"],
    )


@pytest.mark.parametrize(
    ("cids", "members"),
    [
        ((100,), [codes.procedure_reported(m) for m in ("CT", "MR", "PT", "NM", "CR", "DX", "")]),
        ((240,), [codes.PRESENT, codes.ABSENCE_FINDINGS]),
        ((270,), [codes.DEVICE, codes.PERSON]),
        ((7005,), [codes.PROCESSING_EQUIPMENT]),
        ((7010,), [codes.OF_INTEREST, *codes.IOCM_REJECTION_TITLES]),
        ((4, 4030, 4031), list(codes.SNOMED_BY_BODY_PART.values())),
    ],
)
def test_sr_codes_are_in_their_context_groups(cids: tuple[int, ...], members: list[Coding]) -> None:
    """CID 100 for TID 1500's Procedure Reported, CID 240 for the presence of a finding, CID
    270 for observers, CID 7005 for the contributing equipment, CID 7010 for KOS titles, the
    anatomic region groups of PS3.16 Annex L (CID 4, 4030, 4031) for Body Part Examined."""
    assert [c for c in members if not _in_cid(c, cids)] == []


def test_a_ct_study_is_reported_as_ct_unspecified_body_region() -> None:
    assert codes.procedure_reported("CT") == codes.CT_UNSPECIFIED_BODY_REGION
    assert codes.CT_UNSPECIFIED_BODY_REGION.fhir() == {
        "system": "http://loinc.org",
        "code": "25045-6",
        "display": "CT unspecified body region",
    }
    assert codes.procedure_reported("OT") == codes.IMAGING_PROCEDURE


def test_absent_is_snomeds_absent_in_fhir_and_cid_240s_in_the_sr() -> None:
    assert (codes.ABSENT.code, codes.ABSENCE_FINDINGS.code) == ("2667000", "272519000")
    assert codes.ABSENT.display == codes.ABSENCE_FINDINGS.display == "Absent"


def test_ai_transparency_labels_as_the_ig_spells_them() -> None:
    assert AI_ASSERTED == {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
        "code": "AIAST",
        "display": "Artificial Intelligence asserted",
    }
    assert codes.CLINAST_AIRPT.fhir() == CLINICIAN_ASSERTED_FROM_AI


def test_literal_types_match_the_codes() -> None:
    assert get_args(codes.FindingSystem) == (codes.SNOMED_CT, codes.RADLEX, codes.LOINC)
    assert get_args(codes.IocmCode) == tuple(t.code for t in codes.IOCM_REJECTION_TITLES)


def test_body_parts_read_back_as_written() -> None:
    for part, coding in codes.SNOMED_BY_BODY_PART.items():
        assert codes.BODY_PART_BY_SNOMED[coding.code] == part


def test_dicom_of_a_non_dicom_system_is_refused() -> None:
    with pytest.raises(ValueError, match="no DICOM coding scheme"):
        codes.AIAST.dicom()


# --- no code anywhere else -------------------------------------------------------------------

_SYSTEM_URI = re.compile(
    r"https?://(snomed\.info|loinc\.org|radlex\.org|unitsofmeasure\.org|dicom\.nema\.org"
    r"|terminology\.hl7\.org|hl7\.org/fhir/(CodeSystem|restful-interaction|uv/\w+/CodeSystem))"
)
_CODE_SHAPED = re.compile(r"[1-9]\d{5,17}|\d{1,7}-\d")  # a SNOMED CT id, a LOINC code
_KNOWN_CODES = {code for scheme, code in MEANINGS} | {c.code for c in ALL}
_LABELS = {codes.AIAST.code, codes.CLINAST_AIRPT.code}
_CODE_MAKERS = {"Code", "CodedConcept"}


def _docstrings(tree: ast.AST) -> set[int]:
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, kinds)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }


def _own_codes(path: Path) -> list[str]:
    """What in one module writes a code that is not shared.codes's: a code system's URI, a
    literal that is a SNOMED CT / LOINC / DCM code (pydicom's dictionary, shared.codes), an AI
    Transparency label, a `Code(...)` / `CodedConcept(...)` call, pydicom's code dictionary."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(path.parents[1])}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) in docstrings:
                continue
            text = node.value
            if (
                _SYSTEM_URI.search(text)
                or (_CODE_SHAPED.fullmatch(text) and text in _KNOWN_CODES)
                or text in _LABELS
            ):
                found.append(f"{where} {text!r}")
        elif isinstance(node, ast.Call):
            name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
            if name in _CODE_MAKERS:
                found.append(f"{where} {name}(...)")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pydicom.sr"):
            found.append(f"{where} from {node.module} import ...")
    return found


def _modules() -> list[Path]:
    own = ROOT / "shared" / "codes.py"
    return sorted(
        path
        for top in ("shared", "services")
        for path in (ROOT / top).rglob("*.py")
        if path != own and "__pycache__" not in path.parts
    )


def test_no_module_but_shared_codes_writes_a_code_of_its_own() -> None:
    """Codes of findings are the registry's (registry/models.yaml, site data); radmesh's own
    `urn:radmesh:` systems stay with their modules; every standard code is in shared/codes.py."""
    modules = _modules()
    assert len(modules) > 50
    assert [hit for path in modules for hit in _own_codes(path)] == []


def test_the_scan_finds_what_it_looks_for(tmp_path: Path) -> None:
    """The scan above would see a drifted constant, a hand-made DICOM code and a FHIR label."""
    sample = tmp_path / "services" / "drifted.py"
    sample.parent.mkdir()
    sample.write_text(
        '"""Docstrings may name SNOMED CT 2667000 and http://snomed.info/sct."""\n'
        'ABSENT = {"system": "http://snomed.info/sct", "code": "2667000"}\n'
        'DEVICE = hd.sr.CodedConcept("121007", "DCM", "Device")\n'
        'LABEL = "AIAST"\n'
        'TAGS = ("54000100", "00080100")\n'
    )
    found = _own_codes(sample)
    assert sorted(hit.split(" ", 1)[1] for hit in found) == [
        "'121007'",
        "'2667000'",
        "'AIAST'",
        "'http://snomed.info/sct'",
        "CodedConcept(...)",
    ]
    assert all(hit.startswith("services/drifted.py:") for hit in found)
