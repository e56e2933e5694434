"""shared.registry: the model registry validates at start-up and selects models per series."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from shared.errors import ConfigurationError
from shared.registry import Selector, SeriesSummary, load_registry

REGISTRY = Path(__file__).resolve().parents[3] / "registry" / "models.yaml"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def _write(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def _shipped() -> dict[str, list[dict[str, object]]]:
    loaded: dict[str, list[dict[str, object]]] = yaml.safe_load(REGISTRY.read_text())
    return loaded


def test_shipped_registry_is_valid() -> None:
    """registry/models.yaml as committed passes validation (radmesh starts with it)."""
    registry = load_registry(REGISTRY)
    assert {model.id for model in registry.models} >= {"ich-reference", "lung-nodule-reference"}


def test_head_ct_selects_the_hemorrhage_model_only() -> None:
    """A head CT series matches the ICH model's selector and not the lung nodule model's."""
    registry = load_registry(REGISTRY)
    head = SeriesSummary(
        modality="CT",
        body_part_examined="HEAD",
        sop_class_uids=(CT_IMAGE_STORAGE,),
        number_of_instances=32,
    )
    assert [model.id for model in registry.models_for([head])] == ["ich-reference"]


def test_too_few_slices_or_other_modality_select_nothing() -> None:
    """A scout of 2 slices or an MR series is not sent to CT models."""
    registry = load_registry(REGISTRY)
    scout = SeriesSummary(modality="CT", body_part_examined="CHEST", number_of_instances=2)
    mr = SeriesSummary(modality="MR", body_part_examined="HEAD", number_of_instances=100)
    assert registry.models_for([scout, mr]) == []


def test_unapproved_active_model_refuses_to_start(tmp_path: Path) -> None:
    """A model in active rollout without an approval is a configuration error naming the model."""
    document = _shipped()
    del document["models"][0]["approval"]
    with pytest.raises(
        ConfigurationError, match="ich-reference 1: rollout active needs an approval"
    ):
        load_registry(_write(tmp_path, document))


def test_unapproved_model_may_run_in_shadow_mode(tmp_path: Path) -> None:
    """Shadow mode posts nothing clinical, so an unapproved mapping is allowed there."""
    document = _shipped()
    del document["models"][0]["approval"]
    document["models"][0]["rollout"] = "shadow"
    assert load_registry(_write(tmp_path, document)).models[0].rollout == "shadow"


def test_finding_without_snomed_code_or_threshold_is_rejected(tmp_path: Path) -> None:
    """Every problem is listed: a presence finding needs a threshold and a SNOMED CT code."""
    document = _shipped()
    finding = document["models"][0]["findings"][0]  # type: ignore[index]
    del finding["threshold"]
    with pytest.raises(ConfigurationError, match="needs a threshold"):
        load_registry(_write(tmp_path, document))
    finding["threshold"] = 0.5
    finding["codes"] = [{"system": "http://radlex.org", "code": "RID1", "display": "x"}]
    with pytest.raises(ConfigurationError, match="needs a SNOMED CT code"):
        load_registry(_write(tmp_path, document))


def test_duplicate_model_version_is_rejected(tmp_path: Path) -> None:
    """The same id and version declared twice is ambiguous."""
    document = _shipped()
    document["models"].append(document["models"][0])
    with pytest.raises(ConfigurationError, match="models declared twice"):
        load_registry(_write(tmp_path, document))


def test_missing_or_broken_file_says_so(tmp_path: Path) -> None:
    """An unreadable path or invalid YAML is reported with the path."""
    with pytest.raises(ConfigurationError, match="cannot be read"):
        load_registry(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("models: [unclosed")
    with pytest.raises(ConfigurationError, match="not valid YAML"):
        load_registry(broken)


def test_a_selector_says_why_a_series_is_not_the_models() -> None:
    """The first condition that fails, in the documented order; None when the series fits."""
    selector = Selector(
        modalities=("CT",), body_parts=("HEAD",), series_description="brain", min_instances=10
    )
    fits = SeriesSummary(
        modality="CT",
        body_part_examined="HEAD",
        series_description="Axial brain",
        number_of_instances=32,
    )
    assert selector.mismatch(fits) is None and selector.matches(fits)
    assert selector.mismatch(fits.model_copy(update={"modality": "MR"})) == "modality MR is not CT"
    assert selector.mismatch(fits.model_copy(update={"body_part_examined": None})) == (
        "body part not stated is not HEAD"
    )
    assert "does not match 'brain'" in str(
        selector.mismatch(fits.model_copy(update={"series_description": "Scout"}))
    )
    assert selector.mismatch(fits.model_copy(update={"number_of_instances": 3})) == (
        "3 instances, fewer than 10"
    )


def test_the_model_server_address_comes_from_the_environment_with_a_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`${RADMESH_MODEL_SERVER_URL:-…}` in the shipped registry: the default without the
    variable, its value with it; a variable without a default that is not set stops start-up,
    naming it."""
    monkeypatch.delenv("RADMESH_MODEL_SERVER_URL", raising=False)
    assert {m.endpoint.url for m in load_registry(REGISTRY).models} == {"http://127.0.0.1:8000"}
    monkeypatch.setenv("RADMESH_MODEL_SERVER_URL", "http://model-server:8000")
    assert {m.endpoint.url for m in load_registry(REGISTRY).models} == {"http://model-server:8000"}
    document = _shipped()
    document["models"][0]["endpoint"] = {"url": "${RADMESH_NOT_SET_ANYWHERE}", "model_name": "x"}
    with pytest.raises(ConfigurationError, match="RADMESH_NOT_SET_ANYWHERE"):
        load_registry(_write(tmp_path, document))


def test_an_imported_product_is_found_by_its_maker_and_never_run() -> None:
    """An `imports` entry is found by the manufacturer, model name and version an SR names, is
    among the algorithms whose runs radmesh records, and is no model selectors pick."""
    registry = load_registry(REGISTRY)
    product = registry.imported("Example AI Vendor", "ICH Triage", "2.4")
    assert registry.algorithm(product.id, product.version) is product
    assert product.body_parts == ("HEAD", "BRAIN")
    with pytest.raises(KeyError, match="no imported product"):
        registry.imported("Example AI Vendor", "ICH Triage", "2.5")
    with pytest.raises(KeyError):
        registry.get(product.id, product.version)  # the models radmesh runs
    head = SeriesSummary(modality="CT", body_part_examined="HEAD", number_of_instances=32)
    assert product.id not in {model.id for model in registry.models_for([head])}


def test_a_product_recognised_twice_or_a_model_finding_without_output_is_refused(
    tmp_path: Path,
) -> None:
    """Two imports with the same maker and version would be ambiguous; a model's finding must
    name its output tensor (an imported product's findings need none)."""
    document = _shipped()
    twin = dict(document["imports"][0], id="vendor-ich-triage-copy")
    document["imports"].append(twin)
    with pytest.raises(ConfigurationError, match="imported products recognised twice"):
        load_registry(_write(tmp_path, document))
    document = _shipped()
    del document["models"][0]["findings"][0]["output"]  # type: ignore[index]
    with pytest.raises(ConfigurationError, match="name no output tensor"):
        load_registry(_write(tmp_path, document))
