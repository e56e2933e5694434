#!/usr/bin/env bash
# Stops the HAPI FHIR server up.sh started (only the PID we recorded); H2 is closed cleanly on
# SIGTERM, so give it time before SIGKILL.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
stop_pidfile "hapi-fhir" "$RADMESH_RUN_DIR/hapi-fhir/pid" 30
