#!/usr/bin/env bash
# Stops what deploy/infra-up.sh started (by PID), in reverse order.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
components=("$@")
(( ${#components[@]} )) || components=(keycloak model-server hapi-fhir orthanc rabbitmq)
status=0
for component in "${components[@]}"; do
  bash "$RADMESH_ROOT/deploy/$component/down.sh" || status=1
done
exit "$status"
