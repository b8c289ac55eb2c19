#!/usr/bin/env bash
# The MLflow tracking server of the tests (tests/test_tracking.py starts it on loopback): full MLflow in an
# environment of its own, .venv-mlflow, because its pins (pyarrow, pandas) clash with fashattr's. Installs it
# when missing; does nothing when it is there.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-mlflow
[ -x "$venv/bin/mlflow" ] && [ "$venv/.installed" -nt tools/mlflow-server-constraints.txt ] && exit 0
"${PYTHON:-python3}" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -c tools/mlflow-server-constraints.txt mlflow
touch "$venv/.installed"
