#!/usr/bin/env bash
# Makes sure promtool (Debian's prometheus package) is at hand for the alerting-rule tests: the
# package is downloaded and unpacked into $RADMESH_RUN_DIR/prometheus (dpkg -x: nothing is
# installed system-wide and no Prometheus server is started). Idempotent.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
NAME="prometheus"
DIR="$(component_dir "$NAME")"
PROMTOOL="$DIR/root/usr/bin/promtool"
LOGFILE="$DIR/apt.log"
started="$(now_ms)"
if [[ ! -x $PROMTOOL ]]; then
  log "$NAME: fetching promtool (Debian package prometheus, unpacked into $DIR)"
  rm -rf "$DIR/deb" && mkdir -p "$DIR/deb"
  if ! (cd "$DIR/deb" && apt-get download prometheus >>"$LOGFILE" 2>&1); then
    apt-get update -q >>"$LOGFILE" 2>&1 || true
    (cd "$DIR/deb" && apt-get download prometheus >>"$LOGFILE" 2>&1) || {
      show_log_tail "$NAME (apt-get download)" "$LOGFILE"; exit 1; }
  fi
  dpkg -x "$DIR"/deb/prometheus_*.deb "$DIR/root" >>"$LOGFILE" 2>&1
  rm -rf "$DIR/deb"
fi
"$PROMTOOL" check rules "$HERE/alerts.yaml" >>"$LOGFILE" 2>&1 || {
  show_log_tail "$NAME (promtool check rules)" "$LOGFILE"; exit 1; }
ready_line "$NAME" "$started" "$PROMTOOL ($("$PROMTOOL" --version 2>&1 | head -n 1)); rules checked" "$LOGFILE"
