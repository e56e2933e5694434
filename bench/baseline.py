"""The script a site would write instead of radmesh: the baseline `make bench` measures against.

    python -m bench.baseline STUDY_INSTANCE_UID [...]

Sequential and plain, with the libraries an integrator reaches for: dicomweb-client finds the
CT series (QIDO-RS) and retrieves it (WADO-RS, `retrieve_series`), numpy makes the HU volume,
tritonclient sends it to the same model over binary HTTP (Open Inference Protocol v2), fhirpy
finds the ImagingStudy and creates one Observation and one DiagnosticReport. No SR, Provenance,
Device, verification Task, alerts, validation, retries or idempotency: what radmesh does on top.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import requests
import tritonclient.http as triton_http
from dicomweb_client.api import DICOMwebClient
from fhirpy import SyncFHIRClient

from samples.load import Settings

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SERIES_INSTANCE_UID = "0020000E"
SOP_CLASS_UID_KEY = "00080016"


@dataclass(frozen=True)
class Endpoints:
    """Where the script finds the servers (the same defaults as deploy/lib.sh)."""

    dicomweb_url: str
    dicomweb_auth: tuple[str, str]
    triton_url: str  # host:port, as tritonclient wants it
    fhir_url: str
    model_name: str = "echo"

    @classmethod
    def from_env(cls) -> Endpoints:
        """The PACS and FHIR server where samples.load puts the studies; Triton's HTTP port."""
        where = Settings.from_env()
        return cls(
            dicomweb_url=where.dicomweb_root,
            dicomweb_auth=where.orthanc_auth,
            triton_url=f"127.0.0.1:{os.environ.get('RADMESH_TRITON_HTTP_PORT', '8000')}",
            fhir_url=where.fhir_base_url,
        )


@dataclass(frozen=True)
class StudyTimes:
    """Seconds each step took for one study."""

    fetch: float
    volume: float
    model: float
    fhir: float


class Script:
    """One connection to each server, reused for every study, as a long-running script would."""

    def __init__(self, endpoints: Endpoints) -> None:
        session = requests.Session()
        session.auth = endpoints.dicomweb_auth
        self.endpoints = endpoints
        self.dicomweb = DICOMwebClient(endpoints.dicomweb_url, session=session)
        self.fhir = SyncFHIRClient(endpoints.fhir_url)
        self._per_thread = threading.local()

    @property
    def triton(self) -> triton_http.InferenceServerClient:
        """tritonclient's HTTP client runs on gevent, which binds it to the thread that made it."""
        client = getattr(self._per_thread, "triton", None)
        if client is None:
            client = triton_http.InferenceServerClient(self.endpoints.triton_url)
            self._per_thread.triton = client
        return client

    def process(self, study_instance_uid: str) -> StudyTimes:
        t0 = time.perf_counter()
        series = self.dicomweb.search_for_series(
            study_instance_uid, search_filters={"Modality": "CT"}
        )
        if not series:
            raise RuntimeError(f"study {study_instance_uid} has no CT series")
        series_uid = series[0][SERIES_INSTANCE_UID]["Value"][0]
        datasets = self.dicomweb.retrieve_series(study_instance_uid, series_uid)
        t1 = time.perf_counter()

        datasets = [ds for ds in datasets if ds.SOPClassUID == CT_IMAGE_STORAGE]
        datasets.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
        slices = [
            ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in datasets
        ]
        volume = np.stack(slices).astype(np.int16)
        first = datasets[0]
        gap = abs(float(datasets[1].ImagePositionPatient[2]) - float(first.ImagePositionPatient[2]))
        spacing = np.array(
            [gap, float(first.PixelSpacing[0]), float(first.PixelSpacing[1])], dtype=np.float32
        )
        t2 = time.perf_counter()

        volume_input = triton_http.InferInput("volume", list(volume.shape), "INT16")
        volume_input.set_data_from_numpy(volume, binary_data=True)
        spacing_input = triton_http.InferInput("spacing", [3], "FP32")
        spacing_input.set_data_from_numpy(spacing, binary_data=True)
        result = self.triton.infer(
            self.endpoints.model_name,
            [volume_input, spacing_input],
            outputs=[triton_http.InferRequestedOutput("value", binary_data=True)],
        )
        value = float(result.as_numpy("value")[0])
        t3 = time.perf_counter()

        study = (
            self.fhir.resources("ImagingStudy")
            .search(identifier=f"urn:dicom:uid|urn:oid:{study_instance_uid}")
            .first()
        )
        if study is None:
            raise RuntimeError(f"no ImagingStudy on the FHIR server for {study_instance_uid}")
        observation = self.fhir.resource(
            "Observation",
            status="preliminary",
            code=_concept("http://snomed.info/sct", "260413007", "None"),
            subject=study["subject"],
            derivedFrom=[study.to_reference()],
            valueCodeableConcept=_concept(
                "http://snomed.info/sct",
                "52101004" if value >= 0.5 else "2667000",
                "Present" if value >= 0.5 else "Absent",
            ),
        )
        observation.save()
        report = self.fhir.resource(
            "DiagnosticReport",
            status="preliminary",
            code=_concept("http://loinc.org", "24725-4", "CT Head"),
            subject=study["subject"],
            imagingStudy=[study.to_reference()],
            result=[observation.to_reference()],
        )
        report.save()
        t4 = time.perf_counter()
        return StudyTimes(fetch=t1 - t0, volume=t2 - t1, model=t3 - t2, fhir=t4 - t3)


def _concept(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline")
    parser.add_argument("study_instance_uids", nargs="+")
    args = parser.parse_args(argv)
    script = Script(Endpoints.from_env())
    for uid in args.study_instance_uids:
        times = script.process(uid)
        print(
            f"fetch {times.fetch:.3f} s  volume {times.volume:.3f} s  "
            f"model {times.model:.3f} s  FHIR {times.fhir:.3f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
