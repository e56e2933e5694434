#!/usr/bin/env bash
# Starts radmesh's services in the background (`radmesh run <service>`), each once, and waits
# until each answers /readyz. PIDs and logs in $RADMESH_RUN_DIR/services/<service>/.
# Usage: deploy/mesh-up.sh [service ...]   (default: the six services that exist)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
declare -A PORTS=([subscriber]=8090 [fetcher]=8091 [inference]=8092 [mapper]=8093 [notifier]=8094 [verification]=8095)
services=("$@")
if (( ${#services[@]} == 0 )); then
  for service in subscriber fetcher inference mapper notifier verification; do
    [[ -f "$RADMESH_ROOT/services/$service/__main__.py" ]] && services+=("$service")
  done
fi
export RADMESH_STORAGE__BLOB_DIR="${RADMESH_STORAGE__BLOB_DIR:-$RADMESH_RUN_DIR/blobs}"
export RADMESH_REGISTRY_PATH="${RADMESH_REGISTRY_PATH:-$RADMESH_ROOT/registry/models.yaml}"
# The services reach the infrastructure where deploy/lib.sh put it (ports overridable there).
export RADMESH_BROKER__URL="${RADMESH_BROKER__URL:-amqp://guest:guest@127.0.0.1:$RADMESH_RABBITMQ_PORT/}"
# ... the FHIR server on its SMART Backend Services port: every call carries an access token
# the services get from Keycloak with the client radmesh-services' key (deploy/keycloak/up.sh).
export RADMESH_FHIR__BASE_URL="${RADMESH_FHIR__BASE_URL:-http://127.0.0.1:$RADMESH_FHIR_SMART_PORT/fhir}"
export RADMESH_FHIR__SMART__CLIENT_ID="${RADMESH_FHIR__SMART__CLIENT_ID:-radmesh-services}"
export RADMESH_FHIR__SMART__PRIVATE_KEY_FILE="${RADMESH_FHIR__SMART__PRIVATE_KEY_FILE:-$RADMESH_RUN_DIR/keycloak/smart/radmesh-services.key.pem}"
export RADMESH_DICOMWEB__BASE_URL="${RADMESH_DICOMWEB__BASE_URL:-http://127.0.0.1:$RADMESH_ORTHANC_HTTP_PORT/dicom-web}"
export RADMESH_DICOMWEB__USERNAME="${RADMESH_DICOMWEB__USERNAME:-$RADMESH_ORTHANC_USER}"
export RADMESH_DICOMWEB__PASSWORD="${RADMESH_DICOMWEB__PASSWORD:-$RADMESH_ORTHANC_PASSWORD}"
# Orthanc signs its stable-study webhook with RADMESH_PACS_HOOK_SECRET: the subscriber checks the same.
export RADMESH_SUBSCRIBER_PACS_HOOK_SECRET="${RADMESH_SUBSCRIBER_PACS_HOOK_SECRET:-$RADMESH_PACS_HOOK_SECRET}"
# The local HAPI FHIR server also holds the test suite's studies: no start-up catch-up here
# unless asked for (production default: the last 24 hours).
export RADMESH_SUBSCRIBER_RECONCILE_HOURS="${RADMESH_SUBSCRIBER_RECONCILE_HOURS:-0}"
# ... and the tests' runs that never had a verification Task or alert (written by the mapper's
# tests alone): no consistency sweep here unless asked for (production default: every 300 s).
export RADMESH_MAPPER_REDRIVE_INTERVAL_SECONDS="${RADMESH_MAPPER_REDRIVE_INTERVAL_SECONDS:-0}"
# ... and their claims of runs that were dead-lettered on purpose: no re-drive of unfinished runs
# here unless asked for (production default: claims older than 30 minutes).
export RADMESH_SUBSCRIBER_REDRIVE_CLAIMS_AFTER_MINUTES="${RADMESH_SUBSCRIBER_REDRIVE_CLAIMS_AFTER_MINUTES:-0}"
python="$RADMESH_ROOT/.venv/bin/python"
for service in "${services[@]}"; do
  dir="$(component_dir "services/$service")"
  upper="$(echo "$service" | tr a-z A-Z)"
  port_var="RADMESH_${upper}_PORT"
  port="${!port_var:-${PORTS[$service]}}"
  started="$(now_ms)"
  if pid_alive "$dir/pid" && http_ok "http://127.0.0.1:$port/readyz"; then
    log "$service: already running (PID $(cat "$dir/pid"))"
    continue
  fi
  # appended, never truncated: the log of an earlier run (a crash, a dead letter) stays readable
  printf '\n=== %s: radmesh run %s ===\n' "$(date -u +%FT%TZ)" "$service" >>"$dir/log"
  (cd "$RADMESH_ROOT" && exec "$python" -m shared.cli run "$service") >>"$dir/log" 2>&1 &
  echo $! >"$dir/pid"
  if ! wait_until 60 "$service" http_ok "http://127.0.0.1:$port/readyz"; then
    show_log_tail "$service" "$dir/log"
    exit 1
  fi
  ready_line "$service" "$started" "http://127.0.0.1:$port" "$dir/log"
done
