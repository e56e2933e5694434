"""The mapper's own settings (prefix RADMESH_MAPPER_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class MapperSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="RADMESH_MAPPER_", extra="ignore", frozen=True)

    port: int = 8093
    write_structured_report: bool = True  # False: FHIR only, no DICOM SR to the PACS
    # The Verifying Organization of the verified SR (DICOM LO, the radiologists' department).
    verifying_organization: str = "radmesh review desk (development)"
    # The consistency sweep (redrive.py): how often (0: off), how far back, and how old a report
    # must be before a missing Task or alert counts as missing.
    redrive_interval_seconds: float = Field(default=300.0, ge=0)
    redrive_hours: float = Field(default=24.0, gt=0)
    redrive_grace_seconds: float = Field(default=120.0, ge=0)
    # On start, how long a FHIR server that is down or too slow to take radmesh's extension
    # definitions (shared/fhir_extensions.py) is asked again before the mapper exits.
    startup_seconds: float = Field(default=120.0, ge=0)
