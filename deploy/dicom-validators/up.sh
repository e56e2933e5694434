#!/usr/bin/env bash
# Makes sure the two independent DICOM validators the tests run on every SR radmesh stores are
# at hand (nothing is started): David Clunie's dciodvfy (Debian dicom3tools: the IOD and its
# attributes) and PixelMed's DicomSRValidator (Debian libpixelmed-java: the SR templates, TID
# 1500 and those it includes). tests/dicom_validators.py runs them. Idempotent.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
NAME="dicom-validators"
DIR="$(component_dir "$NAME")"
LOGFILE="$DIR/apt.log"
PIXELMED_JAR="/usr/share/java/pixelmed.jar"
started="$(now_ms)"
if ! command -v dciodvfy >/dev/null 2>&1 || [[ ! -f $PIXELMED_JAR ]]; then
  log "$NAME: installing dicom3tools libpixelmed-java (Debian packages)"
  apt_install "$NAME" "$LOGFILE" dicom3tools libpixelmed-java || exit 1
fi
command -v java >/dev/null 2>&1 || { fail "$NAME: no java on PATH (PixelMed needs it)"; exit 1; }
ready_line "$NAME" "$started" "$(command -v dciodvfy), $PIXELMED_JAR" "$LOGFILE"
