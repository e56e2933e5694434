"""The verification service's own settings (prefix RADMESH_VERIFICATION_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class VerificationSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="RADMESH_VERIFICATION_", extra="ignore", frozen=True
    )

    port: int = 8095
    worklist_limit: int = Field(default=200, ge=1, le=1000)  # open Tasks one GET /tasks returns
    # An external viewer the review page links each study to, OHIF's form
    # (`<viewer_url>?StudyInstanceUIDs=<uid>`), e.g. http://ohif.hospital/viewer; None: no link.
    viewer_url: str | None = None
    # The verdict outbox's sweep: how often, and how old a pending verdict event must be before
    # the sweep publishes it (the live path's chance); 0 turns the sweep off.
    outbox_sweep_seconds: float = Field(default=60.0, ge=0)
    outbox_grace_seconds: float = Field(default=30.0, ge=0)
    # How often the verification backlog (Tasks waiting for a radiologist) is counted into
    # radmesh_verification_backlog; 0: never.
    backlog_interval_seconds: float = Field(default=60.0, ge=0)
