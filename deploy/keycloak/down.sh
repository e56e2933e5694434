#!/usr/bin/env bash
# Stops the Keycloak up.sh started (only the PID we recorded).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
stop_pidfile "keycloak" "$RADMESH_RUN_DIR/keycloak/pid" 20
