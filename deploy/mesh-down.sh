#!/usr/bin/env bash
# Stops the services deploy/mesh-up.sh started (by PID).
# Usage: deploy/mesh-down.sh [service ...]   (default: every service it started)
set -uo pipefail
source "$(dirname "$0")/lib.sh"
if (( $# > 0 )); then
  for service in "$@"; do
    stop_pidfile "$service" "$RADMESH_RUN_DIR/services/$service/pid" 20
  done
  exit 0
fi
for dir in "$RADMESH_RUN_DIR"/services/*/; do
  [[ -d "$dir" ]] || continue
  stop_pidfile "$(basename "$dir")" "$dir/pid" 20
done
