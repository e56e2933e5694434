"""The notifier's own settings (prefix RADMESH_NOTIFIER_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class NotifierSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="RADMESH_NOTIFIER_", extra="ignore", frozen=True)

    port: int = 8094
    # Who receives a critical alert when the study's ServiceRequest names no requester, e.g.
    # "PractitionerRole/<on-call radiologist>" or "Organization/<radiology department>". Unset:
    # the alert is still written, without recipient, and a warning is logged (see handlers.py).
    fallback_recipient: str | None = Field(
        default=None,
        pattern=r"^(Practitioner|PractitionerRole|Organization|CareTeam|HealthcareService)/[A-Za-z0-9\-.]{1,64}$",
    )
