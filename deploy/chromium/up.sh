#!/usr/bin/env bash
# Makes sure Debian's Chromium is installed for the browser tests (Playwright drives it through
# its executable_path; no browser is downloaded). Nothing is started: each test launches its own
# headless browser. Idempotent.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
NAME="chromium"
DIR="$(component_dir "$NAME")"
started="$(now_ms)"
if ! command -v chromium >/dev/null 2>&1; then
  apt_install "$NAME" "$DIR/apt.log" chromium || exit 1
fi
ready_line "$NAME" "$started" "$(command -v chromium) ($(chromium --version 2>/dev/null | head -n 1))" "$DIR/apt.log"
