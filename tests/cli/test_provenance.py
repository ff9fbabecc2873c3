"""The manifest's provenance (issue 18): the tree's commit and dirty state, the direct dependencies'
versions, and checksums of the models, traces and profiles an experiment used, the same block for
a run (emulation/runner.py) and a deployment (emulation/deploy.py)."""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pandas as pd
import pytest

from emulation import provenance
from emulation.deploy import finish_deployment, load_deployment
from emulation.scenario import load_scenario
from nodes.diffusion.model_zoo import default_models
from nodes.planning.hardware import DEFAULT_PROFILES

REPO = Path(__file__).resolve().parents[2]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_versions_name_the_commit_the_dirty_state_and_every_direct_dependency() -> None:
    versions = provenance.versions()
    listed = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert len(provenance.direct_dependencies()) == len(listed)
    for name in ("torch", "diffusers", "numpy", "pandas", "pyzmq", "scapy", "pydantic"):
        assert versions[name] == md.version(name)
    assert "pytest" not in versions  # the dev extra is not a dependency of a run
    assert versions["edgestage"] == md.version("edgestage")
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if commit.returncode == 0:
        assert versions["edgestage_commit"] == commit.stdout.strip()
        assert isinstance(versions["edgestage_dirty"], bool)


def test_checksums_of_a_scenarios_models_traces_and_profiles() -> None:
    scenario = load_scenario(REPO / "scenarios" / "bench" / "trace.toml")
    sums = provenance.checksums(scenario)
    shipped = {m["name"]: m["sha256"] for m in default_models()}  # doctor's checksums
    models = {m for role in scenario.roles_present() for m in scenario.nodes.role(role).models}
    assert set(sums["models"]) >= models | {"classifier"}
    for name, entry in sums["models"].items():
        assert entry["sha256"] == shipped[name]
    traces = {Path(t).name: s for t, s in sums["traces"].items()}
    assert {"walk-2-30.trace", "step-20-4.trace", "deep-fade.csv"} <= set(traces)
    walk = REPO / "topologies" / "traces" / "walk-2-30.trace"
    assert traces["walk-2-30.trace"] == _sha256(walk)
    assert sums["profiles"] == {str(DEFAULT_PROFILES): _sha256(DEFAULT_PROFILES)}


def test_a_deployments_manifest_has_the_same_provenance(tmp_path, monkeypatch) -> None:
    """finish_deployment's manifest, with the pipeline after it replaced by a recorder: no node
    runs here."""
    import analysis.pipeline
    import analysis.run_tables

    deployment = load_deployment(REPO / "scenarios" / "deploy-loopback.toml")
    seen = {}
    monkeypatch.setattr(analysis.run_tables, "requests_frame",
                        lambda run_dir, planned: pd.DataFrame({"warmup": [False], "wall_t_scheduled": [1.0]}))
    monkeypatch.setattr(analysis.pipeline, "finish_run_dir",
                        lambda run_dir, manifest, **kw: seen.setdefault("manifest", manifest))
    finish_deployment(deployment, tmp_path, devices=[])
    written = json.loads((tmp_path / "manifest.json").read_text())
    assert written["versions"]["torch"] == md.version("torch")
    assert written["checksums"] == provenance.checksums(deployment)
    assert written["checksums"]["traces"] == {}  # a real network replays no trace
    assert seen["manifest"]["versions"] == written["versions"]


def test_analysis_still_loads_without_torch() -> None:
    code = "import analysis.run_tables, nodes.progress, sys; assert 'torch' not in sys.modules"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr


def test_license_and_citation() -> None:
    yaml = pytest.importorskip("yaml")  # huggingface_hub, a dependency of diffusers, brings it

    assert "MIT License" in (REPO / "LICENSE").read_text()
    citation = yaml.safe_load((REPO / "CITATION.cff").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert citation["cff-version"] == "1.2.0" and citation["title"] == "edgestage"
    assert str(citation["version"]) == project["version"] and citation["license"] == "MIT"
    paper = citation["references"][0]
    assert paper["title"].startswith("Toward Resource-Efficient Collaboration of Large AI Models")
    assert "doi" not in paper


def test_a_plugin_strategys_file_is_checksummed() -> None:
    scenario = load_scenario(REPO / "examples" / "strategies" / "plugins.toml")
    plugins = provenance.checksums(scenario)["plugins"]
    files = sorted(Path(path).name for path in plugins)
    assert files == ["bandit.py", "rule_based.py"]
    for path, digest in plugins.items():
        assert Path(path).is_absolute() and digest == _sha256(Path(path))
