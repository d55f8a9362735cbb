#!/usr/bin/env bash
# Installs histocluster, its GPU stack and the SpatialData export into the active Python environment.
# Used by the Dockerfile; CI runs it with --dry-run to check the GPU extra resolves.
set -euo pipefail
extra_args=("$@")
python -m pip install --upgrade pip
python -m pip install "${extra_args[@]}" -e ".[gpu]"
# SpatialData pins an older dask: installed on top, as `make setup` does (see pyproject.toml).
python -m pip install "${extra_args[@]}" -e ".[scverse]"
