#!/usr/bin/env bash
# podman as radmesh's image scripts and tests use it: `deploy/image/podman.sh ARGS...` runs
# `podman ARGS...` with its storage, state and settings under $RADMESH_RUN_DIR/image/ (no
# system file under /etc is changed; a fresh machine gets the same set-up from this script).
#   storage   overlay graph root (.run/image/storage) and run root (.run/image/runroot)
#   engine    cgroupfs (no systemd here), events and container logs to files, host network;
#             runc (crun 1.8 refuses cgroup v1 with a v2 hierarchy that has controllers:
#             "cgroups in hybrid mode not supported"); ulimits no higher than podman may set
#             without CAP_SYS_RESOURCE (its rootful defaults fail with "setrlimit RLIMIT_NOFILE:
#             Operation not permitted"; podman 4.3 lowers its own nproc to 32768 before it
#             starts the runtime, strace shows, so no container may ask for more)
# Usage: deploy/image/podman.sh images | run ... | build ...
set -euo pipefail
ROOT="${RADMESH_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
DIR="${RADMESH_RUN_DIR:-$ROOT/.run}/image"
mkdir -p "$DIR/storage" "$DIR/runroot" "$DIR/tmp" "$DIR/cni"

min() { if [[ "$1" == unlimited ]] || (( $2 < $1 )); then echo "$2"; else echo "$1"; fi; }
nofile="$(min "$(ulimit -Hn)" 1048576)"
nproc="$(min "$(ulimit -Hu)" 32768)"

# Written on every call (cheap), so a changed script takes effect without a clean-up.
write_if_changed() { # FILE CONTENT
  [[ -f "$1" && "$(cat "$1")" == "$2" ]] || printf '%s\n' "$2" >"$1"
}
write_if_changed "$DIR/storage.conf" "[storage]
driver = \"${RADMESH_IMAGE_STORAGE_DRIVER:-overlay}\"
graphroot = \"$DIR/storage\"
runroot = \"$DIR/runroot\""
write_if_changed "$DIR/containers.conf" "[containers]
netns = \"host\"
log_driver = \"k8s-file\"
default_ulimits = [\"nofile=$nofile:$nofile\", \"nproc=$nproc:$nproc\"]

[engine]
cgroup_manager = \"cgroupfs\"
runtime = \"${RADMESH_IMAGE_RUNTIME:-runc}\"
events_logger = \"file\"
events_logfile_path = \"$DIR/events.log\"
tmp_dir = \"$DIR/tmp\"

[network]
network_backend = \"cni\"
network_config_dir = \"$DIR/cni\""

export CONTAINERS_STORAGE_CONF="$DIR/storage.conf"
export CONTAINERS_CONF="$DIR/containers.conf"
exec podman "$@"
