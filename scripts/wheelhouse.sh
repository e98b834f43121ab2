#!/usr/bin/env bash
# Fill .cache/wheelhouse with wheels of the runtime dependencies of '.[web,rq]', read from pyproject.toml.
# tests/test_wheel.py installs the built wheel into a fresh venv from there with --no-index: the set-up may use
# the registries, the test never does. Run by scripts/test.sh after .venv is set up; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
dest=.cache/wheelhouse
mkdir -p "$dest"
mapfile -t reqs < <("$py" - <<'PY'
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

with open("pyproject.toml", "rb") as f:
    project = tomllib.load(f)["project"]
for req in [*project["dependencies"], *project["optional-dependencies"]["web"], *project["optional-dependencies"]["rq"]]:
    print(req)
PY
)
# The test suite forbids an index for itself (PIP_NO_INDEX); the set-up is where the registries may be used.
env -u PIP_NO_INDEX "$py" -m pip wheel --quiet --wheel-dir "$dest" "${reqs[@]}"
