#!/bin/bash
# Leave out of the package's environment what the agent never runs (both packages):
#   botocore's models of the ~440 services it never calls (60 % of the package): only those
#   of agent/cloud/service_models.py's OPERATIONS stay, with the shared endpoint, partition, retry and
#   default-configuration files; every service's documentation examples;
#   systemd-python's tests; pydantic's mypy plugin and its v1 compatibility package.
# Usage: packaging/slim-venv.sh PYTHON SITE_PACKAGES   (PYTHON: the environment's own; run
# before its byte code is compiled)
set -euo pipefail
PYTHON=$1 SITE=$2
DATA="$SITE/botocore/data"
KEEP=" $("$PYTHON" -c 'from agent.cloud.service_models import OPERATIONS; print(" ".join(OPERATIONS))') "
[ -f "$DATA/endpoints.json" ] || { echo "slim-venv: no botocore data in $SITE" >&2; exit 1; }
for dir in "$DATA"/*/; do
  name=$(basename "$dir")
  case "$KEEP" in *" $name "*) ;; *) rm -rf "$dir" ;; esac
done
find "$DATA" -name 'examples-1.json' -delete
rm -rf "$SITE/systemd/test" "$SITE/pydantic/mypy.py" "$SITE/pydantic/v1"
