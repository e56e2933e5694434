"""Run the inference: `python -m services.inference` (or `radmesh run inference`)."""

from services.inference.app import SERVICE, build_app
from services.inference.settings import InferenceSettings
from shared.runtime import service_main

if __name__ == "__main__":
    service_main(SERVICE, build_app, InferenceSettings)
