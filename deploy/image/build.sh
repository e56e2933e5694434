#!/usr/bin/env bash
# Builds radmesh's container image from the repository's Dockerfile with podman, no Docker
# engine and no registry needed (deploy/image/README.md):
#   1. base   localhost/radmesh-base:bookworm, when missing: Debian bookworm (minbase + Python
#             3.11, venv, CA certificates) by debootstrap from the Debian mirror, security
#             updates applied, imported into podman
#   2. image  localhost/radmesh:<version of pyproject.toml> (`podman build`, layers cached: a
#             re-run with nothing changed takes seconds), pip reaching PyPI with the host's CA
#             bundle (mounted into the build's RUN steps only, not kept in the image)
# Idempotent; podman's storage and settings under $RADMESH_RUN_DIR/image/ (deploy/image/podman.sh).
# Needs root (debootstrap, rootful podman); installs podman, runc and debootstrap with apt-get if
# missing.
# Environment: RADMESH_IMAGE_MIRROR (default http://deb.debian.org/debian),
#   RADMESH_IMAGE_CA_BUNDLE (default $PIP_CERT or /etc/ssl/certs/ca-certificates.crt),
#   RADMESH_IMAGE_REBUILD_BASE=1 (build the base again, e.g. for newer security updates).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
DIR="${RADMESH_RUN_DIR:-$ROOT/.run}/image"
MIRROR="${RADMESH_IMAGE_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${RADMESH_IMAGE_SECURITY_MIRROR:-${MIRROR%/debian}/debian-security}"
CA_BUNDLE="${RADMESH_IMAGE_CA_BUNDLE:-${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}}"
BASE=localhost/radmesh-base:bookworm
VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/pyproject.toml" | head -n 1)"
IMAGE="localhost/radmesh:${VERSION:?no version in pyproject.toml}"
# python3-distutils: it Provides python3.11-distutils, which python3.11-venv depends on, and
# debootstrap resolves no virtual packages (it fails "python3.11-distutils is not installed").
PACKAGES=python3.11,python3.11-venv,python3-distutils,ca-certificates

log()  { printf '[image] %s\n' "$*"; }
fail() { printf '[image] ERROR: %s\n' "$*" >&2; exit 1; }
now_ms() { date +%s%3N; }
seconds_since() { local ms=$(( $(now_ms) - $1 )); printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100)); }
podman() { "$HERE/podman.sh" "$@"; }

(( EUID == 0 )) || fail "run as root (debootstrap and rootful podman); no Docker engine is needed"
[[ -r "$CA_BUNDLE" ]] || fail "CA bundle $CA_BUNDLE not readable (RADMESH_IMAGE_CA_BUNDLE)"
mkdir -p "$DIR"
total="$(now_ms)"

step="$(now_ms)"
missing=()
type -P podman >/dev/null || missing+=(podman)
type -P debootstrap >/dev/null || missing+=(debootstrap)
# runc: podman.sh runs containers with it (Debian's podman brings crun, which refuses this
# cgroup layout); debootstrap for the base.
type -P runc >/dev/null || missing+=(runc)
if (( ${#missing[@]} )); then
  log "installing ${missing[*]} with apt-get"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >"$DIR/apt-get.log" 2>&1 \
    || { apt-get update -q >>"$DIR/apt-get.log" 2>&1 \
         && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >>"$DIR/apt-get.log" 2>&1; } \
    || { tail -n 20 "$DIR/apt-get.log" >&2; fail "apt-get install ${missing[*]} failed ($DIR/apt-get.log)"; }
  log "tools installed in $(seconds_since "$step") s"
fi

# --- 1. the base image -------------------------------------------------------------------------
step="$(now_ms)"
if [[ "${RADMESH_IMAGE_REBUILD_BASE:-0}" != 1 ]] && podman image exists "$BASE"; then
  log "base $BASE present (RADMESH_IMAGE_REBUILD_BASE=1 builds it again)"
else
  rootfs="$DIR/rootfs"
  # An interrupted run may have left the chroot's /proc mounted: never delete through it.
  unmount_proc() { if mountpoint -q "$rootfs/proc"; then umount "$rootfs/proc"; fi; }
  unmount_proc
  trap unmount_proc EXIT
  rm -rf --one-file-system "$rootfs"
  log "debootstrap bookworm (minbase + $PACKAGES) from $MIRROR (log: $DIR/debootstrap.log)"
  if ! debootstrap --variant=minbase --include="$PACKAGES" bookworm "$rootfs" "$MIRROR" \
      >"$DIR/debootstrap.log" 2>&1; then
    tail -n 20 "$DIR/debootstrap.log" >&2
    tail -n 20 "$rootfs/debootstrap/debootstrap.log" >&2 2>/dev/null || true
    fail "debootstrap failed"
  fi
  log "debootstrap done in $(seconds_since "$step") s; applying bookworm-updates and security updates"
  cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb $SECURITY_MIRROR bookworm-security main
EOF
  # Nothing in the chroot starts a daemon; apt-get needs /proc only.
  mount -t proc proc "$rootfs/proc"
  upgraded=0
  chroot "$rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
      sh -c 'apt-get update -q && apt-get -y -q --no-install-recommends dist-upgrade && apt-get clean' \
      >>"$DIR/debootstrap.log" 2>&1 || upgraded=$?
  unmount_proc
  (( upgraded == 0 )) || { tail -n 20 "$DIR/debootstrap.log" >&2; fail "apt-get upgrade in the base failed"; }
  # No package lists, caches, logs or host files (resolv.conf, hostname) in the image; no
  # manuals, docs (the copyright files stay) or translations, now or from a later apt-get
  # (as Debian's own -slim images).
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/radmesh-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
EOF
  find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$rootfs"/usr/share/{man,info,groff,lintian,locale}/* \
         "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/log/* \
         "$rootfs"/tmp/* "$rootfs"/var/tmp/*
  : >"$rootfs/etc/resolv.conf"
  printf 'radmesh\n' >"$rootfs/etc/hostname"
  tar --numeric-owner --xattrs -C "$rootfs" -c . | podman import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' \
      --change 'CMD ["python3.11"]' \
      --message "debootstrap bookworm minbase + $PACKAGES, $(date -u +%F)" \
      --quiet - "$BASE" >/dev/null
  rm -rf --one-file-system "$rootfs"
  python_version="$(podman run --rm --network=host "$BASE" python3.11 -V)"
  log "base $BASE ($python_version) ready in $(seconds_since "$step") s"
fi

# --- 2. the radmesh image ----------------------------------------------------------------------
step="$(now_ms)"
# pip inside the build reads /etc/pip.conf: the host's CA bundle (PyPI may only be reachable
# through a proxy that bundle trusts) and, when the host has one, its local wheel directory.
volumes=(--volume "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro"
         --volume "$DIR/pip.conf:/etc/pip.conf:ro")
pip_conf=$'[global]\ncert = /etc/ssl/certs/ca-certificates.crt\ntimeout = 180'
wheels="${PIP_FIND_LINKS:-/opt/wheels}"
if [[ -d "$wheels" ]] && compgen -G "$wheels/*.whl" >/dev/null; then
  volumes+=(--volume "$wheels:/opt/wheels:ro")
  pip_conf+=$'\nfind-links = /opt/wheels'
fi
printf '%s\n' "$pip_conf" >"$DIR/pip.conf"
log "podman build $IMAGE from $BASE (log: $DIR/build.log)"
# docker format: the OCI format has no HEALTHCHECK (podman would drop the Dockerfile's).
if ! podman build --format docker --pull=never --network=host --layers \
    --build-arg "BASE=$BASE" "${volumes[@]}" \
    -t "$IMAGE" -f "$ROOT/Dockerfile" "$ROOT" >"$DIR/build.log" 2>&1; then
  tail -n 40 "$DIR/build.log" >&2
  fail "podman build failed ($DIR/build.log)"
fi
cached="$(grep -c '^--> Using cache' "$DIR/build.log" || true)"
log "image $IMAGE built in $(seconds_since "$step") s ($cached steps from the cache)"
# The stage `build` is tagged too (localhost/radmesh-build): its last layer is the cache of the
# `pip install` step, which the prune below would delete from an untagged stage. Its image is
# the last `--> ID` of that stage in the log (one build, so the tag is what this image used).
build_stage="$(awk '/^(\[[0-9]+\/[0-9]+\] )?STEP 1\/[0-9]+: FROM / { in_build = ($0 ~ / [Aa][Ss] build$/) }
                    in_build && /^--> [0-9a-f]+$/ { id = $2 }
                    END { print id }' "$DIR/build.log")"
if [[ -n "$build_stage" ]]; then
  podman tag "$build_stage" "localhost/radmesh-build:$VERSION"
else
  log "WARNING: the build stage's image not found in $DIR/build.log; its cache may be pruned"
fi
# Earlier builds' images that no tag or later layer refers to (each ~500 MB of site-packages).
podman image prune --force >/dev/null

size="$(podman image inspect --format '{{.Size}}' "$IMAGE")"
base_size="$(podman image inspect --format '{{.Size}}' "$BASE")"
log "image size $(( size / 1000000 )) MB (base $(( base_size / 1000000 )) MB); total $(seconds_since "$total") s"
log "run one service: deploy/image/podman.sh run --rm --network=host -e RADMESH_SERVICE=fetcher $IMAGE"
