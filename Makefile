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
CONSTRAINTS := constraints.txt
SYSTEM_PACKAGES := mininet iproute2 iptables tcpdump tshark iperf3 ethtool procps psmisc \
	libnetfilter-queue-dev python3-venv python3-dev build-essential
# for the CI checks of the Vagrantfile and its provisioning script (tests/test_vagrant.py) and of
# report.html as a browser renders it (tests/analysis/test_report_browser.py); installed where the
# distribution has them (Debian 13 dropped vagrant), the tests skip where they are not
CHECK_PACKAGES := vagrant shellcheck chromium chromium-driver
PYTEST_ARGS ?=

.PHONY: setup system-packages demo test lint bench check-vagrant

setup: $(STAMP)

# constraints.txt pins every package to the version the tests pass with (pyproject.toml keeps the
# ranges); a change to it installs again.  Its torch pin equals TORCH_VERSION (tests/test_constraints.py).
$(STAMP): pyproject.toml Makefile $(CONSTRAINTS)
	$(MAKE) system-packages
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch==$(TORCH_VERSION)" $(TORCH_INDEX)
	$(BIN)/python -m pip install -q -e ".[dev]" -c $(CONSTRAINTS)
	$(BIN)/python .ci/link_mininet.py
	$(BIN)/edgestage doctor
	touch $(STAMP)

# Installs only what is missing, so a machine that has everything needs no network.
# Optional, installed only where the package lists have them: CHECK_PACKAGES, and Ubuntu's
# linux-modules-extra-$(uname -r), which holds the kernel's sch_netem (the netem backend), when
# modinfo cannot find that module; sch_netem is then loaded best-effort.  On Debian 12 no such
# package exists (and its kernel may not load modules), so that part does nothing and never fails.
system-packages:
	@missing=""; for p in $(SYSTEM_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ]; then echo "make setup: run as root (sudo make setup) to install:$$missing" >&2; exit 2; fi; \
		apt-get update -qq; \
	fi; \
	optional="$(CHECK_PACKAGES)"; \
	modinfo sch_netem >/dev/null 2>&1 || optional="$$optional linux-modules-extra-$$(uname -r)"; \
	for p in $$optional; do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" && continue; \
		apt-cache show "$$p" >/dev/null 2>&1 && missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		if [ "$$(id -u)" != 0 ]; then echo "make setup: run as root (sudo make setup) to install:$$missing" >&2; exit 2; fi; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi; \
	modprobe sch_netem >/dev/null 2>&1 || true

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
	$(BIN)/edgestage bench memory

# What CI can check of the VM without booting one (tests/test_vagrant.py runs the same).
check-vagrant:
	@dot=$$(mktemp -d); VAGRANT_DOTFILE_PATH="$$dot" vagrant validate --ignore-provider; rc=$$?; rm -rf "$$dot"; exit $$rc
	shellcheck .ci/provision-vm.sh
