"""Development FHIR server (deploy/fhir-server): search as radmesh uses it against HAPI.

token (system|value), reference, date, string, _lastUpdated prefixes, _include, _sort,
_count paging through `next` links, and 400 for unknown parameters.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import Infrastructure
from tests.integration.fhir_http import (
    TAG_SYSTEM,
    FhirHttp,
    Json,
    answering_fhir,
    post_entry,
    tagged,
    transaction,
    urn,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fhir(infra: Infrastructure) -> Iterator[FhirHttp]:
    with answering_fhir(infra.fhir_base_url) as client:
        yield client


def ids(bundle: Json, mode: str = "match") -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode]


def tag_param(tag: str) -> str:
    return f"{TAG_SYSTEM}|{tag}"


def observation(tag: str, subject: str, code: str, when: str, value: str = "x") -> Json:
    return tagged(
        {
            "resourceType": "Observation",
            "identifier": [{"system": f"urn:radmesh:obs:{tag}", "value": value}],
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": subject},
            "effectiveDateTime": when,
        },
        tag,
    )


@pytest.fixture(scope="module")
def dataset(fhir: FhirHttp) -> Json:
    """Two patients with three Observations each (distinct codes and dates), one shared tag."""
    tag = uuid.uuid4().hex
    patients = [
        fhir.create(
            tagged(
                {"resourceType": "Patient", "name": [{"family": family, "given": ["Test"]}]}, tag
            )
        )
        for family in ("Zeller", "Ångström")
    ]
    observations: list[Json] = []
    for p_index, patient in enumerate(patients):
        for o_index, (code, day) in enumerate(
            (("1111-1", "01"), ("2222-2", "15"), ("3333-3", "28"))
        ):
            observations.append(
                fhir.create(
                    observation(
                        tag,
                        f"Patient/{patient['id']}",
                        code,
                        f"2024-0{p_index + 1}-{day}T10:00:00Z",
                        value=f"{p_index}-{o_index}",
                    )
                )
            )
    return {"tag": tag, "patients": patients, "observations": observations}


def test_token_search_with_system_and_value(fhir: FhirHttp, dataset: Json) -> None:
    """identifier=system|value finds exactly the one Observation; a wrong system finds none."""
    tag = dataset["tag"]
    target = dataset["observations"][4]
    bundle = fhir.search("Observation", {"identifier": f"urn:radmesh:obs:{tag}|1-1"})
    assert ids(bundle) == [target["id"]]
    assert (
        fhir.search("Observation", {"identifier": "urn:other|1-1", "_tag": tag_param(tag)})["total"]
        == 0
    )
    coded = fhir.search("Observation", {"code": "http://loinc.org|2222-2", "_tag": tag_param(tag)})
    assert coded["total"] == 2


def test_reference_search_by_type_and_id(fhir: FhirHttp, dataset: Json) -> None:
    """subject=Patient/{id} (and the bare id) finds that patient's Observations only."""
    patient_id = dataset["patients"][0]["id"]
    expected = {o["id"] for o in dataset["observations"][:3]}
    assert set(ids(fhir.search("Observation", {"subject": f"Patient/{patient_id}"}))) == expected
    assert set(ids(fhir.search("Observation", {"patient": patient_id}))) == expected


def test_date_search_with_prefixes(fhir: FhirHttp, dataset: Json) -> None:
    """date=ge/lt bounds select Observations by effectiveDateTime; a plain day matches that day."""
    tag = tag_param(dataset["tag"])
    obs = dataset["observations"]
    in_feb = fhir.search(
        "Observation", [("_tag", tag), ("date", "ge2024-02-01"), ("date", "lt2024-03-01")]
    )
    assert set(ids(in_feb)) == {o["id"] for o in obs[3:]}
    day = fhir.search("Observation", {"_tag": tag, "date": "2024-01-15"})
    assert ids(day) == [obs[1]["id"]]


def test_string_search_prefix_exact_and_contains(fhir: FhirHttp, dataset: Json) -> None:
    """name matches case/accent-insensitive prefixes; :exact is exact; :contains finds substrings."""
    tag = tag_param(dataset["tag"])
    zeller, angstrom = dataset["patients"]
    assert ids(fhir.search("Patient", {"_tag": tag, "name": "zel"})) == [zeller["id"]]
    assert ids(fhir.search("Patient", {"_tag": tag, "family": "angst"})) == [angstrom["id"]]
    assert ids(fhir.search("Patient", {"_tag": tag, "family:exact": "Zeller"})) == [zeller["id"]]
    assert fhir.search("Patient", {"_tag": tag, "family:exact": "zeller"})["total"] == 0
    assert ids(fhir.search("Patient", {"_tag": tag, "family:contains": "ELL"})) == [zeller["id"]]


def test_last_updated_prefixes_ge_gt_le_lt(fhir: FhirHttp) -> None:
    """_lastUpdated with ge/gt/le/lt selects resources by meta.lastUpdated instant."""
    tag = uuid.uuid4().hex
    created = []
    for _ in range(3):
        created.append(fhir.create(tagged({"resourceType": "Patient"}, tag)))
        time.sleep(0.01)  # distinct millisecond timestamps
    first, middle, last = (c["meta"]["lastUpdated"] for c in created)
    all_ids = [c["id"] for c in created]

    def found(prefixed: str) -> set[str]:
        return set(ids(fhir.search("Patient", {"_tag": tag_param(tag), "_lastUpdated": prefixed})))

    assert found(f"ge{middle}") == set(all_ids[1:])
    assert found(f"gt{middle}") == {all_ids[2]}
    assert found(f"le{middle}") == set(all_ids[:2])
    assert found(f"lt{middle}") == {all_ids[0]}
    assert found(f"ge{first}") == set(all_ids)
    assert found(f"gt{last}") == set()


def test_include_adds_referenced_resources(fhir: FhirHttp, dataset: Json) -> None:
    """_include=Observation:subject adds each referenced Patient once, with search.mode include."""
    bundle = fhir.search(
        "Observation", {"_tag": tag_param(dataset["tag"]), "_include": "Observation:subject"}
    )
    assert len(ids(bundle)) == 6
    assert sorted(ids(bundle, "include")) == sorted(p["id"] for p in dataset["patients"])
    assert bundle["total"] == 6


def test_sort_ascending_and_descending(fhir: FhirHttp, dataset: Json) -> None:
    """_sort=date orders by effective date; _sort=-date reverses it."""
    tag = tag_param(dataset["tag"])
    by_date = sorted(dataset["observations"], key=lambda o: str(o["effectiveDateTime"]))
    expected = [o["id"] for o in by_date]
    assert ids(fhir.search("Observation", {"_tag": tag, "_sort": "date"})) == expected
    assert ids(fhir.search("Observation", {"_tag": tag, "_sort": "-date"})) == expected[::-1]
    by_code_then_date = fhir.search("Observation", {"_tag": tag, "_sort": "code,-date"})
    codes = [e["resource"]["code"]["coding"][0]["code"] for e in by_code_then_date["entry"]]
    assert codes == sorted(codes)


def test_count_pages_through_next_links(fhir: FhirHttp) -> None:
    """_count=4 over 10 matches gives pages of 4, 4, 2 linked by `next`; every id seen once."""
    tag = uuid.uuid4().hex
    created = {fhir.create(tagged({"resourceType": "Patient"}, tag))["id"] for _ in range(10)}
    page = fhir.search("Patient", {"_tag": tag_param(tag), "_count": "4"})
    seen: list[str] = []
    sizes: list[int] = []
    while True:
        assert page["total"] == 10
        sizes.append(len(ids(page)))
        seen += ids(page)
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not nxt:
            break
        resp = fhir.http.get(nxt[0], timeout=30)
        assert resp.status_code == 200, resp.text
        page = resp.json()
    assert sizes == [4, 4, 2]
    assert len(seen) == len(set(seen)) == 10
    assert set(seen) == created


def test_unknown_search_parameter_returns_400(fhir: FhirHttp) -> None:
    """A parameter the resource type does not define answers 400 OperationOutcome (not an empty set)."""
    resp = fhir.search_raw("Observation", {"not-a-param": "x"})
    assert resp.status_code == 400
    outcome = resp.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "not-a-param" in outcome["issue"][0]["details"]["text"]
    assert fhir.search_raw("Observation", {"_sort": "nonsense"}).status_code == 400


def test_identifier_search_over_many_observations_is_fast(fhir: FhirHttp) -> None:
    """identifier search stays fast over 500 Observations (trimmed search-parameter expressions)."""
    tag = uuid.uuid4().hex
    patient_urn = urn()
    entries = [post_entry(tagged({"resourceType": "Patient"}, tag), full_url=patient_urn)]
    entries += [
        post_entry(observation(tag, patient_urn, "1111-1", "2024-01-01", value=str(i)))
        for i in range(500)
    ]
    resp = fhir.bundle(transaction(*entries))
    assert resp.status_code == 200, resp.text[:300]
    started = time.perf_counter()
    bundle = fhir.search("Observation", {"identifier": f"urn:radmesh:obs:{tag}|250"})
    elapsed = time.perf_counter() - started
    assert bundle["total"] == 1
    assert elapsed < 1.0, f"identifier search took {elapsed:.2f}s"
