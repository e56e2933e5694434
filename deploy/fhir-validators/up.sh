#!/usr/bin/env bash
# Makes sure FHIR.js (the `fhir` npm package, pinned in package-lock.json) is installed for the
# end-to-end tests, which validate every resource radmesh writes with it beside HAPI's $validate
# and fhir.resources: tests/fhir_validators.py runs the copy of validate.js this puts beside the
# modules in .run/fhir-validators/. Nothing is started; npm ci runs again only when
# package-lock.json changed. Idempotent.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
NAME="fhir-validators"
DIR="$(component_dir "$NAME")"
LOGFILE="$DIR/npm.log"
started="$(now_ms)"
command -v node >/dev/null 2>&1 || { fail "$NAME: no node on PATH (Node 20 runs FHIR.js)"; exit 1; }
if ! cmp -s "$HERE/package-lock.json" "$DIR/package-lock.json" || [[ ! -d $DIR/node_modules/fhir ]]; then
  log "$NAME: installing FHIR.js with npm ci (once)"
  cp "$HERE/package.json" "$HERE/package-lock.json" "$DIR/"
  if ! (cd "$DIR" && npm ci --no-audit --no-fund >"$LOGFILE" 2>&1); then
    fail "$NAME: npm ci failed; last lines of $LOGFILE:"
    tail -n 40 "$LOGFILE" >&2
    exit 1
  fi
fi
cp "$HERE/validate.js" "$DIR/validate.js"
ready_line "$NAME" "$started" "node $DIR/validate.js" "$LOGFILE"
