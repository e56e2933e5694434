#!/usr/bin/env bash
# Starts Keycloak (the development identity provider) on 127.0.0.1:$RADMESH_KEYCLOAK_PORT in dev
# mode with the realm `radmesh` imported from realm-radmesh.json: the accounts rad1, rad2
# (radiologist), clin1, clin2 (clinician), ops1 (operator), guest1 (no role), password
# radmesh-dev; the public client radmesh-review (authorization code + PKCE) and the
# confidential client radmesh; and radmesh-services, the SMART Backend Services client
# (client credentials with a JWT assertion signed by its private key, private_key_jwt RS384).
# Its RSA key pair (and a second, unrelated one Keycloak does not know, for tests of a wrong
# key) is made here with openssl, once, under $RADMESH_RUN_DIR/keycloak/smart/; the certificate
# is written into the copy of the realm file Keycloak imports. The distribution comes from
# Maven Central (org.keycloak:keycloak-quarkus-dist, zip) through ~/.m2 on first use.
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

SMART_DIR="$DIR/smart"
SERVICES_CERT="$SMART_DIR/radmesh-services.cert.pem"

# key_pair NAME CN -> makes $SMART_DIR/NAME.key.pem (PKCS#8 PEM, mode 0600) and NAME.cert.pem
# (self-signed X.509, 10 years) unless both are there and belong together (sets MADE=1 when made).
key_pair() {
  local key="$SMART_DIR/$1.key.pem" cert="$SMART_DIR/$1.cert.pem"
  if [[ -s "$key" && -s "$cert" ]] && [[ "$(head -n 1 "$key")" == "-----BEGIN PRIVATE KEY-----" ]] \
      && [[ "$(openssl pkey -in "$key" -pubout 2>/dev/null)" == "$(openssl x509 -in "$cert" -noout -pubkey 2>/dev/null)" ]]; then
    return 0
  fi
  ( umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -subj "/CN=$2" \
      -keyout "$key.tmp" -out "$cert.tmp" ) >>"$SMART_DIR/openssl.log" 2>&1 || {
    show_log_tail "$NAME (openssl, key pair $1)" "$SMART_DIR/openssl.log"; return 1; }
  chmod 600 "$key.tmp" && chmod 644 "$cert.tmp"
  mv -f "$key.tmp" "$key" && mv -f "$cert.tmp" "$cert"
  log "$NAME: made the RSA 2048 key pair $1 (CN=$2) in $SMART_DIR"
  MADE=1
}

command -v openssl >/dev/null || apt_install "$NAME" "$DIR/apt.log" openssl || exit 1
mkdir -p "$SMART_DIR" && chmod 700 "$SMART_DIR"
MADE=0
key_pair radmesh-services radmesh-services || exit 1
services_made="$MADE"
key_pair wrong radmesh-services-wrong-key || exit 1

if already_running "$NAME" "$PIDFILE" "$WHERE" http_ok "$ISSUER/.well-known/openid-configuration"; then
  (( services_made )) && log "$NAME: the running Keycloak knows the previous radmesh-services certificate; restart it (down.sh, up.sh)"
  exit 0
fi
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
# The realm file as Keycloak imports it: realm-radmesh.json plus radmesh-services' certificate
# (base64 DER, the client's jwt.credential.certificate attribute), known only now.
RADMESH_SERVICES_CERT_B64="$(openssl x509 -in "$SERVICES_CERT" -outform DER | base64 -w 0)" \
  python3 - "$HERE/realm-radmesh.json" "$DIST/data/import/realm-radmesh.json" <<'PY' || { fail "$NAME: could not write the realm file to import"; exit 1; }
import json, os, sys
source, target = sys.argv[1], sys.argv[2]
with open(source, encoding="utf-8") as file:
    realm = json.load(file)
clients = [c for c in realm.get("clients", []) if c.get("clientId") == "radmesh-services"]
if len(clients) != 1:
    sys.exit(f"{source} must define the client radmesh-services once")
clients[0].setdefault("attributes", {})["jwt.credential.certificate"] = os.environ["RADMESH_SERVICES_CERT_B64"]
with open(target, "w", encoding="utf-8") as file:
    json.dump(realm, file, indent=2)
PY
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
