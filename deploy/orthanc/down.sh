#!/usr/bin/env bash
# Stops the Orthanc that up.sh started (by its PID only) and waits until it has really exited:
# a new instance on the same database before the old one is gone dies with "database is locked".
set -euo pipefail
# shellcheck source=../lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

NAME=orthanc
DIR="$RADMESH_RUN_DIR/$NAME"
PIDFILE="$DIR/pid"

pid=""
[[ -f "$PIDFILE" ]] && pid="$(cat "$PIDFILE" 2>/dev/null || true)"
stop_pidfile "$NAME" "$PIDFILE" 20
# stop_pidfile already waited; make sure (e.g. after SIGKILL) the process is gone for good.
if [[ -n "$pid" ]]; then
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || exit 0
    sleep 0.1
  done
  fail "$NAME: PID $pid still present after SIGKILL"
  exit 1
fi
