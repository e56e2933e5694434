#!/usr/bin/env bash
# Starts HAPI FHIR (JPA server, R4) on 127.0.0.1:$RADMESH_FHIR_PORT, base /fhir, with its H2
# database under the run directory (a restart keeps the data). The same /fhir is also served on
# 127.0.0.1:$RADMESH_FHIR_SMART_PORT, where every request but /metadata needs an access token of
# the development Keycloak (SMART Backend Services, see README.md). Builds the server with Maven on
# first use and whenever pom.xml or src/ changed; later runs reuse the jar and ~/.m2.
# Idempotent: exits 0 if our server is already running and answering.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"

NAME="hapi-fhir"
DIR="$(component_dir "$NAME")"
PIDFILE="$DIR/pid"
LOGFILE="$DIR/log"
JAR="$DIR/radmesh-hapi-fhir.jar"
METADATA_URL="http://127.0.0.1:${RADMESH_FHIR_PORT}/fhir/metadata"
SMART_METADATA_URL="http://127.0.0.1:${RADMESH_FHIR_SMART_PORT}/fhir/metadata"
WHERE="http://127.0.0.1:${RADMESH_FHIR_PORT}/fhir (open) and http://127.0.0.1:${RADMESH_FHIR_SMART_PORT}/fhir (SMART access tokens), HAPI FHIR 8.8.0, ${RADMESH_FHIR_DB:-h2}"
started="$(now_ms)"

# both ports answer /metadata (open on both)
answering() { http_ok "$METADATA_URL" && http_ok "$SMART_METADATA_URL"; }

already_running "$NAME" "$PIDFILE" "$WHERE" answering && exit 0
ports_free "$NAME" "$RADMESH_FHIR_PORT" "$RADMESH_FHIR_SMART_PORT" || exit 1

for tool in java mvn; do
  command -v "$tool" >/dev/null || { fail "$NAME: $tool is not installed (Java 17 and Maven needed)"; exit 1; }
done

# Build only when the sources changed since the jar was made (hash of pom.xml and src/).
sources_hash="$(cd "$HERE" && find pom.xml src -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"
if [[ ! -f "$JAR" || "$(cat "$DIR/sources.sha256" 2>/dev/null)" != "$sources_hash" ]]; then
  log "$NAME: building with Maven (~20 s; ~2 min more when ~/.m2 lacks HAPI's dependencies)"
  build_started="$(now_ms)"
  rm -f "$DIR/sources.sha256"
  if ! (cd "$HERE" && mvn -B -q -DskipTests \
          -Dradmesh.build.directory="$DIR/build" package) >"$DIR/build.log" 2>&1; then
    show_log_tail "$NAME (mvn package)" "$DIR/build.log"
    exit 1
  fi
  cp "$DIR/build/radmesh-hapi-fhir.jar" "$JAR"
  printf '%s\n' "$sources_hash" >"$DIR/sources.sha256"
  log "$NAME: built in $(awk "BEGIN{print ($(now_ms)-$build_started)/1000}") s"
fi

mkdir -p "$DIR/data"
: >"$LOGFILE"
(
  cd "$DIR"
  RADMESH_FHIR_PORT="$RADMESH_FHIR_PORT" RADMESH_FHIR_SMART_PORT="$RADMESH_FHIR_SMART_PORT" \
  RADMESH_FHIR_DATA_DIR="$DIR/data" \
    exec nohup java "-Xmx${RADMESH_FHIR_HEAP:-1g}" -XX:+ExitOnOutOfMemoryError \
      -jar "$JAR" >>"$LOGFILE" 2>&1 </dev/null
) &
echo $! >"$PIDFILE"

# HAPI creates or checks its schema and loads the R4 definitions before it answers: ~25-35 s.
if ! wait_until 240 "$NAME" answering || ! pid_alive "$PIDFILE"; then
  show_log_tail "$NAME" "$LOGFILE"
  stop_pidfile "$NAME" "$PIDFILE" 10 >/dev/null 2>&1 || true
  exit 1
fi
ready_line "$NAME" "$started" "$WHERE" "$LOGFILE"
