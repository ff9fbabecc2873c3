"""A researcher's own strategy as a plugin (nodes/planning/plugins.py, strategies.py `Plugin`): found by
import path, by file and by entry point; refused at scenario validation in one line when it cannot be
imported or built; its faults fail only its requests (or go to its fallback), each with a reason
naming it; `observe` is told every outcome through the coordinator's core; and the two examples of
examples/strategies/, the bandit on a synthetic sequence of outcomes and the rule on live estimates.
No root, no network."""

from __future__ import annotations

import logging
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from emulation.scenario import load_scenario
from nodes.clock import Clock
from nodes.planning import plugins
from nodes.planning.coordination import CoordinatorCore, Delivery, Dispatch, Fail, Report
from nodes.planning.estimates import LiveEstimates
from nodes.planning.hardware import load_power, load_profiles
from nodes.planning.plan import parse_plan
from nodes.planning.planner import HostFacts, Planner, QualityFloor
from nodes.planning.quality_table import read_table
from nodes.planning.request import PlanRequest
from nodes.planning.strategies import Cluster, Outcome, Plugin, build_strategies
from nodes.planning.strategy_specs import StrategySpec

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples" / "strategies"
LARGE_PRESENT = (ROOT / "nodes" / "pretrained" / "large" / "config.json").is_file()

# a plugin that plans what its options say, fails as they say, and keeps what it is told
FAKE = textwrap.dedent("""
    import time

    from nodes.planning.plan import Plan, Stage
    from nodes.planning.planner import Decision


    class Fixed:
        def __init__(self, name, options):
            if "refuse" in options:
                raise ValueError("no option 'refuse',\\nplease")
            self.name = name
            self.options = options
            self.outcomes = []

        def plan_for(self, request, view):
            o = self.options
            if o.get("raise"):
                raise RuntimeError("boom")
            time.sleep(o.get("sleep_s", 0))
            if o.get("not_a_decision"):
                return "large:0-30@cloud"
            host = request.device if o.get("host") == "device" else o.get("host", "cloud")
            return Decision(Plan((Stage(o.get("model", "large"), 0, o.get("end", view.steps), host),)),
                            note="as told")

        def observe(self, outcome):
            self.outcomes.append(outcome)
            if self.options.get("observe_raises"):
                raise KeyError("observe broke")


    NOT_A_CLASS = 3
""")


@pytest.fixture()
def fake_file(tmp_path: Path) -> Path:
    path = tmp_path / "fake_plugin.py"
    path.write_text(FAKE)
    return path


# ---- finding the class --------------------------------------------------------------------------

def test_a_plugin_is_found_by_import_path(tmp_path, monkeypatch):
    (tmp_path / "fake_strategies_by_path.py").write_text(FAKE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "fake_strategies_by_path", raising=False)
    spec = StrategySpec(kind="plugin", plugin="fake_strategies_by_path:Fixed", options={"model": "large"})
    [strategy] = build_strategies({"p": spec}).values()
    assert isinstance(strategy, Plugin) and type(strategy.strategy).__name__ == "Fixed"
    assert strategy.strategy.name == "p" and strategy.strategy.options == {"model": "large"}


def test_a_plugin_is_found_by_file_and_a_relative_one_is_made_absolute(fake_file, monkeypatch):
    assert type(plugins.instantiate("p", f"{fake_file}:Fixed", {})).__name__ == "Fixed"
    monkeypatch.chdir(fake_file.parent)
    spec = StrategySpec(kind="plugin", plugin="fake_plugin.py:Fixed")
    assert spec.plugin == f"{fake_file.resolve()}:Fixed"  # the node processes run elsewhere


def test_a_plugin_is_found_by_entry_point(tmp_path, monkeypatch):
    (tmp_path / "fake_strategies_by_entry.py").write_text(FAKE)
    dist = tmp_path / "fake_strategies-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-strategies\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[edgestage.strategies]\nfixed = fake_strategies_by_entry:Fixed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "fake_strategies_by_entry", raising=False)
    assert type(plugins.instantiate("p", "fixed", {})).__name__ == "Fixed"
    with pytest.raises(ValueError, match="plugin nope: no strategy of that name is registered .*fixed"):
        plugins.load_class("nope")


@pytest.mark.parametrize(("ref", "options", "message"), [
    ("no_such_module_here:Fixed", {}, "cannot import 'no_such_module_here'"),
    ("{dir}/absent.py:Fixed", {}, "plugin absent.py: no such file"),
    ("{dir}/fake_plugin.py:Missing", {},
     "plugin fake_plugin.py:Missing: {dir}/fake_plugin.py has no 'Missing'"),
    ("{dir}/fake_plugin.py:NOT_A_CLASS", {}, "NOT_A_CLASS is not a class (a int)"),
    ("{dir}/fake_plugin.py:Fixed", {"refuse": 1}, "Fixed('p', options) raised ValueError: no option "
                                                 "'refuse', please"),
    ("not a reference", {}, "expected 'package.module:Class', 'file.py:Class' or the name"),
])
def test_a_plugin_that_cannot_be_made_is_one_line(fake_file, ref, options, message):
    folder = str(fake_file.parent.resolve())
    with pytest.raises(ValueError) as info:
        plugins.instantiate("p", ref.format(dir=folder), options)
    assert "\n" not in str(info.value) and message.format(dir=folder) in str(info.value), str(info.value)


def test_the_spec_takes_plugin_fields_for_plugins_only():
    with pytest.raises(ValueError, match="plugin needs 'plugin'"):
        StrategySpec(kind="plugin")
    with pytest.raises(ValueError, match="cloud_only takes no 'options' \\(only plugin does\\)"):
        StrategySpec(kind="cloud_only", options={"a": 1})
    with pytest.raises(ValueError, match="plugin takes what it needs in 'options'"):
        StrategySpec(kind="plugin", plugin="x:Y", model="large")
    with pytest.raises(ValueError, match="plugin takes no 'threshold'"):
        StrategySpec(kind="plugin", plugin="x:Y", threshold=0.9)


# ---- refused when the scenario is read ----------------------------------------------------------

SCENARIO = ('[topology]\nkind = "two_tier"\nnum_devices = 2\n[nodes.cloud]\nmodels = ["small"]\n'
            '[nodes.edge]\nmodels = ["small"]\n[strategies.a]\nkind = "cloud_only"\nmodel = "small"\n'
            '[strategies.p]\nkind = "plugin"\n')


@pytest.mark.parametrize(("table", "message"), [
    ('plugin = "absent.py:Fixed"\n', "strategies.p: plugin absent.py: no such file"),
    ('plugin = "fake_plugin.py:Missing"\n', "strategies.p: plugin fake_plugin.py:Missing: "),
    ('plugin = "fake_plugin.py:Fixed"\noptions = { refuse = true }\n',
     "strategies.p: plugin fake_plugin.py:Fixed: Fixed('p', options) raised ValueError"),
    ('plugin = "no_such_module_here:Fixed"\n',
     "strategies.p: plugin no_such_module_here:Fixed: cannot import"),
    ('plugin = "fake_plugin.py:Fixed"\nfallback = "nope"\n', "strategies.p: fallback 'nope' is not another"),
    ('plugin = "fake_plugin.py:Fixed"\nfallback = "p"\n', "strategies.p: fallback 'p' is not another"),
    ('plugin = "fake_plugin.py:Fixed"\ndecision_budget_ms = 0\n', "strategies.p.decision_budget_ms"),
])
def test_a_plugin_that_cannot_be_made_refuses_the_scenario_in_one_line(fake_file, table, message):
    path = fake_file.parent / "s.toml"
    path.write_text(SCENARIO + table)
    with pytest.raises(ValueError) as info:
        load_scenario(path)
    assert "\n" not in str(info.value) and message in str(info.value), str(info.value)


def test_a_plugin_file_lies_beside_the_scenario_whatever_the_working_directory(fake_file, tmp_path,
                                                                               monkeypatch):
    path = fake_file.parent / "s.toml"
    path.write_text(SCENARIO + 'plugin = "fake_plugin.py:Fixed"\nfallback = "a"\n'
                    'options = { model = "small" }\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    scenario = load_scenario(path)
    assert scenario.strategies["p"].plugin == f"{fake_file.resolve()}:Fixed"
    assert scenario.strategies["p"].options == {"model": "small"}


@pytest.mark.skipif(not LARGE_PRESENT, reason="the large model is not trained in this checkout")
def test_the_example_scenario_validates_and_its_plugins_build():
    scenario = load_scenario(EXAMPLES / "plugins.toml")
    assert list(scenario.strategies) == ["cloud_only", "rule_based", "bandit"]
    assert scenario.strategies["bandit"].plugin == f"{EXAMPLES / 'bandit.py'}:EpsilonGreedy"
    built = build_strategies(scenario.strategies)
    assert isinstance(built["bandit"], Plugin) and built["bandit"].fallback is built["cloud_only"]
    assert type(built["rule_based"].strategy).__name__ == "RuleBased"


@pytest.mark.skipif(not LARGE_PRESENT, reason="the large model is not trained in this checkout")
def test_the_coordinator_s_node_config_carries_the_plugin_to_a_fresh_process(tmp_path):
    """What the runner writes for the edge host, read back as the node process reads it (another
    process, the repository as its working directory, as the node launcher starts it)."""
    scenario = load_scenario(EXAMPLES / "plugins.toml")
    hosts = {h: (role, f"tcp://10.0.0.{i + 1}:5555", f"tcp://10.0.0.{i + 1}:5555")
             for i, (h, role) in enumerate({"edge": "edge", "cloud": "cloud", "d1": "device",
                                            "d2": "device"}.items())}
    config = scenario.node_configs(hosts, "edge", tmp_path, {})["edge"]
    config.write_for_launch()
    code = ("import sys\nfrom nodes.runtime.node_config import load_node_config\n"
            "from nodes.planning.strategies import build_strategies\n"
            "s = build_strategies(load_node_config(sys.argv[1]).strategies)\n"
            "print(type(s['bandit'].strategy).__name__, s['bandit'].fallback.name, "
            "type(s['rule_based'].strategy).__name__)")
    done = subprocess.run([sys.executable, "-c", code, str(config.config_file)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["EpsilonGreedy", "cloud_only", "RuleBased"]


# ---- faults, fallbacks and outcomes through the coordinator's core ------------------------------

PROFILES, POWER = load_profiles(), load_power()
T0 = 1_000.0
N = 2
ROLES = {"edge": "edge", "cloud": "cloud", "d1": "device", "d2": "device"}
MODELS = {"edge": ("medium",), "cloud": ("large",), "d1": ("small",), "d2": ("small",)}
HOSTS = {"cloud": HostFacts("cloud", ("large",), {"large": PROFILES["datacenter_gpu"]["large"]}),
         "edge": HostFacts("edge", ("medium",), {"medium": PROFILES["edge_gpu"]["medium"]}),
         "d1": HostFacts("device", ("small",), {"small": PROFILES["phone"]["small"]}, POWER["phone"], "wifi"),
         "d2": HostFacts("device", ("small",), {"small": PROFILES["phone"]["small"]}, POWER["phone"], "wifi")}


def core(fake_file: Path, clock: Clock | None = None, fallback: bool = False, budget_ms: float | None = None,
         **options: object) -> CoordinatorCore:
    plugin = StrategySpec(kind="plugin", plugin=f"{fake_file}:Fixed", options=options,
                          decision_budget_ms=budget_ms, fallback="cloud_only" if fallback else None)
    specs = {"cloud_only": StrategySpec(kind="cloud_only"), "p": plugin}
    planner = Planner(read_table("dpm", 30), HOSTS, coordinator="edge", steps=30, clock=clock)
    return CoordinatorCore("edge", ROLES, MODELS, 30, build_strategies(specs), planner, request_timeout_s=5.0,
                           clock=clock)


def request(request_id: str = "r1", at: float = T0, strategy: str = "p", device: str = "d1") -> PlanRequest:
    return PlanRequest(request_id=request_id, device=device, n=N, strategy=strategy, wall_sent=at - 0.01,
                       wall_received=at, request_bytes=700)


def told(c: CoordinatorCore) -> list[Outcome]:
    return c.strategies["p"].strategy.outcomes  # type: ignore[attr-defined]


@pytest.mark.parametrize(("options", "fault"), [
    ({"raise": True}, "raised RuntimeError: boom"),
    ({"host": "moon"}, "invalid plan: plan stage large:0-30@moon: host 'moon' is not in the cluster"),
    ({"model": "small"}, "invalid plan: plan stage small:0-30@cloud: host cloud does not hold model 'small'"),
    ({"end": 20}, "invalid plan: plan stages do not tile [0, 30): they end at 20"),
    ({"host": "d2", "model": "small"}, "invalid plan: plan stage small:0-30@d2: a device runs stages of its "
                                       "own requests only (this is d1's)"),
    ({"not_a_decision": True}, "returned a str, not a Decision with a Plan"),
    ({"sleep_s": 0.03, "budget_ms": 5}, "decision cut short after"),
])
def test_a_fault_fails_only_its_request_with_a_reason_naming_the_plugin(fake_file, options, fault):
    options = dict(options)
    budget = options.pop("budget_ms", None)
    c = core(fake_file, budget_ms=budget, **options)
    [failed] = c.on_request(request(), T0)
    assert isinstance(failed, Fail)
    assert failed.reason.startswith("no plan: plugin p (fake_plugin.py:Fixed): "), failed.reason
    assert fault in failed.reason, failed.reason
    [ok] = c.on_request(request("r2", T0 + 0.1, "cloud_only"), T0 + 0.1)  # the run goes on
    assert isinstance(ok, Dispatch)
    [outcome] = told(c)  # the plugin is told of its failure, with the reason
    assert not outcome.ok and outcome.plan is None and outcome.reason == failed.reason


def test_a_decision_over_budget_says_by_how_much_in_emulated_ms(fake_file):
    # 60 ms of wall time at K = 2 is 30 ms emulated: within a 50 ms budget (60 would not be), over a
    # 20 ms one, and returned before it was cut short (at twice the budget: 80 ms of wall time)
    [within] = core(fake_file, Clock(dilation=2), budget_ms=50, sleep_s=0.06).on_request(request(), T0)
    assert isinstance(within, Dispatch)
    [over] = core(fake_file, Clock(dilation=2), budget_ms=20, sleep_s=0.06).on_request(request(), T0)
    assert isinstance(over, Fail) and "over its budget of 20 ms" in over.reason
    if "decision took " in over.reason:  # a machine slow enough to wake the sleep late cuts it short
        took = int(over.reason.split("decision took ")[1].split(" ms")[0])
        assert 30 <= took <= 40, over.reason


def test_a_decision_that_never_returns_is_cut_short_and_stalls_only_its_plugin(fake_file):
    c = core(fake_file, budget_ms=10, sleep_s=0.5)
    began = time.perf_counter()
    [cut] = c.on_request(request(), T0)
    assert time.perf_counter() - began < 0.3  # waited twice its budget (20 ms), not its 0.5 s
    assert isinstance(cut, Fail) and "decision cut short after" in cut.reason and "left running" in cut.reason
    [ok] = c.on_request(request("r2", T0 + 0.1, "cloud_only"), T0 + 0.1)  # the coordinator goes on
    assert isinstance(ok, Dispatch)
    [busy] = c.on_request(request("r3", T0 + 0.2), T0 + 0.2)
    assert isinstance(busy, Fail) and "is still running" in busy.reason
    c.strategies["p"].running["thread"].join()  # once it has returned, the plugin decides again
    c.strategies["p"].strategy.options["sleep_s"] = 0
    [again] = c.on_request(request("r4", T0 + 0.8), T0 + 0.8)
    assert isinstance(again, Dispatch)


def test_with_a_fallback_a_fault_is_a_note_on_the_fallback_s_plan(fake_file):
    c = core(fake_file, fallback=True, host="moon")
    [dispatch] = c.on_request(request(), T0)
    assert isinstance(dispatch, Dispatch) and str(dispatch.decision.plan) == "large:0-30@cloud"
    assert dispatch.decision.note.startswith(
        "fallback cloud_only: plugin p (fake_plugin.py:Fixed): invalid plan")
    assert dispatch.decision.prediction is not None  # predicted as every plan is


def test_a_valid_decision_keeps_its_note_and_is_predicted(fake_file):
    c = core(fake_file, host="device", model="small")
    [dispatch] = c.on_request(request(), T0)
    assert isinstance(dispatch, Dispatch) and str(dispatch.decision.plan) == "small:0-30@d1"
    assert dispatch.decision.note == "as told" and dispatch.decision.prediction is not None


def test_observe_is_told_the_latency_of_a_done_request_in_emulated_seconds(fake_file):
    c = core(fake_file, Clock(dilation=2))
    [dispatch] = c.on_request(request(), T0)
    assert isinstance(dispatch, Dispatch)
    # the device reports its result: sent at T0 - 0.01, arrived at T0 + 0.59 (wall): 0.3 s emulated
    c.on_report(Report("d1", "r1", N, delivery=Delivery("cloud", "result", T0 + 0.5, T0 + 0.59, 2200)),
                T0 + 0.6)
    [outcome] = told(c)
    assert outcome.ok and outcome.reason is None and str(outcome.plan) == "large:0-30@cloud"
    assert outcome.latency_s == pytest.approx(0.3)
    again = Delivery("cloud", "result", T0 + 0.5, T0 + 0.7, 2200)
    c.on_report(Report("d1", "r1", N, delivery=again), T0 + 0.7)
    assert len(told(c)) == 1  # once only


def test_observe_is_told_of_failures_a_timeout_and_a_host_down(fake_file):
    c = core(fake_file)
    c.on_request(request("r1"), T0)
    [lost] = c.on_connection_lost("cloud", "host cloud is down", T0 + 0.1)
    assert isinstance(lost, Fail) and lost.request.request_id == "r1"
    c.on_connection_back("cloud")
    c.on_request(request("r2", T0 + 0.2), T0 + 0.2)
    assert [o.request.request_id for o in told(c)] == ["r1"]
    c.on_tick(T0 + 5.3)  # r2's request timeout (5 s) has passed with no result reported
    outcomes = {o.request.request_id: o for o in told(c)}
    assert set(outcomes) == {"r1", "r2"} and not any(o.ok for o in outcomes.values())
    assert {o.reason for o in outcomes.values()} == {
        "host cloud is down", "no result reported within the request timeout of 5 s"}
    c.on_tick(T0 + 6.0)
    assert len(told(c)) == 2  # once only


def test_a_dispatch_that_could_not_be_sent_is_a_failure_told(fake_file):
    c = core(fake_file)
    [dispatch] = c.on_request(request(), T0)
    [failed] = c.on_dispatch_failed(dispatch, "dispatch to cloud failed: gone")
    assert isinstance(failed, Fail)
    [outcome] = told(c)
    assert not outcome.ok and outcome.reason == "dispatch to cloud failed: gone"
    assert str(outcome.plan) == "large:0-30@cloud"


def test_what_observe_raises_is_logged_and_goes_no_further(fake_file, caplog):
    c = core(fake_file, observe_raises=True)
    c.on_request(request(), T0)
    with caplog.at_level(logging.WARNING, logger="nodes.planning.coordination"):
        c.on_report(Report("d1", "r1", N, delivery=Delivery("cloud", "result", T0, T0 + 0.2, 2200)), T0 + 0.2)
    assert "strategy p: observe(r1) raised KeyError" in caplog.text
    [again] = c.on_request(request("r2", T0 + 1), T0 + 1)
    assert isinstance(again, Dispatch)


def test_the_view_predicts_and_looks_up_any_plan(fake_file):
    c = core(fake_file)
    view, plan = c.cluster, parse_plan("large:0-15@cloud,small:15-30@d1", 30)
    assert view.quality(plan) is not None and view.quality(plan)["class_accuracy"] > 0.5
    assert view.quality(parse_plan("large:0-29,small:29-30", 30)) is None  # off the grid
    assert view.predict(plan, request()).wall_latency_s > 0
    candidates = view.candidates(request(), QualityFloor(min_class_accuracy=0.9), single_host=True)
    assert candidates and all(len(p.stages) == 1 for p in candidates)
    assert view.transfer_s("d1", "edge") is None and view.rate_mbit("d1", "edge") is None  # never observed


# ---- the examples -------------------------------------------------------------------------------

def example(name: str, cls: str, **options: object):
    return plugins.instantiate(name, f"{EXAMPLES / (name + '.py')}:{cls}", options)


def bare_view(live: LiveEstimates | None = None, clock: Clock | None = None) -> Cluster:
    return Cluster(edge="edge", roles=ROLES, models=MODELS, steps=10, live=live or LiveEstimates(),
                   clock=clock or Clock())


def test_the_bandit_learns_per_device_the_fastest_plan():
    bandit = example("bandit", "EpsilonGreedy", seed=3, epsilon=0.1)
    view = bare_view()
    # emulated seconds per arm and device, with noise: the edge is fastest for d1, the device for d2
    costs = {"d1": {"large@cloud": 0.50, "medium@edge": 0.30, "small@device": 0.90},
             "d2": {"large@cloud": 0.80, "medium@edge": 0.70, "small@device": 0.40}}
    noise = random.Random(7)
    chosen: dict[str, list[str]] = {"d1": [], "d2": []}
    for i in range(400):
        device = "d1" if i % 2 == 0 else "d2"
        r = request(f"r{i}", T0 + i, device=device)
        decision = bandit.plan_for(r, view)
        arm = decision.note.split(" ")[1]
        chosen[device].append(arm)
        latency = costs[device][arm] * noise.uniform(0.8, 1.2)
        bandit.observe(Outcome(r, decision.plan, ok=True, latency_s=latency))
    assert chosen["d1"][:3] == ["large@cloud", "medium@edge", "small@device"]  # each tried first
    late = {d: c[-100:] for d, c in chosen.items()}
    assert late["d1"].count("medium@edge") >= 85 and late["d2"].count("small@device") >= 85
    assert str(bandit.plan_for(request("x", device="d2"), view).plan) == "small:0-10@d2"


def test_the_bandit_is_seeded_counts_failures_and_keeps_to_its_floor():
    def run(seed: int) -> list[str]:
        bandit = example("bandit", "EpsilonGreedy", seed=seed, epsilon=0.5)
        out = []
        for i in range(40):
            r = request(f"r{i}")
            decision = bandit.plan_for(r, bare_view())
            out.append(str(decision.plan))
            failed = decision.plan.stages[0].host == "edge"  # the edge fails every request
            bandit.observe(Outcome(r, decision.plan, ok=not failed, latency_s=None if failed else 0.5,
                                   reason="host edge is down" if failed else None))
        return out

    assert run(1) == run(1) and run(1) != run(2)
    assert run(1)[10:].count("medium:0-10@edge") < run(1)[10:].count("large:0-10@cloud")
    # the floor: small alone (class accuracy 0.824 at dpm/10) is never a candidate
    planner = Planner(read_table("dpm", 10), HOSTS, coordinator="edge", steps=10)
    view = Cluster(edge="edge", roles=ROLES, models=MODELS, steps=10, planner=planner, live=LiveEstimates())
    floored = example("bandit", "EpsilonGreedy", min_class_accuracy=0.9)
    assert [label for label, _ in floored.arms(request(), view)] == ["large@cloud", "medium@edge"]


def test_the_bandit_refuses_options_it_does_not_take():
    with pytest.raises(ValueError, match="unknown option 'epsilom'"):
        example("bandit", "EpsilonGreedy", epsilom=0.1)
    with pytest.raises(ValueError, match="epsilon must be a number in \\[0, 1\\]"):
        example("bandit", "EpsilonGreedy", epsilon=2)
    with pytest.raises(ValueError, match="malformed plan stage"):
        example("bandit", "EpsilonGreedy", plans=["large@cloud"])


def test_the_bandit_s_plans_name_roles_or_hosts():
    plans = ["large:0-5@cloud,small:5-10@device", "medium:0-10@edge"]
    bandit = example("bandit", "EpsilonGreedy", plans=plans)
    arms = bandit.arms(request(device="d2"), bare_view())
    assert [str(plan) for _, plan in arms] == ["large:0-5@cloud,small:5-10@d2", "medium:0-10@edge"]
    view = Cluster(edge="edge", roles=ROLES, models=MODELS, steps=10, unavailable={"cloud": "down"})
    assert [str(plan) for _, plan in bandit.arms(request(), view)] == ["medium:0-10@edge"]


def observed(rates_mbit: dict[str, float], clock: Clock) -> LiveEstimates:
    """Live estimates of each device's link at a rate (emulated Mbit/s), 5 ms each way: a request up
    and a result down, as the coordinator sees them, in wall seconds under `clock`."""
    live = LiveEstimates()
    for device, mbit in rates_mbit.items():
        for size in (700, 100_000, 700, 100_000):
            seconds = clock.wall(0.005 + 8 * size / (mbit * 1e6))
            src, dst = (device, "edge") if size == 700 else ("edge", device)
            live.observe_transfer(src, dst, size, seconds)
    return live


@pytest.mark.parametrize("dilation", [1.0, 4.0])
def test_the_rule_keeps_a_slow_link_s_requests_on_the_device(dilation):
    clock = Clock(dilation=dilation)
    view = bare_view(observed({"d1": 20.0, "d2": 2.0}, clock), clock)
    rule = example("rule_based", "RuleBased", threshold_mbit=10)
    assert view.rate_mbit("d1", "edge") == pytest.approx(20.0, rel=0.01)
    assert str(rule.plan_for(request(device="d1"), view).plan) == "medium:0-10@edge"
    slow = rule.plan_for(request(device="d2"), view)
    assert str(slow.plan) == "small:0-10@d2" and slow.note == "link 2 Mbit/s against 10 Mbit/s"
    unseen = Cluster(edge="edge", roles={**ROLES, "d3": "device"}, models={**MODELS, "d3": ("small",)},
                     steps=10, live=LiveEstimates())
    assert str(rule.plan_for(request(device="d3"), unseen).plan) == "medium:0-10@edge"  # offload to find out
    cloud = example("rule_based", "RuleBased", threshold_mbit=1, offload="cloud")
    assert str(cloud.plan_for(request(device="d2"), view).plan) == "large:0-10@cloud"
    with pytest.raises(ValueError, match="offload must be 'edge' or 'cloud'"):
        example("rule_based", "RuleBased", offload="moon")


def test_the_examples_run_through_the_coordinator_s_core(tmp_path):
    specs = {"cloud_only": StrategySpec(kind="cloud_only"),
             "rule": StrategySpec(kind="plugin", plugin=f"{EXAMPLES / 'rule_based.py'}:RuleBased"),
             "bandit": StrategySpec(kind="plugin", plugin=f"{EXAMPLES / 'bandit.py'}:EpsilonGreedy",
                                    fallback="cloud_only", options={"seed": 0})}
    planner = Planner(read_table("dpm", 30), HOSTS, coordinator="edge", steps=30)
    c = CoordinatorCore("edge", ROLES, MODELS, 30, build_strategies(specs), planner, request_timeout_s=5.0)
    for i, strategy in enumerate(["rule", "bandit", "bandit", "bandit"]):
        at = T0 + i
        [action] = c.on_request(request(f"r{i}", at, strategy), at)
        assert isinstance(action, Dispatch), action
        result = Delivery(action.decision.plan.stages[-1].host, "result", at + 0.1, at + 0.2, 2200)
        c.on_report(Report("d1", f"r{i}", N, delivery=result), at + 0.2)
    bandit = c.strategies["bandit"].strategy  # type: ignore[attr-defined]
    assert len(bandit.cost) == 3 and not bandit.pending  # three arms tried, each told its latency
