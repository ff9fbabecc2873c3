"""`edgestage sweep`: the field assignment and values (pure), bad input (one line, exit 2, nothing
written), and a real two-value sweep of the smoke scenario's backhaul (root)."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from emulation.scenario import scenario_tables
from emulation.sweep import parse_assignment, parse_values, run_sweep, variants, with_field

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "scenarios" / "smoke.toml"


def test_values_are_toml_scalars_or_bare_words():
    assert parse_values('2, 10.5, "20ms", abc, true') == [2, 10.5, "20ms", "abc", True]
    assert parse_assignment("generation.steps=10,20") == ("generation.steps", [10, 20])


def test_setting_a_field_copies_and_creates_tables_as_needed():
    data, _ = scenario_tables(SMOKE)
    changed = with_field(data, "topology.cpu_shares.edge", 0.5)
    assert changed["topology"]["cpu_shares"] == {"edge": 0.5} and "cpu_shares" not in data["topology"]
    assert with_field(data, "topology.backhaul.bw_mbit", 7)["topology"]["backhaul"]["bw_mbit"] == 7
    assert data["topology"]["backhaul"]["bw_mbit"] == 50


def test_every_value_is_validated_and_named():
    runs = variants(SMOKE, "generation.steps", [10, 20])
    assert [(v, s.generation.steps, s.name) for v, s in runs] == [
        (10, 10, "smoke-generation.steps=10"), (20, 20, "smoke-generation.steps=20")]
    with pytest.raises(ValueError, match="generation.steps.*greater than or equal to 1"):
        variants(SMOKE, "generation.steps", [10, 0])


@pytest.mark.parametrize(("assignment", "needle"), [
    ("topology.backhaul.bw_mbit", "expected TABLE.FIELD=V1,V2"),
    ("topology.backhaul.bw_mbit=5,,6", "empty value"),
    ("topology.backhaul.bw_mbit=5,slow", "topology.backhaul.bw_mbit: Input should be a valid number"),
    ("nodes.cloud.nope=1", "nope"),
    ("topology.kind.x=1", "topology.kind is a value, not a table"),
    ("workload.requests=4,4", "a value is repeated"),
])
def test_bad_sweeps_are_one_line_exit_2_nothing_written(tmp_path, assignment, needle):
    out = tmp_path / "sweep"
    done = subprocess.run([sys.executable, "-m", "emulation.cli", "sweep", str(SMOKE), "--set", assignment,
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("edgestage: error:") and needle in done.stderr, done.stderr
    assert not out.exists()


@pytest.mark.root
@pytest.mark.slow
def test_a_backhaul_sweep_runs_each_value_and_tabulates_them(tmp_path):
    """The smoke scenario (its 8 requests, 2 per strategy) at one image per request, 0.2 s apart:
    what is checked is the sweep's runs and their table."""
    smoke = tmp_path / "smoke.toml"
    smoke.write_text(SMOKE.read_text().replace("interval_s = 0.5", "interval_s = 0.2")
                     .replace("images_per_request = 4", "images_per_request = 1"))
    out = tmp_path / "sweep"
    table = run_sweep(smoke, "topology.backhaul.bw_mbit", [5, 50], out, quality=False, progress=False)
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    saved = pd.read_csv(out / "sweep.csv")
    assert saved[["strategy", "done", "run_dir"]].equals(table[["strategy", "done", "run_dir"]])
    assert len(table) == 8 and sorted(set(table["topology.backhaul.bw_mbit"])) == [5, 50]
    assert (table["done"] == 2).all() and (table["failed"] == 0).all()
    for rate, run_dir in table.groupby("topology.backhaul.bw_mbit")["run_dir"].first().items():
        manifest = json.loads((out / run_dir / "manifest.json").read_text())
        assert manifest["scenario"]["topology"]["backhaul"]["bw_mbit"] == rate
        assert (out / run_dir / "report.md").is_file()
    assert json.loads((out / "sweep.json").read_text())["values"] == [5, 50]
