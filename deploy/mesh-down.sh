#!/usr/bin/env bash
# Stops the services deploy/mesh-up.sh started (by PID).
set -uo pipefail
source "$(dirname "$0")/lib.sh"
for dir in "$RADMESH_RUN_DIR"/services/*/; do
  [[ -d "$dir" ]] || continue
  stop_pidfile "$(basename "$dir")" "$dir/pid" 20
done
