"""Run the mapper: `python -m services.mapper` (or `radmesh run mapper`)."""

from services.mapper.app import SERVICE, build_app
from services.mapper.settings import MapperSettings
from shared.runtime import service_main

if __name__ == "__main__":
    service_main(SERVICE, build_app, MapperSettings)
