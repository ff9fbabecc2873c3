"""What a result was made with, for the manifest of a run (emulation/runner.py) and of a deployment
(emulation/deploy.py): the edgestage version and commit and whether the tree had uncommitted
changes, the installed versions of the project's direct dependencies, and sha256 checksums of the
model weights, traces and hardware profiles the experiment used.  Pure look-ups: nothing here
prints, and a fact that cannot be found is None, never an error (a wheel install has no git)."""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emulation.scenario import Experiment

ROOT = Path(__file__).resolve().parent.parent  # the source tree (a checkout, or site-packages)
DIST = "edgestage"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _git(*args: str) -> str | None:
    # under sudo the checkout is another user's, which git refuses to read unless told it is safe;
    # --no-optional-locks: `status` must not rewrite that user's index as root
    command = ["git", "-c", f"safe.directory={ROOT}", "--no-optional-locks", "-C", str(ROOT), *args]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(command, capture_output=True, text=True, timeout=5)
        if done.returncode == 0:
            return done.stdout
    return None


def git_commit() -> str | None:
    """The commit the code runs from; None outside a git checkout."""
    out = _git("rev-parse", "HEAD")
    return (out or "").strip() or None


def git_dirty() -> bool | None:
    """Whether the checkout has uncommitted changes (untracked files included); None outside one."""
    out = _git("status", "--porcelain")
    return None if out is None else bool(out.strip())


def edgestage_version() -> str | None:
    """The installed package's version; pyproject.toml's when the tree is not installed."""
    try:
        return md.version(DIST)
    except md.PackageNotFoundError:
        with contextlib.suppress(OSError, tomllib.TOMLDecodeError, KeyError):
            return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])
    return None


def version_line() -> str:
    """`edgestage 0.1.0 (commit 1a2b3c4d5e6f, uncommitted changes)`: what --version prints."""
    commit, dirty = git_commit(), git_dirty()
    where = "" if commit is None else f" (commit {commit[:12]}{', uncommitted changes' if dirty else ''})"
    return f"{DIST} {edgestage_version() or 'unknown version'}{where}"


def direct_dependencies() -> list[str]:
    """The distribution names pyproject.toml lists under [project] dependencies (not the dev extra);
    the installed metadata's when the source tree has no pyproject.toml."""
    try:
        specs = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    except (OSError, tomllib.TOMLDecodeError, KeyError):
        try:
            specs = [s for s in md.requires(DIST) or [] if "extra ==" not in s]
        except md.PackageNotFoundError:
            return []
    names = (_NAME.match(spec.strip()) for spec in specs)
    return [m.group(0) for m in names if m]


def package_versions() -> dict[str, str | None]:
    """Installed version of each direct dependency; None for one that is not installed."""
    out: dict[str, str | None] = {}
    for name in direct_dependencies():
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def versions() -> dict[str, Any]:
    """Python, edgestage (version, commit, dirty tree) and the direct dependencies' versions."""
    return {"python": sys.version.split()[0], "edgestage": edgestage_version(),
            "edgestage_commit": git_commit(), "edgestage_dirty": git_dirty(), **package_versions()}


def _sha256(path: Path) -> str | None:
    from nodes.diffusion.model_zoo import sha256_of  # the one checksum of the testbed (doctor's too)

    try:
        return sha256_of(path)
    except OSError:
        return None


def model_checksums(models: list[str]) -> dict[str, dict[str, str | None]]:
    """Per model (a shipped name or a model directory): its weights file and their sha256."""
    from nodes.diffusion.model_zoo import resolve_model_dir, weights_file

    out: dict[str, dict[str, str | None]] = {}
    for model in dict.fromkeys(models):
        try:
            weights = weights_file(resolve_model_dir(model))
        except (ValueError, OSError, StopIteration):  # gone since validation: say so, do not fail the run
            out[model] = {"path": None, "sha256": None}
            continue
        out[model] = {"path": str(weights), "sha256": _sha256(weights)}
    return out


def trace_files(experiment: Experiment) -> list[str]:
    """Every trace a scenario's links replay (a deployment has no emulated links: none)."""
    topology = getattr(experiment, "topology", None)
    if topology is None:
        return []
    links = [topology.device_link, topology.access, topology.backhaul, topology.inter_edge,
             *topology.devices, *topology.links]
    return list(dict.fromkeys(link.trace for link in links if link is not None and link.trace))


def checksums(experiment: Experiment) -> dict[str, dict[str, Any]]:
    """sha256 of what the experiment read: its roles' models, the quality judge (the classifier)
    and a cascade's gate, the traces its links replay, its hardware profiles file, and the files
    of its plugin strategies (a plugin imported by module path is in `versions`' packages or not
    at all)."""
    from nodes.diffusion.model_zoo import CLASSIFIER_NAME, GATE_NAME
    from nodes.planning.hardware import DEFAULT_PROFILES
    from nodes.schema import NODE_ROLES

    present = experiment.roles_present()  # a role no host plays loads nothing
    models = [m for role in NODE_ROLES if role in present for m in experiment.nodes.role(role).models]
    if any(spec.kind == "cascade" for spec in experiment.strategies.values()):
        models.append(GATE_NAME)
    profiles = Path(experiment.nodes.profiles_file or DEFAULT_PROFILES)
    from nodes.planning.plugins import is_file_ref

    plugins = [s.plugin.rsplit(":", 1)[0] for s in experiment.strategies.values()
               if s.kind == "plugin" and s.plugin and is_file_ref(s.plugin)]
    return {"models": model_checksums([*models, CLASSIFIER_NAME]),
            "traces": {trace: _sha256(Path(trace)) for trace in trace_files(experiment)},
            "profiles": {str(profiles): _sha256(profiles)},
            "plugins": {path: _sha256(Path(path)) for path in plugins}}


def provenance(experiment: Experiment) -> dict[str, Any]:
    """The manifest's `versions` and `checksums`, for a run and a deployment alike."""
    return {"versions": versions(), "checksums": checksums(experiment)}
