"""What CI can check of the VM without booting one: the Vagrantfile validates (`vagrant validate
--ignore-provider`), its provisioning script passes shellcheck, and provisioning is the README's
own path (`make setup`, then `make test`) with CPU-only torch."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROVISION = ROOT / ".ci" / "provision-vm.sh"


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (make setup installs it where the distribution has it)")
    return path


def test_vagrantfile_validates(tmp_path):
    vagrant = _need("vagrant")
    # the dot folder (.vagrant/) goes to tmp_path so that the check leaves the work tree clean
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "VAGRANT_DOTFILE_PATH": str(tmp_path / "dot")}
    done = subprocess.run([vagrant, "validate", "--ignore-provider"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Vagrantfile validated successfully" in done.stdout


def test_provisioning_script_passes_shellcheck():
    shellcheck = _need("shellcheck")
    done = subprocess.run([shellcheck, "--severity=style", str(PROVISION)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_provisioning_is_the_readmes_path_with_cpu_only_torch():
    vagrantfile = (ROOT / "Vagrantfile").read_text()
    assert re.search(r'config\.vm\.provision "shell", path: "\.ci/provision-vm\.sh"', vagrantfile)
    assert re.search(r'config\.vm\.box = "bento/ubuntu-\d\d\.04"', vagrantfile)
    for provider in ("virtualbox", "libvirt"):
        assert f'config.vm.provider "{provider}"' in vagrantfile
    script = PROVISION.read_text()
    commands = [line.strip() for line in script.splitlines() if line.strip().startswith("make ")]
    assert commands == ['make setup TORCH_INDEX="$cpu_torch"',
                        'make test TORCH_INDEX="$cpu_torch" PYTEST_ARGS="-q"']
    assert 'cpu_torch="--index-url https://download.pytorch.org/whl/cpu"' in script
    # the Makefile passes TORCH_INDEX to the torch install, so that is where the index applies
    makefile = (ROOT / "Makefile").read_text()
    assert 'pip install -q "torch==$(TORCH_VERSION)" $(TORCH_INDEX)' in makefile


def _fake_tools(directory: Path, log: Path, modinfo_ok: bool, in_package_lists: str) -> dict[str, str]:
    """Stand-ins for the package and module tools, so both branches of `make system-packages`
    run here: every package but linux-modules-extra-* is installed; `modinfo sch_netem` fails or
    not; apt-cache knows the packages matching `in_package_lists` (a shell pattern); apt-get and
    modprobe only log."""
    tools = {
        "dpkg-query": "case \"$3\" in linux-modules-extra-*) ;; *) echo 'install ok installed' ;; esac",
        "modinfo": "exit 0" if modinfo_ok else "exit 1",
        "apt-cache": f'case "$2" in {in_package_lists}) exit 0 ;; *) exit 1 ;; esac',
        "apt-get": f'echo "apt-get $*" >> {log}',
        "modprobe": f'echo "modprobe $*" >> {log}; exit 1',  # as on a kernel that loads no module
        "id": "echo 0",
    }
    for name, body in tools.items():
        path = directory / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    return {"PATH": f"{directory}:/usr/bin:/bin", "HOME": str(directory)}


@pytest.mark.parametrize("modinfo_ok, in_lists, installs", [
    (False, "linux-modules-extra-*", True),  # Ubuntu without the module: install the package
    (False, "nothing", False),  # Debian 12: no such package, nothing to do, and no failure
    (True, "linux-modules-extra-*", False),  # the module is there already
])
def test_system_packages_installs_netem_only_where_ubuntu_has_it(tmp_path, modinfo_ok, in_lists, installs):
    _need("make")
    log = tmp_path / "calls.log"
    log.touch()
    env = _fake_tools(tmp_path, log, modinfo_ok, in_lists)
    done = subprocess.run(["make", "-s", "system-packages"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    kernel = subprocess.run(["uname", "-r"], capture_output=True, text=True, check=True).stdout.strip()
    calls = log.read_text().splitlines()
    install = f"apt-get install -y -qq --no-install-recommends linux-modules-extra-{kernel}"
    expected = [install] if installs else []
    assert [c for c in calls if c.startswith("apt-get")] == expected
    assert "modprobe sch_netem" in calls  # best-effort: its failure did not fail make
