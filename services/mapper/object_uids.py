"""The Series and SOP Instance UIDs of the DICOM objects radmesh stores for a run (SR, key images,
SEG, rejection note): derived from the object's kind and the run (study, model, version,
generation: `shared.identifiers.run_parts`), so every delivery of a run stores the same objects
again instead of new ones, and the run's next generation gets new ones."""

from __future__ import annotations

from pydicom.uid import generate_uid

from shared.identifiers import run_parts
from shared.registry import Algorithm

__all__ = ["run_object_uids"]


def run_object_uids(
    kind: str, study_instance_uid: str, model: Algorithm, generation: int = 1
) -> tuple[str, str]:
    """(SeriesInstanceUID, SOPInstanceUID) of the run's object of `kind` (e.g. `radmesh-sr`)."""
    parts = [kind, *run_parts(study_instance_uid, model.id, model.version, generation)]
    return (
        generate_uid(entropy_srcs=[*parts, "series"]),
        generate_uid(entropy_srcs=[*parts, "instance"]),
    )
