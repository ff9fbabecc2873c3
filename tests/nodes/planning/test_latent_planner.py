"""The elastic planner's placement of a latent pipeline's text encoding and decoding (issue 19): the
tiny pipelines' real sizes (nodes/planning/latent_plans.py), constructed profiles and links.  Where
the links change, so does where it encodes and decodes."""

from __future__ import annotations

import time
from collections import deque

import pytest

from nodes.planning import latent_plans
from nodes.planning.estimates import LiveEstimates
from nodes.planning.hardware import StepProfile
from nodes.planning.plan import parse_plan
from nodes.planning.planner import HostFacts, Objective, Planner, QualityFloor
from nodes.planning.request import PlanRequest

N = 2
STEPS = 8


def _profile(step_ms: float, encode_ms: float, decode_ms: float) -> StepProfile:
    return StepProfile(0.0, step_ms, encode=(0.0, encode_ms), decode=(0.0, decode_ms))


@pytest.fixture(scope="module")
def folders(tiny_pipelines):
    return str(tiny_pipelines["large"]), str(tiny_pipelines["small"])


def _planner(folders, edge_components=None) -> Planner:
    large, small = folders
    fast, slow = {large: _profile(2, 1, 5), small: _profile(1, 1, 5)}, {large: _profile(100, 5, 50),
                                                                          small: _profile(40, 5, 50)}
    hosts = {"cloud": HostFacts("cloud", (large,), fast),
             "edge": HostFacts("edge", (small,), fast, latent_components=edge_components),
             "d1": HostFacts("device", (large, small), slow)}
    return Planner([], hosts, coordinator="edge", steps=STEPS, scheduler="ddim")


def _links(bytes_per_s: dict[tuple[str, str], float]) -> LiveEstimates:
    """Estimates of every path from two messages of different sizes each; a link's rate is the
    same both ways (as the estimates assume, and the emulated links are)."""
    live = LiveEstimates()
    hosts = ("cloud", "edge", "d1")
    for src in hosts:
        for dst in hosts:
            if src != dst:
                rate = bytes_per_s.get((src, dst)) or bytes_per_s.get((dst, src)) or 100e6
                live.paths[(src, dst)] = deque((size, 0.002 + size / rate) for size in (1_000, 40_000))
    return live


def _ask() -> PlanRequest:
    now = time.time()
    return PlanRequest(request_id="r1", device="d1", n=N, strategy="elastic", wall_sent=now,
                       wall_received=now, request_bytes=300, prompts=("a red square", "a cat"),
                       guidance_scale=5.0)


def _short(plan, folders) -> str:
    names = {folders[0]: "L", folders[1]: "S"}
    text = ",".join(f"{names[s.model]}:{s.start}-{s.end}@{s.host}" for s in plan.stages)
    return text + (";encode=each" if plan.encode_each else "")


def test_the_decoder_moves_to_the_device_when_its_downlink_is_slow(folders):
    only_large = Objective(plans=(f"{folders[0]}:0-{STEPS}",))
    fast = _planner(folders).decide(_ask(), only_large, _links({}))
    assert _short(fast.plan, folders) == "L:0-8@cloud"  # a fast link: the cloud's decoder is quicker
    # 20 kB/s to the device: 24 kB of images take 1.2 s, 2 kB of latents 0.1 s plus 0.1 s to decode
    slow = _planner(folders).decide(_ask(), only_large, _links({("cloud", "d1"): 20e3}))
    assert _short(slow.plan, folders) == "L:0-8@cloud,L:8-8@d1"
    assert slow.prediction.wall_latency_s < _planner(folders).predict(
        parse_plan(f"{folders[0]}:0-8@cloud"), None, _ask(), _links({("cloud", "d1"): 20e3})).wall_latency_s


def test_every_host_encodes_when_the_hand_off_link_is_slow(folders):
    split = Objective(plans=(f"{folders[0]}:0-4,{folders[1]}:4-{STEPS}",))
    fast = _planner(folders).decide(_ask(), split, _links({}))
    assert _short(fast.plan, folders) == "L:0-4@cloud,S:4-8@edge"
    # 10 kB/s from cloud to edge: the hand-off's 8 kB of embeddings cost 0.8 s, the edge's own
    # encoding 1 ms
    slow = _planner(folders).decide(_ask(), split, _links({("cloud", "edge"): 10e3}))
    assert _short(slow.plan, folders) == "L:0-4@cloud,S:4-8@edge;encode=each"
    # an edge without a text encoder cannot encode: the embeddings would have to cross the slow
    # link, and the device's own (slower) small UNet is then the quicker way
    bare = _planner(folders, edge_components=("vae",))
    bare = bare.decide(_ask(), split, _links({("cloud", "edge"): 10e3}))
    assert _short(bare.plan, folders) == "L:0-4@cloud,S:4-8@d1"


def test_the_device_encodes_when_the_coordinator_to_cloud_path_is_slower_than_its_own(folders):
    """The prompts' text goes to the first host in the dispatch; from the device instead the
    embeddings go.  Here the cloud's own encoder is slow (a profile of 400 ms) and the device's 5 ms."""
    large, small = folders
    planner = _planner(folders)
    slow_encoder = {large: _profile(2, 400, 5), small: _profile(1, 400, 5)}
    planner.hosts["cloud"] = HostFacts("cloud", (large,), slow_encoder)
    only_large = Objective(plans=(f"{large}:0-{STEPS}",))
    decision = planner.decide(_ask(), only_large, _links({}))
    assert _short(decision.plan, folders) == "L:0-0@d1,L:0-8@cloud"


def test_boundary_bytes_are_the_tensors_the_stages_exchange(folders):
    large, small = folders
    plan = parse_plan(f"{large}:0-0@d1,{large}:0-4@cloud,{small}:4-8@edge,{small}:8-8@d1", STEPS)
    sizes = [latent_plans.boundary_bytes(plan, i, N, True, 2) - latent_plans.MESSAGE_OVERHEAD_BYTES
             for i in range(4)]
    latents, embeddings, images = N * 4 * 8 * 8 * 4, 2 * N * 16 * 32 * 4, N * 3 * 32 * 32 * 4
    assert sizes == [embeddings, latents * 3 + embeddings, latents, images]


def test_a_floor_cannot_be_met_without_a_measured_quality(folders):
    with pytest.raises(ValueError, match="no latent pipeline's plan the hosts can run has a quality "
                                         "measured at guidance 5 that meets the floor"):
        _planner(folders).decide(_ask(), Objective(floor=QualityFloor(min_class_accuracy=0.9)), _links({}))


def test_a_floor_keeps_the_plans_whose_measured_quality_meets_it(folders):
    """With the latent quality table's rows, a floor chooses among the plans that meet it: here the
    large pipeline alone (0.99) and not the faster small one (0.89).  A row counts at the guidance
    scale it was measured at only: a request at another has no measured quality."""
    large, small = folders
    rows = {(f"{large}:0-{STEPS}", 5.0): {"class_accuracy": 0.99, "fid": 11.0},
            (f"{small}:0-{STEPS}", 5.0): {"class_accuracy": 0.89, "fid": 14.0}}
    planner = Planner([], _planner(folders).hosts, coordinator="edge", steps=STEPS, scheduler="ddim",
                      latent_rows=rows)
    fastest = planner.decide(_ask(), Objective(), _links({}))
    assert fastest.plan.key == f"{small}:0-{STEPS}"
    floor = Objective(floor=QualityFloor(min_class_accuracy=0.95))
    floored = planner.decide(_ask(), floor, _links({}))
    assert floored.plan.key == f"{large}:0-{STEPS}" and floored.prediction.class_accuracy == 0.99
    elsewhere = _ask().model_copy(update={"guidance_scale": 7.5})
    with pytest.raises(ValueError, match="a quality measured at guidance 7.5 that meets the floor"):
        planner.decide(elsewhere, floor, _links({}))
    assert planner.row_of(floored.plan, 7.5) is None and planner.row_of(floored.plan, 5.0)["fid"] == 11.0


def test_the_coordinator_s_start_up_probe_tries_every_guidance_the_table_has(folders):
    """A floor met at one measured guidance scale and not at another: the strategy can serve
    requests (at the first), so the start-up probe does not call it unservable; with no guidance
    that meets it, it says so."""
    from nodes.planning.coordination import CoordinatorCore
    from nodes.planning.strategies import build_strategies
    from nodes.planning.strategy_specs import StrategySpec

    large, small = folders
    rows = {(f"{large}:0-{STEPS}", 5.0): {"class_accuracy": 0.99, "fid": 11.0},
            (f"{large}:0-{STEPS}", 7.5): {"class_accuracy": 0.90, "fid": 19.0}}
    roles = {"edge": "edge", "cloud": "cloud", "d1": "device"}
    models = {"edge": (small,), "cloud": (large,), "d1": (large, small)}
    specs = {"routing": StrategySpec(kind="routing", min_class_accuracy=0.95)}

    def unservable(latent_rows):
        planner = Planner([], _planner(folders).hosts, coordinator="edge", steps=STEPS, scheduler="ddim",
                          latent_rows=latent_rows)
        core = CoordinatorCore("edge", roles, models, STEPS, build_strategies(specs), planner, 5.0)
        return core.unservable()

    assert unservable(rows) == []
    (why,) = unservable({k: v for k, v in rows.items() if k[1] == 7.5})
    assert why.startswith("strategy routing cannot serve") and "measured at guidance 7.5" in why
