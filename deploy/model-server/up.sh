#!/usr/bin/env bash
# Starts the reference model server (PyTriton / Triton Inference Server, CPU) in the background.
# Idempotent: exits 0 at once when our server is already up and ready.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"

NAME=model-server
MODELS=(ich-reference lung-nodule-reference echo)
DIR="$(component_dir "$NAME")"
PIDFILE="$DIR/pid"
LOGFILE="$DIR/log"
VENV="$DIR/venv"
WORKSPACE="$DIR/workspace"
HTTP_URL="http://127.0.0.1:$RADMESH_TRITON_HTTP_PORT"
WHERE="http $HTTP_URL grpc 127.0.0.1:$RADMESH_TRITON_GRPC_PORT"

started="$(now_ms)"

already_running "$NAME" "$PIDFILE" "$WHERE" http_ok "$HTTP_URL/v2/health/ready" && exit 0
ports_free "$NAME" "$RADMESH_TRITON_HTTP_PORT" "$RADMESH_TRITON_GRPC_PORT" || exit 1

# The server's own venv, (re)built only when missing or when requirements.txt changed.
req_hash="$(sha256sum "$HERE/requirements.txt" | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/python" || "$(cat "$DIR/requirements.sha256" 2>/dev/null)" != "$req_hash" ]]; then
  log "$NAME: creating $VENV (pip install nvidia-pytriton, scipy; ~30 s)"
  install_started="$(now_ms)"
  rm -rf "$VENV" "$DIR/requirements.sha256"
  "$RADMESH_PYTHON" -m venv "$VENV"
  if ! "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$HERE/requirements.txt" \
      >"$DIR/install.log" 2>&1; then
    show_log_tail "$NAME (pip install)" "$DIR/install.log"
    exit 1
  fi
  printf '%s\n' "$req_hash" >"$DIR/requirements.sha256"
  log "$NAME: venv ready in $(awk "BEGIN{print ($(now_ms)-$install_started)/1000}") s"
fi

# Triton's Python-backend stub must load the libpython of the interpreter that runs the server
# (pyenv builds otherwise pick up the system libpython: "_thread.RLock ... _recursion_count").
libdir="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')"

cd "$HERE"
LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" PYTHONUNBUFFERED=1 \
  nohup "$VENV/bin/python" "$HERE/server.py" \
    --address 127.0.0.1 \
    --http-port "$RADMESH_TRITON_HTTP_PORT" \
    --grpc-port "$RADMESH_TRITON_GRPC_PORT" \
    --workspace "$WORKSPACE" \
    >"$LOGFILE" 2>&1 </dev/null &
echo $! >"$PIDFILE"

server_and_models_ready() {
  pid_alive "$PIDFILE" || return 1
  http_ok "$HTTP_URL/v2/health/ready" || return 1
  local m
  for m in "${MODELS[@]}"; do
    http_ok "$HTTP_URL/v2/models/$m/ready" || return 1
  done
}
server_alive_or_done() { ! pid_alive "$PIDFILE" || server_and_models_ready; }

if ! wait_until 120 "$NAME" server_alive_or_done || ! server_and_models_ready; then
  show_log_tail "$NAME" "$LOGFILE"
  stop_pidfile "$NAME" "$PIDFILE" 20 >/dev/null || true
  exit 1
fi
ready_line "$NAME" "$started" "$WHERE" "$LOGFILE"
