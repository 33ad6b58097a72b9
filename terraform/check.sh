#!/usr/bin/env bash
# Offline static checks of terraform/ (the provider registry is not reachable, so no init/validate):
# formatting, and a checkov scan. The .tf content itself is tested by tests/deploy/test_terraform.py.
set -euo pipefail
cd "$(dirname "$0")"
export TF_CLI_CONFIG_FILE=/dev/null  # no CLI config needed; silences the missing ~/.terraformrc warning
CHECKOV_VERSION=3.3.30

terraform fmt -check -recursive -diff .
echo "terraform fmt: ok"

UV=${UV:-$(command -v uv || echo ../.tools/bin/uv)}
# checkov is isolated from the project venv: its pins conflict with Airflow's.
"$UV" tool run --quiet --from "checkov==${CHECKOV_VERSION}" checkov \
  --directory . --framework terraform --skip-download --quiet --compact
echo "checkov: ok"
