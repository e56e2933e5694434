"""Run the notifier: `python -m services.notifier` (or `radmesh run notifier`)."""

from services.notifier.app import SERVICE, build_app
from services.notifier.settings import NotifierSettings
from shared.runtime import service_main

if __name__ == "__main__":
    service_main(SERVICE, build_app, NotifierSettings)
