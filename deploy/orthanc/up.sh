#!/usr/bin/env bash
# Starts the local PACS: Orthanc (Debian packages) with DICOMweb, GDCM and the Python
# stable-study hook, by hand in the background (never the system service).
# Idempotent: when our Orthanc is alive and answers /system, prints "already running".
set -euo pipefail
# shellcheck source=../lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

NAME=orthanc
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DIR="$(component_dir "$NAME")"
PIDFILE="$DIR/pid"
LOGFILE="$DIR/log"
URL="http://127.0.0.1:$RADMESH_ORTHANC_HTTP_PORT"
AUTH=(-u "$RADMESH_ORTHANC_USER:$RADMESH_ORTHANC_PASSWORD")
PLUGINS=/usr/share/orthanc/plugins

system_ok() { http_ok "$URL/system" "${AUTH[@]}"; }

already_running "$NAME" "$PIDFILE" "$URL" system_ok && exit 0

install_packages() {
  local pkgs=(orthanc orthanc-dicomweb orthanc-gdcm orthanc-python)
  if command -v Orthanc >/dev/null 2>&1 \
     && [[ -f $PLUGINS/libOrthancDicomWeb.so && -f $PLUGINS/libOrthancGdcm.so \
           && -f $PLUGINS/libOrthancPython.so ]]; then
    return 0
  fi
  apt_install "$NAME" "$DIR/apt.log" "${pkgs[@]}" || exit 1
}
install_packages

# Another process on one of our ports would make Orthanc fail: say so clearly.
ports_free "$NAME" "$RADMESH_ORTHANC_HTTP_PORT" "$RADMESH_ORTHANC_DICOM_PORT" || exit 1

started="$(now_ms)"
CONFIG="$(python3 "$HERE/gen_config.py" "$DIR")"

# TCP_NODELAY=1: DCMTK's DICOM sockets otherwise stall ~53 ms per C-STORE (Nagle + delayed ACK).
# The Python plugin reads the hook's settings from the environment.
: >"$LOGFILE"
TCP_NODELAY=1 \
RADMESH_PACS_HOOK_URL="$RADMESH_PACS_HOOK_URL" \
RADMESH_PACS_HOOK_SECRET="$RADMESH_PACS_HOOK_SECRET" \
RADMESH_PACS_HOOK_DB="$DIR/hook.sqlite" \
  nohup Orthanc "$CONFIG" >>"$LOGFILE" 2>&1 </dev/null &
echo $! >"$PIDFILE"

# Poll /system every 0.1 s for up to 30 s; give up at once if the process has died.
ready_or_dead() {
  local deadline=$(( $(date +%s) + 30 ))
  while (( $(date +%s) < deadline )); do
    pid_alive "$PIDFILE" || { fail "$NAME exited during start-up"; return 1; }
    system_ok 2>/dev/null && return 0
    sleep 0.1
  done
  fail "$NAME not ready after 30s"
  return 1
}
if ! ready_or_dead; then
  show_log_tail "$NAME" "$LOGFILE"
  if pid_alive "$PIDFILE"; then stop_pidfile "$NAME" "$PIDFILE" 10; fi
  exit 1
fi
ready_line "$NAME" "$started" "$URL (DICOMweb $URL/dicom-web, DICOM port $RADMESH_ORTHANC_DICOM_PORT)" "$LOGFILE"
