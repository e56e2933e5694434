#!/usr/bin/env bash
# Starts Keycloak (the development identity provider) on 127.0.0.1:$RADMESH_KEYCLOAK_PORT in dev
# mode with the realm `radmesh` imported from realm-radmesh.json: the accounts rad1, rad2
# (radiologist), clin1, clin2 (clinician), ops1 (operator), guest1 (no role), password
# radmesh-dev; the public client radmesh-review (authorization code + PKCE) and the
# confidential client radmesh. The distribution comes from Maven Central
# (org.keycloak:keycloak-quarkus-dist, zip) through ~/.m2 on first use.
# Dev mode keeps nothing worth keeping: its database is wiped at every start so the realm file
# is always the truth. Idempotent: exits 0 if our Keycloak is already running and answering.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"

NAME="keycloak"
VERSION="${RADMESH_KEYCLOAK_VERSION:-26.7.3}"
DIR="$(component_dir "$NAME")"
PIDFILE="$DIR/pid"
LOGFILE="$DIR/log"
DIST="$DIR/keycloak-$VERSION"
ISSUER="http://127.0.0.1:${RADMESH_KEYCLOAK_PORT}/realms/radmesh"
WHERE="$ISSUER (Keycloak $VERSION, dev mode)"
started="$(now_ms)"

already_running "$NAME" "$PIDFILE" "$WHERE" http_ok "$ISSUER/.well-known/openid-configuration" && exit 0
ports_free "$NAME" "$RADMESH_KEYCLOAK_PORT" || exit 1

for tool in java mvn; do
  command -v "$tool" >/dev/null || { fail "$NAME: $tool is not installed (Java 17+ and Maven needed)"; exit 1; }
done
command -v unzip >/dev/null || apt_install "$NAME" "$DIR/apt.log" unzip || exit 1

if [[ ! -x "$DIST/bin/kc.sh" ]]; then
  log "$NAME: fetching keycloak-quarkus-dist $VERSION from Maven (~180 MB, once)"
  if ! mvn -B -q dependency:copy -Dartifact="org.keycloak:keycloak-quarkus-dist:$VERSION:zip" \
        -DoutputDirectory="$DIR" >"$DIR/fetch.log" 2>&1; then
    show_log_tail "$NAME (mvn dependency:copy)" "$DIR/fetch.log"
    exit 1
  fi
  rm -rf "$DIST"
  unzip -q -o "$DIR/keycloak-quarkus-dist-$VERSION.zip" -d "$DIR"
  rm -f "$DIR/keycloak-quarkus-dist-$VERSION.zip"
fi

rm -rf "$DIST/data"
mkdir -p "$DIST/data/import"
cp "$HERE/realm-radmesh.json" "$DIST/data/import/"
: >"$LOGFILE"
(
  cd "$DIR"
  KC_BOOTSTRAP_ADMIN_USERNAME="${RADMESH_KEYCLOAK_ADMIN:-admin}" \
  KC_BOOTSTRAP_ADMIN_PASSWORD="${RADMESH_KEYCLOAK_ADMIN_PASSWORD:-radmesh-dev}" \
  JAVA_OPTS_KC_HEAP="-Xms64m -Xmx${RADMESH_KEYCLOAK_HEAP:-512m}" \
    exec nohup "$DIST/bin/kc.sh" start-dev --import-realm \
      --http-host=127.0.0.1 --http-port="$RADMESH_KEYCLOAK_PORT" \
      --hostname="http://127.0.0.1:${RADMESH_KEYCLOAK_PORT}" \
      --http-management-port="$RADMESH_KEYCLOAK_MANAGEMENT_PORT" >>"$LOGFILE" 2>&1 </dev/null
) &
echo $! >"$PIDFILE"

# Dev mode re-augments the server, creates its H2 schema and imports the realm: ~30-60 s.
if ! wait_until 240 "$NAME" http_ok "$ISSUER/.well-known/openid-configuration" || ! pid_alive "$PIDFILE"; then
  show_log_tail "$NAME" "$LOGFILE"
  stop_pidfile "$NAME" "$PIDFILE" 10 >/dev/null 2>&1 || true
  exit 1
fi
ready_line "$NAME" "$started" "$WHERE" "$LOGFILE"
