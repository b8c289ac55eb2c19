#!/usr/bin/env bash
# The Label Studio server of the round-trip test (tests/test_labelstudio_server.py starts it on loopback): the
# label-studio package from PyPI in an environment of its own, .venv-labelstudio, because its Django stack pins
# packages fashattr does not need. Installs it when missing; does nothing when it is there.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-labelstudio
[ -x "$venv/bin/label-studio" ] && [ "$venv/.installed" -nt tools/label-studio-constraints.txt ] && exit 0
"${PYTHON:-python3}" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -c tools/label-studio-constraints.txt label-studio
touch "$venv/.installed"
