"""shared.settings: which secrets are still their development defaults."""

from __future__ import annotations

from pydantic import SecretStr

from services.subscriber.settings import SubscriberSettings
from shared.settings import AlertLinkSettings, DicomWebSettings, OidcSettings, RadmeshSettings


def test_development_secrets_are_found_by_setting_name() -> None:
    """Each service's secrets still at their defaults are listed by their environment name;
    a secret that was set is not."""
    defaults = SubscriberSettings()
    assert set(defaults.development_secrets()) == {
        "RADMESH_SUBSCRIBER_HOOK_SECRET",
        "RADMESH_SUBSCRIBER_PACS_HOOK_SECRET",
    }
    rotated = SubscriberSettings(hook_secret=SecretStr("s3cret-from-the-vault"))
    assert rotated.development_secrets() == ["RADMESH_SUBSCRIBER_PACS_HOOK_SECRET"]


def test_the_development_pacs_password_and_identity_provider_are_found_and_set_ones_not() -> None:
    """The shared DICOMweb password, the OIDC issuer and the alert links' key at their
    development defaults are listed; a set password, the hospital's issuer and a set key are
    not."""
    assert RadmeshSettings().development_secrets() == [
        "RADMESH_DICOMWEB__PASSWORD",
        "RADMESH_OIDC__ISSUER",
        "RADMESH_ALERT_LINKS__SECRET",
    ]
    custom = RadmeshSettings(
        dicomweb=DicomWebSettings(password=SecretStr("from-the-vault")),
        oidc=OidcSettings(issuer="https://login.hospital.example/realms/radiology"),
        alert_links=AlertLinkSettings(secret=SecretStr("from-the-vault-too")),
    )
    assert custom.development_secrets() == []
