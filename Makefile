# edgestage: `sudo make demo` runs the main job, `sudo make test` runs every test.
# Both set the machine up first (idempotent).  Variables:
#   PYTHON       interpreter the virtualenv is made from (default: python3)
#   TORCH_INDEX  extra pip arguments for torch, e.g. --index-url https://download.pytorch.org/whl/cpu
SHELL := /bin/bash
PYTHON ?= python3
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?=
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgestage-setup
SYSTEM_PACKAGES := mininet iproute2 iptables tcpdump tshark iperf3 ethtool procps psmisc \
	libnetfilter-queue-dev python3-venv python3-dev build-essential
PYTEST_ARGS ?=

.PHONY: setup system-packages demo test lint bench

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(MAKE) system-packages
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch==$(TORCH_VERSION)" $(TORCH_INDEX)
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python .ci/link_mininet.py
	$(BIN)/edgestage doctor
	touch $(STAMP)

# Installs only what is missing, so a machine that has everything needs no network.
system-packages:
	@missing=""; for p in $(SYSTEM_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		if [ "$$(id -u)" != 0 ]; then echo "make setup: run as root (sudo make setup) to install:$$missing" >&2; exit 2; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

demo: setup
	$(BIN)/edgestage run scenarios/default.toml

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/edgestage bench models
	$(BIN)/edgestage bench topology
	$(BIN)/edgestage bench fidelity
