"""constraints.txt, the versions `make setup` installs (issue 18): the running environment has every
pinned package at its pinned version (so the suite tests what the file pins), every direct
dependency of pyproject.toml has a pin, and the torch pin is the Makefile's TORCH_VERSION."""

from __future__ import annotations

import importlib.metadata as md
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints.txt"


def _pins() -> dict[str, Requirement]:
    """Canonical name -> its pin: one `name==version` line each (an environment marker allowed)."""
    pins: dict[str, Requirement] = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        pin = Requirement(line)
        specs = list(pin.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"constraints.txt: {line!r} is not an exact pin"
        name = canonicalize_name(pin.name)
        assert name not in pins, f"constraints.txt: {pin.name} pinned twice"
        pins[name] = pin
    return pins


def _direct_dependencies() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [r for extra in project["optional-dependencies"].values() for r in extra]
    return [Requirement(r) for r in [*project["dependencies"], *extras]]


PINS = _pins()


@pytest.mark.parametrize("name", sorted(PINS))
def test_every_pinned_package_is_installed_at_its_pin(name: str) -> None:
    pin = PINS[name]
    if pin.marker is not None and not pin.marker.evaluate():
        pytest.skip(f"{pin}: not for this platform")
    try:
        installed = md.version(pin.name)
    except md.PackageNotFoundError:
        pytest.fail(f"{pin.name} is pinned in constraints.txt but not installed (make setup installs it)")
    # a pin without a local label (torch==2.13.0) matches a local build (2.13.0+cpu), as pip does
    assert pin.specifier.contains(installed, prereleases=True), (
        f"{pin.name} {installed} is installed, constraints.txt pins {pin.specifier}")


def test_every_direct_dependency_has_a_pin() -> None:
    missing = [str(r) for r in _direct_dependencies() if canonicalize_name(r.name) not in PINS]
    assert not missing, f"no pin in constraints.txt for: {', '.join(missing)}"


def test_each_pin_lies_in_pyprojects_range() -> None:
    outside = []
    for dependency in _direct_dependencies():
        pin = PINS.get(canonicalize_name(dependency.name))
        version = next(iter(pin.specifier)).version if pin else None
        if version and not dependency.specifier.contains(version, prereleases=True):
            outside.append(f"{dependency} (pinned {version})")
    assert not outside, f"pins outside pyproject.toml's ranges: {', '.join(outside)}"


def test_make_setup_installs_with_the_constraints_and_torch_at_its_pin() -> None:
    makefile = (ROOT / "Makefile").read_text()
    version = re.search(r"^TORCH_VERSION \?= (\S+)$", makefile, re.M)
    assert version and str(PINS["torch"].specifier) == f"=={version.group(1)}"
    assert re.search(r"^CONSTRAINTS := constraints\.txt$", makefile, re.M)
    installs = [line for line in makefile.splitlines()
                if "pip install" in line and "--upgrade pip" not in line]
    # torch alone may come from a torch-only index (TORCH_INDEX) that lacks the pinned versions of
    # its dependencies: it is pinned by TORCH_VERSION, and the next install brings the rest to the pins
    assert len(installs) == 2 and "torch==$(TORCH_VERSION)" in installs[0], installs
    assert not installs[0].endswith("-c $(CONSTRAINTS)") and installs[1].endswith("-c $(CONSTRAINTS)")
    assert re.search(r"^\$\(STAMP\):.*\$\(CONSTRAINTS\)", makefile, re.M), "a new pin must re-run setup"
