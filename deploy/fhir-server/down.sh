#!/usr/bin/env bash
# Stops the development FHIR server started by up.sh (only the PID we recorded).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
stop_pidfile "fhir-server" "$RADMESH_RUN_DIR/fhir-server/pid"
