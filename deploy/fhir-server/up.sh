#!/usr/bin/env bash
# Starts the development FHIR R4 server (in-memory) on 127.0.0.1:$RADMESH_FHIR_PORT, base /fhir.
# Idempotent: exits 0 if our server is already running and answering.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"

NAME="fhir-server"
RUN_DIR="$(component_dir "$NAME")"
PIDFILE="$RUN_DIR/pid"
LOGFILE="$RUN_DIR/log"
METADATA_URL="http://127.0.0.1:${RADMESH_FHIR_PORT}/fhir/metadata"
WHERE="http://127.0.0.1:${RADMESH_FHIR_PORT}/fhir"
started="$(now_ms)"

already_running "$NAME" "$PIDFILE" "$WHERE" http_ok "$METADATA_URL" && exit 0
ports_free "$NAME" "$RADMESH_FHIR_PORT" || exit 1

command -v node >/dev/null || { fail "$NAME: node is not installed (Node >= 20 needed)"; exit 1; }

# Install dependencies only when needed: missing, or the lock file changed since the last install.
stamp="$HERE/node_modules/.radmesh-install-stamp"
lock="$HERE/package-lock.json"
if [[ ! -f "$stamp" ]] || [[ "$HERE/package.json" -nt "$stamp" ]] || { [[ -f "$lock" ]] && [[ "$lock" -nt "$stamp" ]]; }; then
  log "$NAME: installing npm dependencies"
  if [[ -f "$lock" ]]; then
    (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error) >>"$LOGFILE" 2>&1 || { show_log_tail "$NAME" "$LOGFILE"; exit 1; }
  else
    (cd "$HERE" && npm install --no-audit --no-fund --loglevel=error) >>"$LOGFILE" 2>&1 || { show_log_tail "$NAME" "$LOGFILE"; exit 1; }
  fi
  touch "$stamp"
fi

: >"$LOGFILE"
(cd "$HERE" && RADMESH_FHIR_PORT="$RADMESH_FHIR_PORT" exec nohup node server.mjs >>"$LOGFILE" 2>&1 </dev/null) &
echo $! >"$PIDFILE"

if ! wait_until 60 "$NAME" http_ok "$METADATA_URL"; then
  show_log_tail "$NAME" "$LOGFILE"
  stop_pidfile "$NAME" "$PIDFILE" 5 >/dev/null 2>&1 || true
  exit 1
fi
if ! pid_alive "$PIDFILE"; then
  show_log_tail "$NAME" "$LOGFILE"
  exit 1
fi
ready_line "$NAME" "$started" "$WHERE" "$LOGFILE"
