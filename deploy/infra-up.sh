#!/usr/bin/env bash
# Starts the local infrastructure radmesh talks to, each component once (a second run is a
# no-op): RabbitMQ, Orthanc + DICOMweb, HAPI FHIR, the Triton model server, Keycloak, and
# Debian's Chromium for the browser tests, promtool, the tools that check the deployment
# files (deploy/deployment-tools), the DICOM validators the tests run on radmesh's SRs
# (deploy/dicom-validators) and FHIR.js, the third FHIR validator (deploy/fhir-validators).
# Usage: deploy/infra-up.sh [component ...]   (default: all of them)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
components=("$@")
(( ${#components[@]} )) || components=(rabbitmq orthanc hapi-fhir model-server keycloak chromium prometheus deployment-tools dicom-validators fhir-validators)
mkdir -p "$RADMESH_RUN_DIR"
started="$(now_ms)"
for component in "${components[@]}"; do
  if ! bash "$RADMESH_ROOT/deploy/$component/up.sh"; then
    fail "infra-up stopped at $component (see above)"
    exit 1
  fi
done
log "all up in $(awk "BEGIN{print ($(now_ms)-$started)/1000}") s; runtime files in $RADMESH_RUN_DIR"
