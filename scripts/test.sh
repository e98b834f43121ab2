#!/usr/bin/env bash
# The README's test command: install the system components the tests use, set up .venv, run the suite.
# CI (.ci/run) runs exactly this. A component that cannot be installed fails here, loudly; no test skips it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-deps.sh
python3 -m venv .venv
.venv/bin/pip install -q -e '.[test]'
bash scripts/wheelhouse.sh  # what tests/test_wheel.py installs the built wheel's dependencies from
exec .venv/bin/python -m pytest "$@"
