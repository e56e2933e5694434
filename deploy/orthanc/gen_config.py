"""Writes the Orthanc configuration for radmesh from the environment (see deploy/lib.sh).

Run by up.sh with the system python3 (no third-party imports): `python3 gen_config.py OUT_DIR`.
The password and the hook secret only ever land in files under $RADMESH_RUN_DIR (mode 0600).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

PLUGIN_DIR = "/usr/share/orthanc/plugins"
PLUGINS = ("libOrthancDicomWeb.so", "libOrthancGdcm.so", "libOrthancPython.so")


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise SystemExit(f"gen_config.py: {name} is not set (source deploy/lib.sh first)")
    return value


def build_config(out_dir: Path, hook_script: Path) -> dict[str, object]:
    """The Orthanc configuration as a dict (JSON-serialisable)."""
    http_port = int(_env("RADMESH_ORTHANC_HTTP_PORT"))
    db_dir = out_dir / "db"
    return {
        "Name": "radmesh-pacs",
        "StorageDirectory": str(db_dir),
        "IndexDirectory": str(db_dir),
        "StorageCompression": False,
        "Plugins": [f"{PLUGIN_DIR}/{name}" for name in PLUGINS],
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        "HttpDescribeErrors": True,
        "HttpCompressionEnabled": False,
        "KeepAlive": True,
        "TcpNoDelay": True,
        "HttpThreadsCount": 50,
        "HttpTimeout": 60,
        "DicomServerEnabled": True,
        "DicomAet": "RADMESH_PACS",
        "DicomCheckCalledAet": False,
        "DicomPort": int(_env("RADMESH_ORTHANC_DICOM_PORT")),
        "DicomAlwaysAllowStore": True,
        # There is no bind-address option: the HTTP server listens on all interfaces, so only
        # loopback clients are accepted, and those must authenticate.
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {
            _env("RADMESH_ORTHANC_USER"): _env("RADMESH_ORTHANC_PASSWORD"),
        },
        "StableAge": int(_env("RADMESH_ORTHANC_STABLE_AGE")),
        "SyncStorageArea": False,
        "SaveJobs": False,
        "OverwriteInstances": True,
        "ConcurrentJobs": 2,
        "MaximumStorageCacheSize": 128,
        "StorageAccessOnFind": "Always",
        "DicomWeb": {
            "Enable": True,
            "Root": "/dicom-web/",
            "EnableWado": True,
            "WadoRoot": "/wado",
            # Without the port, RetrieveURL / RetrieveURI in QIDO answers point at port 80.
            "Host": f"127.0.0.1:{http_port}",
            "Ssl": False,
            "StudiesMetadata": "Full",
            "SeriesMetadata": "Full",
        },
        "Gdcm": {"Enable": True, "Throttling": 2},
        "PythonScript": str(hook_script),
        "PythonVerbose": False,
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: gen_config.py OUT_DIR", file=sys.stderr)
        return 2
    out_dir = Path(argv[1]).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "db").mkdir(exist_ok=True)
    hook_script = Path(__file__).resolve().parent / "stable_study_hook.py"
    config = build_config(out_dir, hook_script)
    path = out_dir / "orthanc.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(config, fh, indent=2)
        fh.write("\n")
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
