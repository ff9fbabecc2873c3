"""Scenario files: the shipped ones validate; bad input is one line naming the field (and line), exit
2, and nothing is started or written.  No root needed."""

import subprocess
import sys
from pathlib import Path

import pytest

from emulation.scenario import load_scenario, parse_scenario
from emulation.workload import arrival_times, plan_workload

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGY = '[topology]\nkind = "two_tier"\nnum_devices = 2\n'
LARGE_PRESENT = (ROOT / "nodes" / "pretrained" / "large" / "config.json").is_file()


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return path


def _small_only(extra: str = "") -> str:
    """A scenario that needs only the small model (so it validates wherever small exists)."""
    return (TOPOLOGY + '[nodes.cloud]\nmodels = ["small"]\n[nodes.edge]\nmodels = ["small"]\n'
            '[strategies.a]\nkind = "cloud_only"\nmodel = "small"\n' + extra)


@pytest.mark.skipif(not LARGE_PRESENT, reason="the large model is not trained in this checkout")
@pytest.mark.parametrize("name", ["default", "smoke"])
def test_shipped_scenarios_validate(name):
    scenario = load_scenario(ROOT / "scenarios" / f"{name}.toml")
    assert set(scenario.strategies) >= {"cloud_only", "edge_only", "device_only", "fixed_split"}
    assert scenario.nodes.cloud.models == ["large"] and scenario.nodes.device.models == ["small"]


@pytest.mark.parametrize(
    ("extra", "field", "line"),
    [
        ("[workload]\nrequests = 4\nbogus = 1\n", "workload.bogus: unknown field", 13),
        ("[workload]\ninterval_s = -1\n", "workload.interval_s: Input should be greater than 0", 12),
        ("[workload]\narrival = \"bursty\"\n", "workload.arrival", 12),
        ("[generation]\nscheduler = \"euler\"\n", "generation.scheduler: unknown scheduler", 12),
        ("[nodes.device]\nmodels = [\"nope\"]\n", "nodes.device.models[0]", 12),
        ("[nodes.device]\ncompute = \"profiled\"\n", "nodes.device: compute = 'profiled' needs", 11),
        ("[strategies.b]\nkind = \"edge_only\"\nmodel = \"large\"\n", "strategies.b", None),
        # a cascade's quality is its table's row: a threshold (or model pair) the table lacks is refused
        ("[strategies.c]\nkind = \"cascade\"\nthreshold = 0.42\nescalate_model = \"small\"\n"
         "escalate_tier = \"cloud\"\n[generation]\nscheduler = \"dpm\"\nsteps = 30\n",
         "strategies.c: the cascade table of dpm/30 steps has no row for small -> small at threshold 0.42",
         None),
        ("[strategies.c]\nkind = \"cascade\"\nthreshold = 0.9\nescalate_model = \"small\"\n"
         "escalate_tier = \"cloud\"\n[generation]\nsteps = 17\n", "no cascade table for", None),
        ("[strategies.c]\nkind = \"cascade\"\nthreshold = 0.9\n", "strategies.c: cascade needs "
         "'escalate_model'", None),
        ("[workload]\nstrategies = [\"a\", \"zz\"]\n", "workload.strategies: 'zz' is not a strategy of this "
         "scenario (it has: a)", None),
        ("[workload]\nstrategies = []\n", "workload.strategies", 12),
    ],
)
def test_bad_fields_name_the_field_and_line(tmp_path, extra, field, line):
    path = _write(tmp_path, _small_only(extra))
    with pytest.raises(ValueError) as info:
        load_scenario(path)
    message = str(info.value)
    assert "\n" not in message and field in message, message
    if line is not None:
        assert message.startswith(f"{path}:{line}:"), message


def test_topology_errors_keep_their_path(tmp_path):
    text = _small_only().replace("num_devices = 2", "num_devices = 2\n[topology.backhaul]\nbw_mbit = -5")
    with pytest.raises(ValueError, match=r"topology\.backhaul\.bw_mbit"):
        load_scenario(_write(tmp_path, text))


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_scenario(tmp_path / "absent.toml")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_scenario(_write(tmp_path, "[workload\n"))


def test_model_copy_changes_a_field():
    scenario = parse_scenario({"topology": {"kind": "star", "num_devices": 3},
                               "nodes": {"cloud": {"models": []}},
                               "strategies": {"e": {"kind": "edge_only"}, "d": {"kind": "device_only"}}})
    changed = scenario.model_copy(update={"workload": scenario.workload.model_copy(update={"requests": 6})})
    assert changed.workload.requests == 6 and scenario.workload.requests == 32


def test_workload_interleaves_strategies_and_devices():
    scenario = parse_scenario({
        "topology": {"kind": "star", "num_devices": 2}, "nodes": {"cloud": {"models": []}},
        "strategies": {"e": {"kind": "edge_only"}, "d": {"kind": "device_only"}},
        "workload": {"requests": 8, "arrival": "poisson", "interval_s": 0.5, "seed": 3}})
    planned = plan_workload(scenario.workload, ["d1", "d2"], ["e", "d"], repetitions=2)
    assert len(planned) == 16 and len({r.seed for r in planned}) == 8  # one seed per round
    pairs = [(r.strategy, r.device) for r in planned[:8]]
    assert {p: pairs.count(p) for p in set(pairs)} == {("e", "d1"): 2, ("d", "d1"): 2, ("e", "d2"): 2,
                                                       ("d", "d2"): 2}
    # a round: one device and seed through every strategy, the order turned by one each round
    assert [r.strategy for r in planned[:8]] == ["e", "d", "d", "e", "e", "d", "d", "e"]
    for first, second in zip(planned[::2], planned[1::2], strict=True):
        assert (first.device, first.seed, first.labels) == (second.device, second.seed, second.labels)
        assert first.strategy != second.strategy
    times = [r.at_s for r in planned]
    assert times == sorted(times) and times[0] == 0.0
    assert arrival_times(scenario.workload, 16) == times  # reproducible from the seed


def test_cli_bad_scenario_exits_2_and_writes_nothing(tmp_path):
    path = _write(tmp_path, _small_only("[run]\nrepetitions = 0\n"))
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "emulation.cli", "run", str(path), "--out", str(out)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgestage: error: ") and "run.repetitions" in lines[0]
    assert not out.exists()


def test_a_single_strategy_workload_gives_every_request_its_own_seed():
    scenario = parse_scenario({
        "topology": {"kind": "star", "num_devices": 2}, "nodes": {"cloud": {"models": []}},
        "strategies": {"e": {"kind": "edge_only"}}, "workload": {"requests": 4, "seed": 3}})
    planned = plan_workload(scenario.workload, ["d1", "d2"], ["e"], repetitions=2)
    assert [r.seed for r in planned] == [3_000_000 + i for i in range(8)]
    assert [r.device for r in planned] == ["d1", "d2"] * 4


def test_warmup_opens_every_device_strategy_pair_first():
    scenario = parse_scenario({
        "topology": {"kind": "star", "num_devices": 2}, "nodes": {"cloud": {"models": []}},
        "strategies": {"e": {"kind": "edge_only"}, "d": {"kind": "device_only"}},
        "workload": {"requests": 4, "interval_s": 1.0, "warmup": True}})
    planned = plan_workload(scenario.workload, ["d1", "d2"], ["e", "d"])
    warm = [r for r in planned if r.warmup]
    assert {(r.device, r.strategy) for r in warm} == {("d1", "e"), ("d1", "d"), ("d2", "e"), ("d2", "d")}
    measured = [r for r in planned if not r.warmup]
    assert len(measured) == 4 and min(r.at_s for r in measured) > max(r.at_s for r in warm)
    assert len({r.seed for r in warm}) == len(warm) and all(r.repetition == -1 for r in warm)
    assert not {r.seed for r in warm} & {r.seed for r in measured}
