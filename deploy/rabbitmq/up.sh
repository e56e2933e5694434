#!/usr/bin/env bash
# RabbitMQ: use the broker answering on 127.0.0.1:$RADMESH_RABBITMQ_PORT; otherwise start the
# machine's own (`rabbitmq-server -detached`), installing the Debian package if it is missing.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
dir="$(component_dir rabbitmq)"
started="$(now_ms)"
where="amqp://127.0.0.1:$RADMESH_RABBITMQ_PORT (management: rabbitmqctl)"

rabbit_ready() { port_open "$RADMESH_RABBITMQ_PORT" && rabbitmqctl -q status >/dev/null 2>&1; }

if port_open "$RADMESH_RABBITMQ_PORT"; then
  log "rabbitmq: already answering on 127.0.0.1:$RADMESH_RABBITMQ_PORT (not started by radmesh)"
  exit 0
fi
if ! command -v rabbitmq-server >/dev/null 2>&1; then
  apt_install rabbitmq "$dir/apt.log" rabbitmq-server || exit 1
fi
# rabbitmq-server -detached daemonises itself; it is the machine's broker, so infra-down leaves it
# running unless this script started it (marker file below). advanced.config: how soon the broker
# retries moving an expired retry back to its queue (see the file).
RABBITMQ_ADVANCED_CONFIG_FILE="$(cd "$(dirname "$0")" && pwd)/advanced.config" rabbitmq-server -detached >"$dir/log" 2>&1 || { show_log_tail rabbitmq "$dir/log"; exit 1; }
touch "$dir/started-by-radmesh"
if ! wait_until 90 rabbitmq rabbit_ready; then
  show_log_tail rabbitmq "$dir/log"; exit 1
fi
ready_line rabbitmq "$started" "$where" "$dir/log"
