#!/usr/bin/env bash
# Install the host, the plugin API and the three example plugins into ./.venv,
# then list the plugins the host finds. Safe to run again: it reuses the venv.
set -euo pipefail
cd "$(dirname "$0")/.."

python="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
# The example plugins are built into real wheels by their own build backend and
# installed like any published plugin (not editable), so the host reads them
# exactly as an operator's host would.
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
    -e ./hookspecs -e '.[dev]' \
    ./example_plugins/box-connector ./example_plugins/box-remediation ./example_plugins/splunk-hec

# Until plugin signing lands, the example plugins are unsigned: `warn` loads
# them and says so; the default, `strict`, would refuse them.
export APERIO_PLUGIN_TRUST_MODE="${APERIO_PLUGIN_TRUST_MODE:-warn}"
.venv/bin/aperio plugin list
