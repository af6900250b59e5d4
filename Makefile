# make demo  — set up everything on a fresh Debian machine, then tell the product's story on the simulators
# make test  — set up everything, then lint, types, the test suite, and the HIL suite on the simulated terminal
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := pcscd vsmartcard-vpcd libpcsclite-dev swig mosquitto mosquitto-clients \
                pcsc-tools opensc fonts-wqy-zenhei systemd
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP_APT := $(VENV)/.apt-stamp
STAMP_PIP := $(VENV)/.pip-stamp

.PHONY: setup demo test lint typecheck unit hil bench reliability clean

setup: $(STAMP_PIP)

$(STAMP_APT):
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	@mkdir -p $(VENV) && touch $@

$(STAMP_PIP): $(STAMP_APT) pyproject.toml
	@[ -x $(BIN)/python ] || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

demo: setup
	$(BIN)/ssc-agent demo

lint: setup
	$(BIN)/ruff check agent tests $(wildcard hil_tests bench fuzz)
	$(BIN)/ruff format --check agent tests $(wildcard hil_tests bench fuzz)

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -q

hil: setup
	$(BIN)/ssc-agent hil --sim --non-interactive --report reports/hil

test: lint typecheck unit hil

bench: setup
	$(BIN)/python bench/run_all.py

reliability: setup
	RELIABILITY_LONG=1 $(BIN)/pytest -q tests/reliability -p no:cacheprovider

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache reports var
