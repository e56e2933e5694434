"""Run the verification service: `python -m services.verification` (or `radmesh run verification`)."""

from services.verification.app import SERVICE, build_app
from services.verification.settings import VerificationSettings
from shared.runtime import service_main

if __name__ == "__main__":
    service_main(SERVICE, build_app, VerificationSettings)
