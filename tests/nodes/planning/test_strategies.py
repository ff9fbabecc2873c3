"""Strategies turn a request into a plan with every host filled in, or say why they cannot."""

import pytest

from nodes.planning.plan import parse_plan
from nodes.planning.request import PlanRequest
from nodes.planning.strategies import Cluster, build_strategies, build_strategy
from nodes.planning.strategy_specs import StrategySpec, default_strategies

ROLES = {"edge": "edge", "cloud": "cloud", "d1": "device", "d2": "device"}
MODELS = {"edge": ("medium", "small"), "cloud": ("large",), "d1": ("small",), "d2": ("small",)}
CLUSTER = Cluster(edge="edge", roles=ROLES, models=MODELS, steps=50)


def _plan(name: str, origin: str = "d2", cluster: Cluster = CLUSTER) -> str:
    strategy = build_strategies(default_strategies())[name]
    request = PlanRequest(request_id="r1", device=origin, n=4, strategy=name)
    return str(strategy.plan_for(request, cluster).plan)


def test_default_strategies():
    assert _plan("cloud_only") == "large:0-50@cloud"
    assert _plan("edge_only") == "medium:0-50@edge"
    assert _plan("device_only") == "small:0-50@d2"
    assert _plan("fixed_split") == "large:0-20@cloud,medium:20-35@edge,small:35-50@d2"
    assert parse_plan(_plan("fixed_split"), 50)  # a plan the nodes accept


def test_fixed_split_rounds_cuts_drops_empty_stages_and_merges_neighbours():
    spec = StrategySpec(kind="fixed_split", split=[
        {"model": "small", "tier": "edge", "share": 0.5}, {"model": "small", "tier": "edge", "share": 0.49},
        {"model": "small", "tier": "device", "share": 0.01}])
    cluster = Cluster(edge="edge", roles=ROLES, models=MODELS, steps=10)
    request = PlanRequest(request_id="r", device="d1", n=1, strategy="s")
    plan = build_strategy("s", spec).plan_for(request, cluster).plan
    assert str(plan) == "small:0-10@edge"  # 0.01 of 10 steps rounds to nothing; two edge stages merge


def test_a_strategy_says_why_it_cannot_serve():
    no_cloud = Cluster(edge="edge", roles={"edge": "edge", "d1": "device"}, models=MODELS, steps=50)
    with pytest.raises(ValueError, match="no cloud host"):
        _plan("cloud_only", "d1", no_cloud)
    lacking = Cluster(edge="edge", roles=ROLES, models={**MODELS, "cloud": ("small",)}, steps=50)
    with pytest.raises(ValueError, match="does not hold model 'large'"):
        _plan("cloud_only", "d1", lacking)


def test_strategy_specs_are_checked():
    with pytest.raises(ValueError, match="add up to 1"):
        StrategySpec(kind="fixed_split", split=[{"model": "small", "tier": "edge", "share": 0.5}])
    with pytest.raises(ValueError, match="takes 'model', not 'split'"):
        StrategySpec(kind="edge_only", split=[{"model": "small", "tier": "edge", "share": 1}])
    with pytest.raises(ValueError, match="tier"):
        StrategySpec(kind="fixed_split", split=[{"model": "small", "tier": "moon", "share": 1}])
    with pytest.raises(ValueError, match="cascade needs 'threshold'"):
        StrategySpec(kind="cascade", escalate_model="large", escalate_tier="cloud")
    with pytest.raises(ValueError, match="edge_only takes no 'threshold' \\(only cascade does\\)"):
        StrategySpec(kind="edge_only", threshold=0.9)
    with pytest.raises(ValueError, match="threshold"):
        StrategySpec(kind="cascade", threshold=1.0, escalate_model="large", escalate_tier="cloud")
    with pytest.raises(ValueError, match="escalate_tier"):
        StrategySpec(kind="cascade", threshold=0.9, escalate_model="large", escalate_tier="device")


def test_a_cascade_runs_on_the_device_first_and_escalates_to_its_tier():
    spec = StrategySpec(kind="cascade", threshold=0.9, escalate_model="large", escalate_tier="cloud")
    cascade = build_strategy("c", spec)
    ask = PlanRequest(request_id="r", device="d1", n=4, strategy="c")
    first = cascade.plan_for(ask, CLUSTER).plan
    escalation = ask.model_copy(update={"request_id": "r.esc", "n": 2, "labels": (0, 1),
                                        "escalation_of": "r"})
    again = cascade.plan_for(escalation, CLUSTER).plan
    assert (str(first), str(again)) == ("small:0-50@d1", "large:0-50@cloud")
    to_edge = StrategySpec(kind="cascade", threshold=0.9, escalate_model="medium", escalate_tier="edge")
    from_d2 = escalation.model_copy(update={"device": "d2"})
    assert str(build_strategy("c", to_edge).plan_for(from_d2, CLUSTER).plan) == "medium:0-50@edge"


def test_an_escalation_routes_around_an_unavailable_host_to_the_tables_next_target():
    spec = StrategySpec(kind="cascade", threshold=0.95, escalate_model="large", escalate_tier="cloud")
    cascade = build_strategy("c", spec, table=("dpm", 30))
    assert cascade.alternatives == ("medium",)  # the cascade table's other target at 0.95
    escalation = PlanRequest(request_id="r.esc", device="d1", n=2, strategy="c", labels=(0, 1),
                             escalation_of="r")
    assert str(cascade.plan_for(escalation, CLUSTER).plan) == "large:0-50@cloud"
    down = Cluster(edge="edge", roles=ROLES, models=MODELS, steps=50,
                   unavailable={"cloud": "connection lost"})
    decision = cascade.plan_for(escalation, down)
    assert str(decision.plan) == "medium:0-50@edge"
    assert "no cloud host holding large" in decision.note and "cloud: connection lost" in decision.note
    first = escalation.model_copy(update={"request_id": "r", "escalation_of": None})
    assert str(cascade.plan_for(first, down).plan) == "small:0-50@d1"  # the first pass stays put
    alone = build_strategy("c", spec)  # no table named: its escalation model only
    with pytest.raises(ValueError, match=r"no available host holds large \(cloud: connection lost\)"):
        alone.plan_for(escalation, down)


def test_escalation_models_come_best_first_from_the_cascade_table():
    from nodes.planning.cascade_table import escalation_models

    assert escalation_models("small", 0.95, "dpm", 30) == ["large", "medium"]
    assert escalation_models("small", 0.42, "dpm", 30) == []  # no row at that threshold
    assert escalation_models("small", 0.95, "ddim", 7) == []  # no table at all


def test_latent_plans_are_one_kind_of_model_and_fit_their_requests(tiny_pipelines):
    """Issue 19: a plan of latent pipeline folders (named by their paths) is checked like any other,
    and refused in one line where it mixes a pixel model in; the coordinator refuses a latent plan
    for a request without prompts, a pixel plan for one with them, also a pixel cascade's."""
    from nodes.planning.coordination import check_fits

    large, small = str(tiny_pipelines["large"]), str(tiny_pipelines["small"])
    models = {**MODELS, "cloud": ("large", large), "edge": ("small", small)}
    cluster = Cluster(edge="edge", roles=ROLES, models=models, steps=8)
    split = StrategySpec(kind="fixed_split", split=[{"model": large, "tier": "cloud", "share": 0.5},
                                                    {"model": small, "tier": "edge", "share": 0.5}])
    ask = PlanRequest(request_id="r", device="d1", n=2, strategy="s", prompts=("a", "b"))
    plan = build_strategy("s", split).plan_for(ask, cluster).plan
    assert str(plan) == f"{large}:0-4@cloud,{small}:4-8@edge" and parse_plan(str(plan), 8) == plan
    check_fits(plan, ask)
    with pytest.raises(ValueError, match="runs latent pipelines, and the request has no prompts"):
        check_fits(plan, ask.model_copy(update={"prompts": None, "guidance_scale": None}))
    with pytest.raises(ValueError, match="runs pixel models, and the request has prompts"):
        check_fits(parse_plan("small:0-8@edge"), ask)
    mixed = StrategySpec(kind="fixed_split", split=[{"model": "large", "tier": "cloud", "share": 0.5},
                                                    {"model": small, "tier": "edge", "share": 0.5}])
    with pytest.raises(ValueError, match=f"cannot mix pixel and latent models: 'large' is a pixel denoiser, "
                                         f"'{small}' a latent pipeline"):
        build_strategy("m", mixed).plan_for(ask, cluster)
    cascade = StrategySpec(kind="cascade", threshold=0.9, escalate_model="large", escalate_tier="cloud")
    pixel = build_strategy("c", cascade).plan_for(ask, cluster).plan  # its device model: `small`
    with pytest.raises(ValueError, match="runs pixel models, and the request has prompts"):
        check_fits(pixel, ask)  # as the coordinator checks every decision


def test_a_latent_cascade_runs_its_pipeline_on_the_device_and_escalates_to_the_large_one(tiny_pipelines):
    """Issue 19: a cascade of latent pipelines plans as a pixel one does (the first pass on the
    device, the escalation to its tier), and its alternatives come from the latent cascade table."""
    large, small = str(tiny_pipelines["large"]), str(tiny_pipelines["small"])
    models = {**MODELS, "cloud": (large,), "edge": (small,), "d1": (small, large)}
    cluster = Cluster(edge="edge", roles=ROLES, models=models, steps=8)
    spec = StrategySpec(kind="cascade", model=small, threshold=0.9, escalate_model=large,
                        escalate_tier="cloud")
    cascade = build_strategy("c", spec, table=("ddim", 20))
    assert cascade.alternatives == ()  # the latent cascade table has rows for the embedded pipelines only
    ask = PlanRequest(request_id="r", device="d1", n=2, strategy="c", prompts=("a digit 1", "a digit 2"))
    assert str(cascade.plan_for(ask, cluster).plan) == f"{small}:0-8@d1"
    escalation = ask.model_copy(update={"request_id": "r.esc", "escalation_of": "r"})
    assert str(cascade.plan_for(escalation, cluster).plan) == f"{large}:0-8@cloud"
