# shellcheck shell=bash
# Shared helpers for the local infrastructure scripts (sourced, never run).
# Every component keeps its runtime files under "$RADMESH_RUN_DIR/<component>/":
#   pid   the PID of the process this project started (infra-down stops only these)
#   log   its log file
# Ports and the run directory are overridable by environment variables.

RADMESH_ROOT="${RADMESH_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
export RADMESH_ROOT
export RADMESH_RUN_DIR="${RADMESH_RUN_DIR:-$RADMESH_ROOT/.run}"
export RADMESH_PYTHON="${RADMESH_PYTHON:-python3.11}"

# Default ports (DESIGN: RabbitMQ 5672, Orthanc 8042/4242, FHIR 8080 (/fhir), Triton 8000/8001, Keycloak 8180).
export RADMESH_RABBITMQ_PORT="${RADMESH_RABBITMQ_PORT:-5672}"
export RADMESH_ORTHANC_HTTP_PORT="${RADMESH_ORTHANC_HTTP_PORT:-8042}"
export RADMESH_ORTHANC_DICOM_PORT="${RADMESH_ORTHANC_DICOM_PORT:-4242}"
export RADMESH_ORTHANC_USER="${RADMESH_ORTHANC_USER:-radmesh}"
export RADMESH_ORTHANC_PASSWORD="${RADMESH_ORTHANC_PASSWORD:-radmesh-dev}"
export RADMESH_ORTHANC_STABLE_AGE="${RADMESH_ORTHANC_STABLE_AGE:-3}"
export RADMESH_PACS_HOOK_URL="${RADMESH_PACS_HOOK_URL:-http://127.0.0.1:8090/pacs/stable-study}"
export RADMESH_PACS_HOOK_SECRET="${RADMESH_PACS_HOOK_SECRET:-radmesh-dev-pacs-secret}"
export RADMESH_FHIR_PORT="${RADMESH_FHIR_PORT:-8080}"
export RADMESH_FHIR_SMART_PORT="${RADMESH_FHIR_SMART_PORT:-8081}"  # the same /fhir, access tokens required
export RADMESH_TRITON_HTTP_PORT="${RADMESH_TRITON_HTTP_PORT:-8000}"
export RADMESH_TRITON_GRPC_PORT="${RADMESH_TRITON_GRPC_PORT:-8001}"
export RADMESH_KEYCLOAK_PORT="${RADMESH_KEYCLOAK_PORT:-8180}"
export RADMESH_KEYCLOAK_MANAGEMENT_PORT="${RADMESH_KEYCLOAK_MANAGEMENT_PORT:-9180}"

log()  { printf '[infra] %s\n' "$*"; }
fail() { printf '[infra] ERROR: %s\n' "$*" >&2; }

now_ms() { date +%s%3N; }

# component_dir NAME -> creates and prints the run directory of a component
component_dir() { mkdir -p "$RADMESH_RUN_DIR/$1" && printf '%s' "$RADMESH_RUN_DIR/$1"; }

# pid_alive PIDFILE -> 0 when the PID in the file is a running process
pid_alive() {
  local pidfile="$1" pid
  [[ -f "$pidfile" ]] || return 1
  pid="$(cat "$pidfile" 2>/dev/null)"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null
}

# port_open PORT -> 0 when something accepts TCP on 127.0.0.1:PORT
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_until SECONDS DESCRIPTION CMD... -> polls CMD every 0.1 s until it succeeds
wait_until() {
  local timeout="$1" what="$2"; shift 2
  local deadline=$(( $(date +%s) + timeout ))
  until "$@" >/dev/null 2>&1; do
    if (( $(date +%s) >= deadline )); then
      fail "$what not ready after ${timeout}s"
      return 1
    fi
    sleep 0.1
  done
}

# http_ok URL [curl args...] -> 0 on a 2xx answer
http_ok() { local url="$1"; shift; curl -fsS -o /dev/null --max-time 2 "$@" "$url"; }

# show_log_tail NAME LOGFILE -> names the component and prints the end of its log
show_log_tail() {
  fail "$1 failed to start; last lines of $2:"
  tail -n 40 "$2" >&2 2>/dev/null || true
}

# stop_pidfile NAME PIDFILE [SECONDS] -> SIGTERM the process we started, wait, SIGKILL if needed
stop_pidfile() {
  local name="$1" pidfile="$2" timeout="${3:-15}" pid
  if ! pid_alive "$pidfile"; then
    rm -f "$pidfile"
    log "$name: not running (nothing to stop)"
    return 0
  fi
  pid="$(cat "$pidfile")"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$(( $(date +%s) + timeout ))
  while kill -0 "$pid" 2>/dev/null; do
    if (( $(date +%s) >= deadline )); then
      log "$name: PID $pid still alive after ${timeout}s, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.1
  done
  rm -f "$pidfile"
  log "$name: stopped (PID $pid)"
}

# ready_line NAME START_MS WHERE LOGFILE -> the one line infra-up prints per component
ready_line() {
  local name="$1" started="$2" where="$3" logfile="$4"
  printf '[infra] %-13s ready in %5.1f s  %s  log: %s\n' \
    "$name" "$(awk "BEGIN{print ($(now_ms)-$started)/1000}")" "$where" "$logfile"
}

# already_running NAME PIDFILE WHERE CHECK_CMD... -> 0 when our process is alive and CHECK_CMD
# succeeds (prints "already running"); otherwise stops a hung process of ours and returns 1.
already_running() {
  local name="$1" pidfile="$2" where="$3"; shift 3
  if pid_alive "$pidfile" && "$@" >/dev/null 2>&1; then
    log "$name: already running (PID $(cat "$pidfile")) at $where"
    return 0
  fi
  if pid_alive "$pidfile"; then
    log "$name: PID $(cat "$pidfile") alive but not answering; restarting it"
    stop_pidfile "$name" "$pidfile" 20
  fi
  rm -f "$pidfile"
  return 1
}

# apt_install NAME LOGFILE PKG... -> installs Debian packages (apt-get update first only when the
# plain install fails, e.g. on a machine whose package lists are stale); fails naming the log.
apt_install() {
  local name="$1" logfile="$2"; shift 2
  log "$name: installing $* (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends "$@" >>"$logfile" 2>&1; then
    log "$name: install failed, running apt-get update first"
    apt-get update -q >>"$logfile" 2>&1
    apt-get install -y -q --no-install-recommends "$@" >>"$logfile" 2>&1 || {
      show_log_tail "$name (apt-get install)" "$logfile"; return 1; }
  fi
}

# ports_free NAME PORT... -> fails naming the first port another process already listens on
ports_free() {
  local name="$1" port; shift
  for port in "$@"; do
    if port_open "$port"; then
      fail "$name: port $port is already taken by another process (not ours); set its RADMESH_*_PORT"
      return 1
    fi
  done
}
