#!/usr/bin/env bash
# Stops the reference model server this project started (SIGTERM: PyTriton stops tritonserver).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"

stop_pidfile model-server "$RADMESH_RUN_DIR/model-server/pid" 20
