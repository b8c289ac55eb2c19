# Two commands do all set-up themselves on a fresh machine with Python 3.11:
#   make demo   — the main job
#   make test   — lint, type-check and the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint system mlflow-server label-studio clean

# Ranges in pyproject.toml; the exact versions tested together in constraints.txt.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m fashattr demo

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks docs/hooks
	$(PY) -m ruff format --check src tests benchmarks docs/hooks
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

# System packages the tests drive for real (chromium, a PostgreSQL server); apt-get when missing.
system:
	tools/system-deps.sh

# The MLflow server of the tracking tests, in .venv-mlflow (its pins clash with ours).
mlflow-server:
	tools/mlflow-server.sh

# The Label Studio server of the round-trip test, in .venv-labelstudio (its Django stack pins its own versions).
label-studio:
	tools/label-studio-server.sh

test: lint system mlflow-server label-studio
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=25

clean:
	rm -rf $(VENV) .venv-mlflow .venv-labelstudio runs
