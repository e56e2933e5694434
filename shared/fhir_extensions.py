"""The FHIR extensions radmesh defines, as StructureDefinitions it publishes on the FHIR server at
the mapper's start-up (`publish_extension_definitions`), so that the server's validator, and
any client, can resolve and check what radmesh writes.

One so far: `urn:radmesh:extension:dicom-image-reference` on Observation. FHIR R4's Reference
cannot point inside an ImagingStudy (to a series or an instance), and R5's ImagingSelection is
not an R4 resource. The extension names the DICOM series, the SOP instances a finding lies on,
and its centre voxel; the Observation is also `derivedFrom` the ImagingStudy. The same finding's place in patient
coordinates is the SCOORD3D point of its measurement group in the run's DICOM SR, whose
Tracking Unique Identifier the Observation carries as an identifier.
"""

from __future__ import annotations

from typing import Any

import structlog

from shared.fhir import FhirClient
from shared.identifiers import DICOM_IMAGE_EXTENSION

__all__ = [
    "DICOM_IMAGE_REFERENCE_DEFINITION",
    "EXTENSION_DEFINITIONS",
    "publish_extension_definitions",
]

log = structlog.get_logger(__name__)

_DEFINITION_VERSION = "1"


def _element(path: str, element_id: str, minimum: int, maximum: str, **more: Any) -> dict[str, Any]:
    """One element of the snapshot: what the differential says, with the base Extension's
    cardinality and a definition (sdf-3)."""
    base_maximum = "*" if path == "Extension" or path.endswith("Extension.extension") else "1"
    base_minimum = 1 if path.endswith(".url") else 0
    return {
        "id": element_id,
        "path": path,
        "definition": more.pop("definition", f"{path} of the DICOM image reference."),
        "min": minimum,
        "max": maximum,
        "base": {
            "path": path.replace("Extension.extension.", "Extension."),
            "min": base_minimum,
            "max": base_maximum,
        },
        **more,
    }


def _sub_extension(name: str, value_type: str, maximum: str, definition: str) -> list[Any]:
    """The elements of one named part of the extension, as a slice of Extension.extension."""
    slice_id = f"Extension.extension:{name}"
    return [
        _element(
            "Extension.extension",
            slice_id,
            1 if name == "seriesInstanceUid" else 0,
            maximum,
            sliceName=name,
            short=definition.split(":", maxsplit=1)[0],
            definition=definition,
            type=[{"code": "Extension"}],
        ),
        _element("Extension.extension.id", f"{slice_id}.id", 0, "1", type=[_STRING_ID]),
        _element(
            "Extension.extension.extension",
            f"{slice_id}.extension",
            0,
            "0",
            type=[{"code": "Extension"}],
        ),
        _element(
            "Extension.extension.url",
            f"{slice_id}.url",
            1,
            "1",
            type=[{"code": "uri"}],
            fixedUri=name,
        ),
        _element(
            "Extension.extension.value[x]",
            f"{slice_id}.value[x]",
            1,
            "1",
            type=[{"code": value_type}],
        ),
    ]


# Element.id's type as R4 writes it (a FHIRPath System.String)
_STRING_ID = {
    "extension": [
        {
            "url": "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type",
            "valueUrl": "string",
        }
    ],
    "code": "http://hl7.org/fhirpath/System.String",
}

_ELEMENTS = [
    _element(
        "Extension",
        "Extension",
        0,
        "1",
        short="DICOM series and instances of a finding",
        definition=(
            "The DICOM series, SOP instances, centre voxel and segmentation of an imaging finding."
        ),
    ),
    _element("Extension.id", "Extension.id", 0, "1", type=[_STRING_ID]),
    _element(
        "Extension.extension",
        "Extension.extension",
        1,
        "*",
        slicing={"discriminator": [{"type": "value", "path": "url"}], "rules": "closed"},
        type=[{"code": "Extension"}],
    ),
    *_sub_extension(
        "seriesInstanceUid",
        "oid",
        "1",
        "Series Instance UID: the series the finding was read from (urn:oid:<UID>).",
    ),
    *_sub_extension(
        "sopInstanceUid",
        "oid",
        "*",
        "SOP Instance UID: a slice the finding lies on (urn:oid:<UID>).",
    ),
    *_sub_extension(
        "centreVoxel",
        "string",
        "1",
        "Centre voxel: 'z y x' indices of the series volume, slices ordered by position.",
    ),
    *_sub_extension(
        "segmentationSopInstanceUid",
        "oid",
        "1",
        "SOP Instance UID of the DICOM Segmentation whose segment 1 is the finding's voxels "
        "(urn:oid:<UID>).",
    ),
    _element(
        "Extension.url",
        "Extension.url",
        1,
        "1",
        type=[{"code": "uri"}],
        fixedUri=DICOM_IMAGE_EXTENSION,
    ),
    _element("Extension.value[x]", "Extension.value[x]", 0, "0", type=[{"code": "string"}]),
]


DICOM_IMAGE_REFERENCE_DEFINITION: dict[str, Any] = {
    "resourceType": "StructureDefinition",
    "text": {
        "status": "generated",
        "div": (
            '<div xmlns="http://www.w3.org/1999/xhtml"><p>DICOM image reference: the series, '
            "the SOP instances and the centre voxel of an imaging finding (radmesh).</p></div>"
        ),
    },
    "url": DICOM_IMAGE_EXTENSION,
    "version": _DEFINITION_VERSION,
    "name": "DicomImageReference",
    "title": "DICOM image reference",
    "status": "active",
    "experimental": False,
    "publisher": "radmesh",
    "description": (
        "Where in the imaging study an AI finding lies: the DICOM Series Instance UID, the SOP "
        "Instance UIDs of the slices it lies on, and its centre as voxel indices of the series "
        "volume. R4's Reference cannot point inside an ImagingStudy."
    ),
    "fhirVersion": "4.0.1",
    "kind": "complex-type",
    "abstract": False,
    "context": [{"type": "element", "expression": "Observation"}],
    "type": "Extension",
    "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Extension",
    "derivation": "constraint",
    # The snapshot is given (HAPI 8.8 cannot make one from a differential: see
    # deploy/hapi-fhir's RestfulServerConfig); the differential says the same.
    "differential": {"element": _ELEMENTS},
    "snapshot": {"element": _ELEMENTS},
}

EXTENSION_DEFINITIONS = (DICOM_IMAGE_REFERENCE_DEFINITION,)


def _differs(stored: dict[str, Any], wanted: dict[str, Any]) -> bool:
    return any(stored.get(key) != value for key, value in wanted.items())


async def publish_extension_definitions(fhir: FhirClient) -> list[str]:
    """Each definition on the FHIR server once (a conditional create on its url and version),
    brought up to date when the stored one differs; returns their references."""
    references = []
    for definition in EXTENSION_DEFINITIONS:
        query = f"url={definition['url']}&version={definition['version']}"
        stored = await fhir.create_resource(definition, if_none_exist=query)
        if _differs(stored, definition):
            stored = await fhir.update_resource({**stored, **definition})
            log.info("extension_definition_updated", url=definition["url"])
        references.append(f"StructureDefinition/{stored['id']}")
    log.info("extension_definitions_published", definitions=references)
    return references
