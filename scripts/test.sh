#!/usr/bin/env bash
# Set up .venv (the CPU build of torch first, from this machine kind's local disk), run the type
# checker on the package and the whole test suite, both tiers. Extra arguments go to pytest. Used as is by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[test,torch,dask,nifti,plot]"
# The type checker first: the package's hand-offs are typed (configuration in pyproject.toml).
.venv/bin/python -m mypy
export HYPOTHESIS_PROFILE="${HYPOTHESIS_PROFILE:-ci}"
# --slow: both tiers (tests/conftest.py); a developer's plain `pytest` runs the fast one.
exec .venv/bin/python -m pytest --slow "$@"
