# Two commands do all set-up themselves on a fresh machine with Python 3.11:
#   make demo   — the main job
#   make test   — lint, type-check and the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	rm -rf runs/demo
	$(PY) -m fashattr train configs/recipes/cpu_quick.yaml name=demo
	$(PY) -m fashattr eval runs/demo --split holdout
	$(PY) -m fashattr predict runs/demo --split test --out runs/demo/prediction.txt
	$(PY) -m fashattr predict runs/demo --split val --out runs/demo/val_prediction.txt

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks
	$(PY) -m mypy

test: lint
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs
