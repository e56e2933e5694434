"""shared.settings: which secrets are still their development defaults."""

from __future__ import annotations

from pydantic import SecretStr

from services.subscriber.settings import SubscriberSettings
from shared.settings import DicomWebSettings, RadmeshSettings


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


def test_the_development_pacs_password_is_found_and_a_set_one_is_not() -> None:
    """The shared DICOMweb password at its development default is listed; another is not."""
    assert RadmeshSettings().development_secrets() == ["RADMESH_DICOMWEB__PASSWORD"]
    custom = RadmeshSettings(dicomweb=DicomWebSettings(password=SecretStr("from-the-vault")))
    assert custom.development_secrets() == []
