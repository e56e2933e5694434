#!/usr/bin/env bash
# Stops RabbitMQ only when deploy/rabbitmq/up.sh started it; the machine's own broker stays up.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
dir="$RADMESH_RUN_DIR/rabbitmq"
if [[ -f "$dir/started-by-radmesh" ]]; then
  rabbitmqctl -q stop >/dev/null 2>&1 || true
  rm -f "$dir/started-by-radmesh"
  log "rabbitmq: stopped"
else
  log "rabbitmq: not started by radmesh (left running)"
fi
