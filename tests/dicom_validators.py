"""Two independent DICOM validators over a stored object, as the tests run them on radmesh's SRs:
dciodvfy (dicom3tools: the IOD, its modules and attributes) and PixelMed's DicomSRValidator
(the SR templates: TID 1500 and those it includes). deploy/dicom-validators/up.sh installs
both. Each returns its error lines; warnings are the validators' opinions and are not counted."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

__all__ = ["dciodvfy_errors", "pixelmed_sr_errors"]

PIXELMED_JAR = Path("/usr/share/java/pixelmed.jar")
# PixelMed compiles its template XSLT once per run; the JDK's default XPath limits refuse it.
_JDK_XPATH_UNLIMITED = (
    "-Djdk.xml.xpathExprOpLimit=0",
    "-Djdk.xml.xpathExprGrpLimit=0",
    "-Djdk.xml.xpathTotalOpLimit=0",
)


def _run(command: list[str]) -> str:
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    return completed.stdout + completed.stderr


def dciodvfy_errors(path: Path) -> list[str]:
    """dciodvfy's `Error - ...` lines for the object at `path`."""
    if shutil.which("dciodvfy") is None:
        raise AssertionError("dciodvfy is not installed (bash deploy/dicom-validators/up.sh)")
    return [line for line in _run(["dciodvfy", str(path)]).splitlines() if line.startswith("Error")]


def pixelmed_sr_errors(path: Path) -> list[str]:
    """PixelMed DicomSRValidator's `Error: ...` lines for the SR at `path`; an output that does
    not say the root template was validated is an error too (the validator did not run)."""
    if shutil.which("java") is None or not PIXELMED_JAR.is_file():
        raise AssertionError("PixelMed is not installed (bash deploy/dicom-validators/up.sh)")
    output = _run(
        [
            "java",
            *_JDK_XPATH_UNLIMITED,
            "-cp",
            str(PIXELMED_JAR),
            "com.pixelmed.validate.DicomSRValidator",
            str(path),
        ]
    )
    errors = [line for line in output.splitlines() if line.startswith("Error")]
    if "Root Template Validation Complete" not in output:
        errors.append(f"DicomSRValidator did not validate the templates: {output[-500:]}")
    return errors
