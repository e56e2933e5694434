#!/usr/bin/env bash
# Makes sure the tools that check radmesh's deployment files are at hand (nothing is started):
# - docker-compose (Debian's package) for `config` on deploy/compose.yaml (no engine needed);
# - kubectl with its built-in kustomize (or kustomize from the Go module proxy when kubectl is
#   missing) to render k8s/overlays/*;
# - the CustomResourceDefinitions of KEDA (ScaledObject, TriggerAuthentication) and of the
#   RabbitMQ Cluster Operator (RabbitmqCluster), taken from their Go modules at pinned versions
#   (checked by SHA-256) into $RADMESH_RUN_DIR/deployment-tools/crds, to validate those
#   resources offline. hadolint and kubernetes-validate come with the dev extras (pyproject).
# Idempotent.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
NAME="deployment-tools"
DIR="$(component_dir "$NAME")"
LOGFILE="$DIR/install.log"
GOPROXY_URL="${RADMESH_GOPROXY:-https://proxy.golang.org}"
# module@version  sha256 of the module zip  CRD files inside it
CRD_MODULES=(
  "github.com/kedacore/keda/v2@v2.16.1 ccb104c6e2cf35d16c9ceac520fa8d92afd9377b58ff62a668e5946eb4f18e2c config/crd/bases/keda.sh_scaledobjects.yaml,config/crd/bases/keda.sh_triggerauthentications.yaml"
  "github.com/rabbitmq/cluster-operator/v2@v2.11.0 0e25649f97660f4f7cd268aa8c82c1b7c98b9059bd46e8889d69ea1638a80cc2 config/crd/bases/rabbitmq.com_rabbitmqclusters.yaml"
)
KUSTOMIZE_MODULE="sigs.k8s.io/kustomize/kustomize/v5@v5.5.0"
started="$(now_ms)"

command -v docker-compose >/dev/null 2>&1 || apt_install "$NAME" "$LOGFILE" docker-compose || exit 1

if ! command -v kubectl >/dev/null 2>&1 && [[ ! -x $DIR/bin/kustomize ]]; then
  log "$NAME: no kubectl; building kustomize ($KUSTOMIZE_MODULE) from the Go module proxy"
  GOBIN="$DIR/bin" GOFLAGS=-mod=mod go install "$KUSTOMIZE_MODULE" >>"$LOGFILE" 2>&1 || {
    show_log_tail "$NAME (go install kustomize)" "$LOGFILE"; exit 1; }
fi

mkdir -p "$DIR/crds"
for entry in "${CRD_MODULES[@]}"; do
  read -r module sha files <<<"$entry"
  path="${module%@*}" version="${module#*@}"
  IFS=, read -r -a wanted <<<"$files"
  missing=0
  for file in "${wanted[@]}"; do [[ -s $DIR/crds/$(basename "$file") ]] || missing=1; done
  (( missing )) || continue
  zip="$DIR/$(basename "$path")-$version.zip"
  log "$NAME: fetching $module (its CRDs) from $GOPROXY_URL"
  curl -fsS --max-time 300 -o "$zip" "$GOPROXY_URL/$path/@v/$version.zip" 2>>"$LOGFILE" || {
    fail "$NAME: cannot fetch $module from $GOPROXY_URL"; exit 1; }
  if [[ "$(sha256sum "$zip" | cut -d' ' -f1)" != "$sha" ]]; then
    fail "$NAME: $zip does not have the expected SHA-256 $sha"; rm -f "$zip"; exit 1
  fi
  for file in "${wanted[@]}"; do
    python3 -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))' \
      "$zip" "$module/$file" >"$DIR/crds/$(basename "$file")"
  done
  rm -f "$zip"
done

# (no pipe into head: under pipefail, the writer's SIGPIPE would end this script)
if command -v kubectl >/dev/null 2>&1; then
  version="$(kubectl version --client 2>/dev/null || true)"
  version="${version%%$'\n'*}"
  renderer="kubectl ${version##* }"
else
  renderer="$DIR/bin/kustomize"
fi
ready_line "$NAME" "$started" "docker-compose $(docker-compose version --short 2>/dev/null), $renderer, CRDs in $DIR/crds" "$LOGFILE"
