# The README's two commands. Both create or update .venv and are safe to run again.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision builds that lie on this kind of machine's disk; override for another machine.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
export SSLFLOW_HOME ?= $(CURDIR)/.sslflow
# Where scripts/ensure-fashion-mnist unpacks Fashion-MNIST when dpkg cannot install it.
export SSLFLOW_DATA ?= $(CURDIR)/.cache/datasets

.PHONY: demo test test-slow lint typecheck fresh-machine ui venv clean-home

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC) -e '.[test,dev]'
	touch $@

demo: venv
	scripts/ensure-fashion-mnist $(PY) optional
	$(VENV)/bin/sslflow demo

test: venv
	scripts/ensure-fashion-mnist $(PY) required
	$(PY) -m pytest -q

# Lint and format check (ruff), then the type check (mypy over sslflow/); both fail on findings.
lint: venv
	$(VENV)/bin/ruff check sslflow tests benchmarks
	$(VENV)/bin/ruff format --check sslflow tests benchmarks

typecheck: venv
	$(VENV)/bin/mypy

test-slow: venv
	scripts/ensure-fashion-mnist $(PY) required
	$(PY) -m pytest -q -m slow

# Both README commands in a fresh clone with Fashion-MNIST's package hidden (root only).
fresh-machine:
	scripts/fresh-machine test demo

ui: venv
	$(VENV)/bin/sslflow ui

clean-home:
	rm -rf $(SSLFLOW_HOME)
