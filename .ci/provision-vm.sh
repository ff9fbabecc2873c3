#!/usr/bin/env bash
# Provisions the Vagrant VM (see Vagrantfile) through the README's one install path:
# `make setup`, then `make test`.  Runs as root inside the VM, from the synced project folder.
# Torch comes from the CPU-only index so that the VM does not download GPU libraries.
set -euo pipefail

project_dir="${1:-/vagrant}"
cd "$project_dir"

if ! command -v make >/dev/null 2>&1; then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends make
fi

cpu_torch="--index-url https://download.pytorch.org/whl/cpu"
make setup TORCH_INDEX="$cpu_torch"
make test TORCH_INDEX="$cpu_torch" PYTEST_ARGS="-q"
