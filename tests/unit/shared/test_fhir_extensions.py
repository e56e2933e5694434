"""shared.fhir_extensions: radmesh's extension definitions are well-formed StructureDefinitions
that describe exactly what the mapper writes."""

from __future__ import annotations

from fhir.resources.R4B import get_fhir_model_class

from shared.fhir_extensions import DICOM_IMAGE_REFERENCE_DEFINITION, EXTENSION_DEFINITIONS
from shared.identifiers import DICOM_IMAGE_EXTENSION


def test_every_definition_parses_as_a_structure_definition_with_a_snapshot() -> None:
    """fhir.resources takes each one; each has a snapshot (the server is not asked to make it)
    whose every element has a definition and cardinalities (sdf-3)."""
    for definition in EXTENSION_DEFINITIONS:
        get_fhir_model_class("StructureDefinition").model_validate(definition)
        elements = definition["snapshot"]["element"]
        assert all({"definition", "min", "max", "base"} <= set(e) for e in elements)
        assert len({e["id"] for e in elements}) == len(elements)


def test_the_image_reference_definition_names_the_parts_the_mapper_writes() -> None:
    """Its url is the one the Observations carry, on Observation; its parts are the series (1),
    the slices (any number), the centre voxel and the SEG (at most one each)."""
    definition = DICOM_IMAGE_REFERENCE_DEFINITION
    assert definition["url"] == DICOM_IMAGE_EXTENSION
    assert definition["context"] == [{"type": "element", "expression": "Observation"}]
    slices = {
        e["sliceName"]: (e["min"], e["max"])
        for e in definition["snapshot"]["element"]
        if "sliceName" in e
    }
    assert slices == {
        "seriesInstanceUid": (1, "1"),
        "sopInstanceUid": (0, "*"),
        "centreVoxel": (0, "1"),
        "segmentationSopInstanceUid": (0, "1"),
    }
