"""Run the fetcher: `python -m services.fetcher` (or `radmesh run fetcher`)."""

from services.fetcher.app import SERVICE, build_app
from services.fetcher.settings import FetcherSettings
from shared.runtime import service_main

if __name__ == "__main__":
    service_main(SERVICE, build_app, FetcherSettings)
