"""The mapper's own settings (prefix RADMESH_MAPPER_)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class MapperSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="RADMESH_MAPPER_", extra="ignore", frozen=True)

    port: int = 8093
    write_structured_report: bool = True  # False: FHIR only, no DICOM SR to the PACS
    # The Verifying Organization of the verified SR (DICOM LO, the radiologists' department).
    verifying_organization: str = "radmesh review desk (development)"
