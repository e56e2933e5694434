"""The inference's own settings (prefix RADMESH_INFERENCE_)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class InferenceSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="RADMESH_INFERENCE_", extra="ignore", frozen=True)

    port: int = 8092
