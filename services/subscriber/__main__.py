"""Run the subscriber: `python -m services.subscriber` (or `radmesh run subscriber`)."""

from services.subscriber.app import SERVICE, build_app
from services.subscriber.settings import SubscriberSettings
from shared.runtime import service_main

if __name__ == "__main__":
    service_main(SERVICE, build_app, SubscriberSettings)
