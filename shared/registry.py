"""The model registry: one YAML file declaring every AI model radmesh may run (DESIGN.md).

Each entry says which model at which version, where it is served, which series it applies to
(the selector), how its inputs are prepared, how each output becomes a finding (codes in SNOMED CT,
RadLex, LOINC; value type; unit; threshold; whether it is critical and which consult follows),
its rollout mode, and who approved the mapping. Beside the models it runs, `imports` declares the
third-party AI products whose DICOM SRs the PACS receives and radmesh maps into the same FHIR
results (services/mapper/imports.py): how each product is recognised in an SR's Contributing
Equipment, and how its findings' codes become the registry's findings. `load_registry` validates the whole file and
raises ConfigurationError listing every problem: radmesh refuses to start with an invalid or
unapproved mapping. Swapping or upgrading a model is an edit of this file.
"""

from __future__ import annotations

import os
import re
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.codes import SNOMED_CT, FindingSystem
from shared.codes import Coding as StandardCoding
from shared.errors import ConfigurationError

__all__ = [
    "Algorithm",
    "AlgorithmIdentity",
    "Approval",
    "Coding",
    "Endpoint",
    "EscalationStep",
    "FindingMapping",
    "ImportedAlgorithm",
    "InputAction",
    "InputChecks",
    "ModelEntry",
    "Preprocessing",
    "Registry",
    "Selector",
    "SeriesSummary",
    "load_registry",
]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Coding(_Strict):
    """One code of a finding: SNOMED CT, RadLex or LOINC."""

    system: FindingSystem
    code: str = Field(min_length=1)
    display: str = Field(min_length=1)

    def coding(self) -> StandardCoding:
        """This code as a `shared.codes.Coding`, for its FHIR and DICOM forms."""
        return StandardCoding(self.system, self.code, self.display)


class Endpoint(_Strict):
    """Where the model is served and how to call it."""

    url: str = "http://127.0.0.1:8000"
    protocol: Literal["oip-v2-http"] = "oip-v2-http"
    model_name: str
    model_version: str = ""
    timeout_seconds: float = Field(default=120.0, gt=0)
    retries: int = Field(default=2, ge=0)


class SeriesSummary(_Strict):
    """What a selector looks at in one series (from QIDO-RS or the ImagingStudy)."""

    modality: str
    body_part_examined: str | None = None
    series_description: str | None = None
    sop_class_uids: tuple[str, ...] = ()
    number_of_instances: int = 0


class Selector(_Strict):
    """Which series a model applies to; every stated condition must hold."""

    modalities: tuple[str, ...] = Field(min_length=1)
    body_parts: tuple[str, ...] = ()
    sop_class_uids: tuple[str, ...] = ()
    series_description: str | None = None  # a regular expression, searched case-insensitively
    min_instances: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _pattern_compiles(self) -> Selector:
        if self.series_description is not None:
            re.compile(self.series_description)
        return self

    def matches(self, series: SeriesSummary) -> bool:
        """True when this series is one the model should read."""
        return self.mismatch(series) is None

    def mismatch(self, series: SeriesSummary) -> str | None:
        """Why this series is not one the model reads (the first condition, in the order
        modality, body part, SOP class, series description, number of instances), or None."""
        if series.modality.upper() not in {modality.upper() for modality in self.modalities}:
            return f"modality {series.modality or 'none'} is not {'/'.join(self.modalities)}"
        if self.body_parts and (series.body_part_examined or "").upper() not in {
            part.upper() for part in self.body_parts
        }:
            return (
                f"body part {series.body_part_examined or 'not stated'} is not "
                f"{'/'.join(self.body_parts)}"
            )
        if self.sop_class_uids and not set(series.sop_class_uids) & set(self.sop_class_uids):
            return (
                f"SOP classes {', '.join(series.sop_class_uids) or 'unknown'} are not the model's"
            )
        if self.series_description is not None and not re.search(
            self.series_description, series.series_description or "", re.IGNORECASE
        ):
            return (
                f"series description {series.series_description or '(none)'!r} does not match "
                f"{self.series_description!r}"
            )
        if series.number_of_instances < self.min_instances:
            return f"{series.number_of_instances} instances, fewer than {self.min_instances}"
        return None


class Preprocessing(_Strict):
    """How the inference service prepares the volume the model receives."""

    input_name: str = "volume"
    spacing_input_name: str | None = "spacing"
    datatype: Literal["INT16", "FP32"] = "INT16"
    window: tuple[float, float] | None = None  # (center, width) in HU; None: raw HU
    max_slices: int | None = Field(default=None, ge=1)


InputAction = Literal["refuse", "flag", "accept"]


class InputChecks(_Strict):
    """What the inference service does with input that can make a model answer confidently
    and wrongly (services/inference/input_checks.py): `refuse` (the study is not analysed: the
    message is dead-lettered saying why), `flag` (the model runs and its results carry an
    input-quality note in the report's conclusion and on each finding), or `accept`.

    - `lossy`: lossy-compressed pixels (Lossy Image Compression 01, or a lossy transfer
      syntax such as JPEG baseline): subtle findings (a thin bleed) may be gone;
    - `uneven_spacing`: slice gaps (missing slices) or spacing that varies by more than
      `spacing_tolerance` (a fraction of the median spacing) — the model's volume is distorted.

    Mixed orientations and mixed image sizes are always refused: no volume can be made."""

    lossy: InputAction = "refuse"
    uneven_spacing: InputAction = "refuse"
    spacing_tolerance: float = Field(default=0.1, gt=0, le=1)


class EscalationStep(_Strict):
    """One step of a critical finding's escalation: if the alert is still unacknowledged
    `after_minutes` after the previous step (the alert itself, for the first), it goes to
    `recipient`: `requester` (the order's requester, again), `ordering-department` (the
    requester's PractitionerRole's organization, else the order's Encounter's serviceProvider),
    `fallback` (the notifier's configured fallback recipient, e.g. the on-call radiologist), or
    a FHIR reference to a Practitioner, PractitionerRole, CareTeam or Organization."""

    after_minutes: float = Field(gt=0)
    recipient: str = Field(
        pattern=r"^(requester|ordering-department|fallback|(Practitioner|PractitionerRole|CareTeam|Organization)/[A-Za-z0-9\-.]{1,64})$"
    )


class FindingMapping(_Strict):
    """How one model output becomes a FHIR Observation."""

    key: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    # the output tensor holding presence probability or value (a model's findings: required;
    # an imported product's findings are recognised by their codes instead)
    output: str | None = None
    value_type: Literal["presence", "quantity"]
    codes: tuple[Coding, ...] = Field(min_length=1)
    threshold: float | None = Field(default=None, ge=0, le=1)
    unit: str | None = None  # UCUM, for quantities
    per_lesion: bool = False  # one finding per row of the output (e.g. one per nodule)
    location_output: str | None = None  # tensor of lesion centres in voxels (z, y, x)
    # the finding's segmentation: a tensor of its voxels within a box, and the tensor of that
    # box (z0, y0, x0, z1, y1, x1, inclusive voxel indices); radmesh stores it as a DICOM SEG
    mask_output: str | None = None
    mask_box_output: str | None = None
    depends_on: str | None = None  # quantity: reported only where this presence finding is present
    body_site: Coding | None = None
    critical: bool = False
    consult: Coding | None = None  # the ServiceRequest the notifier raises for a critical finding
    consult_specialty: str | None = None  # e.g. "neurosurgery": the text of that request
    # A critical finding's alert escalates along these steps until it is acknowledged.
    escalation: tuple[EscalationStep, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> FindingMapping:
        if self.value_type == "quantity" and not self.unit:
            raise ValueError(f"finding {self.key}: a quantity finding needs a UCUM unit")
        if not any(coding.system == SNOMED_CT for coding in self.codes):
            raise ValueError(f"finding {self.key}: needs a SNOMED CT code")
        if self.value_type == "quantity" and self.depends_on is None:
            raise ValueError(
                f"finding {self.key}: a quantity finding needs depends_on (a presence finding)"
            )
        if self.consult is not None and not self.critical:
            raise ValueError(f"finding {self.key}: a consult is only raised for critical findings")
        if (self.mask_output is None) != (self.mask_box_output is None):
            raise ValueError(f"finding {self.key}: mask_output and mask_box_output go together")
        if self.mask_output is not None and (self.per_lesion or self.value_type != "presence"):
            raise ValueError(f"finding {self.key}: only a single presence finding has a mask")
        if self.escalation and not self.critical:
            raise ValueError(f"finding {self.key}: only a critical finding's alert escalates")
        return self


class Approval(_Strict):
    """Who approved this model's mapping for clinical use, and when."""

    approved_by: str = Field(min_length=1)
    approved_on: date
    note: str | None = None


class Algorithm(_Strict):
    """An AI algorithm at one version whose results radmesh records: a model it runs
    (`ModelEntry`) or a third-party product whose SRs it imports (`ImportedAlgorithm`)."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    version: str = Field(min_length=1)
    display: str
    manufacturer: str
    findings: tuple[FindingMapping, ...] = Field(min_length=1)
    diagnostic_report_code: Coding
    rollout: Literal["shadow", "preliminary", "active"]
    approval: Approval | None = None
    # The maker says its results are not for clinical decisions (research, reference
    # algorithms): the review page labels its results so.
    not_for_clinical_use: bool = False

    @model_validator(mode="after")
    def _approved_unless_shadow(self) -> Algorithm:
        if self.approval is None and self.rollout != "shadow":
            raise ValueError(
                f"model {self.id} {self.version}: rollout {self.rollout} needs an approval "
                "(approved_by, approved_on); unapproved models may only run in shadow mode"
            )
        keys = [finding.key for finding in self.findings]
        if len(keys) != len(set(keys)):
            raise ValueError(f"model {self.id} {self.version}: finding keys must be unique")
        presence = {f.key: f for f in self.findings if f.value_type == "presence"}
        for finding in self.findings:
            if finding.depends_on is None:
                continue
            parent = presence.get(finding.depends_on)
            if parent is None or parent.per_lesion != finding.per_lesion:
                raise ValueError(
                    f"model {self.id} {self.version}: finding {finding.key} depends on "
                    f"{finding.depends_on!r}, which must be a presence finding of the same model "
                    "with the same per_lesion"
                )
        return self

    @property
    def body_parts(self) -> tuple[str, ...]:
        """The body parts the algorithm's results are about (the review page's window)."""
        return ()

    def finding(self, key: str) -> FindingMapping:
        for mapping in self.findings:
            if mapping.key == key:
                return mapping
        raise KeyError(f"model {self.id} has no finding {key!r}")


class ModelEntry(Algorithm):
    """One AI model at one version, served where `endpoint` says, run on the series its
    selector picks."""

    endpoint: Endpoint
    selector: Selector
    preprocessing: Preprocessing = Preprocessing()
    input_checks: InputChecks = InputChecks()

    @model_validator(mode="after")
    def _outputs_named(self) -> ModelEntry:
        unnamed = [finding.key for finding in self.findings if finding.output is None]
        if unnamed:
            raise ValueError(
                f"model {self.id} {self.version}: findings {unnamed} name no output tensor"
            )
        for finding in self.findings:
            if finding.value_type == "presence" and finding.threshold is None:
                # an imported product's SR says present or absent itself
                raise ValueError(f"finding {finding.key}: a presence finding needs a threshold")
        return self

    @property
    def body_parts(self) -> tuple[str, ...]:
        return self.selector.body_parts


class AlgorithmIdentity(_Strict):
    """How a third-party product names itself in an SR's Contributing Equipment Sequence
    (Manufacturer, Manufacturer's Model Name; Software Versions: the entry's version)."""

    manufacturer: str = Field(min_length=1, max_length=64)
    manufacturer_model_name: str = Field(min_length=1, max_length=64)


class ImportedAlgorithm(Algorithm):
    """A third-party AI product whose TID 1500 SRs radmesh maps into FHIR: an SR whose
    Contributing Equipment names `recognised_by` at `version` becomes this algorithm's run; a
    measurement group whose Finding (or a measurement whose name) carries one of a finding's
    codes becomes that finding."""

    recognised_by: AlgorithmIdentity
    imported_body_parts: tuple[str, ...] = Field(default=(), alias="body_parts")

    @property
    def body_parts(self) -> tuple[str, ...]:
        return self.imported_body_parts


class Registry(_Strict):
    """Every model radmesh may run, and every third-party product whose SRs it imports."""

    models: tuple[ModelEntry, ...]
    imports: tuple[ImportedAlgorithm, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> Registry:
        seen = [(entry.id, entry.version) for entry in (*self.models, *self.imports)]
        duplicates = {entry for entry in seen if seen.count(entry) > 1}
        if duplicates:
            raise ValueError(f"models declared twice: {sorted(duplicates)}")
        products = [
            (
                entry.recognised_by.manufacturer,
                entry.recognised_by.manufacturer_model_name,
                entry.version,
            )
            for entry in self.imports
        ]
        twice = {product for product in products if products.count(product) > 1}
        if twice:
            raise ValueError(f"imported products recognised twice: {sorted(twice)}")
        return self

    def get(self, model_id: str, version: str) -> ModelEntry:
        """A model radmesh runs (KeyError: none of that id and version)."""
        for model in self.models:
            if model.id == model_id and model.version == version:
                return model
        raise KeyError(f"no model {model_id} {version} in the registry")

    def algorithm(self, algorithm_id: str, version: str) -> Algorithm:
        """A model or an imported product: whoever's results a run records (KeyError: none)."""
        for entry in (*self.models, *self.imports):
            if entry.id == algorithm_id and entry.version == version:
                return entry
        raise KeyError(f"no model {algorithm_id} {version} in the registry")

    def imported(self, manufacturer: str, model_name: str, version: str) -> ImportedAlgorithm:
        """The imported product an SR's Contributing Equipment names (KeyError: none)."""
        for entry in self.imports:
            identity = entry.recognised_by
            if (identity.manufacturer, identity.manufacturer_model_name, entry.version) == (
                manufacturer,
                model_name,
                version,
            ):
                return entry
        raise KeyError(
            f"no imported product {manufacturer!r} {model_name!r} version {version!r} "
            "in the registry"
        )

    def routes(self, series: list[SeriesSummary]) -> list[tuple[ModelEntry, list[str | None]]]:
        """Each model with, per series, why it does not read it (None: it does)."""
        return [(model, [model.selector.mismatch(s) for s in series]) for model in self.models]

    def models_for(self, series: list[SeriesSummary]) -> list[ModelEntry]:
        """The models with at least one series of the study matching their selector."""
        return [
            model
            for model in self.models
            if any(model.selector.matches(summary) for summary in series)
        ]


# `${NAME}` or `${NAME:-default}` in a string value: one registry file for every environment
# (the model server at 127.0.0.1 here, `http://model-server:8000` in Compose or Kubernetes).
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(value: Any, unset: list[str]) -> Any:
    """`value` with the environment's variables put in (those unset, without a default, are
    listed in `unset`)."""
    if isinstance(value, dict):
        return {key: _expand(item, unset) for key, item in value.items()}
    if isinstance(value, list):
        return [_expand(item, unset) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        found = os.environ.get(name) or default
        if found is None:
            unset.append(name)
            return match.group(0)
        return found

    return _VARIABLE.sub(substitute, value)


def load_registry(path: Path) -> Registry:
    """Read and validate the registry file (its `${NAME:-default}` put in from the environment);
    ConfigurationError lists every problem found."""
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ConfigurationError(f"model registry {path} cannot be read: {error}") from error
    except yaml.YAMLError as error:
        raise ConfigurationError(f"model registry {path} is not valid YAML: {error}") from error
    unset: list[str] = []
    document = _expand(raw, unset)
    if unset:
        raise ConfigurationError(
            f"model registry {path} names environment variables that are not set and have no "
            f"default: {', '.join(sorted(set(unset)))}; radmesh will not start"
        )
    try:
        return Registry.model_validate(document)
    except ValidationError as error:
        problems = "\n".join(
            f"  - {'.'.join(str(part) for part in detail['loc']) or '<file>'}: {detail['msg']}"
            for detail in error.errors()
        )
        raise ConfigurationError(
            f"model registry {path} is invalid; radmesh will not start:\n{problems}"
        ) from error
