"""Per-plan quality from images of its own: real generation (small model, few steps, small n),
cached on disk by what determines the images."""

from __future__ import annotations

import json

import pytest

import analysis.plan_quality as pq
from nodes.diffusion.model_zoo import default_models
from nodes.planning.quality_table import FIGURES as TABLE_FIGURES

PLAN = "small:0-2@d1,small:2-3@edge"  # hosts do not change what is computed
BARE = "small:0-2,small:2-3"


def key(plan: str = BARE, scheduler: str = "ddim", steps: int = 3, seed: int = 0, n: int = 12) -> str:
    return pq.PlanQualityKey.of(plan, scheduler, steps, seed, n).digest()


def test_key_changes_with_what_changes_the_images_and_not_with_hosts():
    base = key()
    assert key(PLAN) == base
    changed = [key(scheduler="dpm"), key(plan="small:0-5", steps=5), key(seed=1), key(n=13),
               key(plan="small:0-3"), key(plan="medium:0-2,small:2-3")]
    assert base not in changed
    assert len(set(changed)) == len(changed)


def test_key_names_the_models_checksums():
    models = dict(pq.PlanQualityKey.of("medium:0-2,small:2-3", "ddim", 3, 0, 12).models)
    shipped = {m["name"]: m["sha256"] for m in default_models()}
    # the plan's models, the PSNR reference and the classifier the figures depend on
    assert models == {name: shipped[name] for name in ("classifier", "large", "medium", "small")}


def test_bad_plans_are_refused():
    with pytest.raises(ValueError, match="does not tile"):
        pq.PlanQualityKey.of("small:0-3", "ddim", 5, 0, 12)
    with pytest.raises(ValueError, match="unknown scheduler"):
        pq.PlanQualityKey.of("small:0-3", "euler", 3, 0, 12)
    with pytest.raises(ValueError, match="at least 2"):
        pq.PlanQualityKey.of("small:0-3", "ddim", 3, 0, 1)


def test_figures_come_from_n_images_and_a_cache_hit_does_not_generate(tmp_path, monkeypatch):
    first = pq.plan_quality(PLAN, "ddim", 3, n=12, cache_dir=tmp_path, progress=False)
    assert first["plan"] == BARE and first["n_images"] == 12 and first["cached"] is False
    assert first["fid"] > 0 and first["kid_std"] >= 0 and 0 <= first["class_accuracy"] <= 1
    assert first["pca_fd"] > 0
    assert 0 <= first["svm_class_accuracy"] <= 1 and 0 <= first["judge_agreement"] <= 1
    assert 0 < first["psnr_vs_large_db"] < 60  # against large-only, same seed, labels and steps
    stored = json.loads((tmp_path / f"{key()}.json").read_text())
    assert first["cache_file"] == str(tmp_path / f"{key()}.json") and stored["key"]["plan"] == BARE

    def no_generation(*_args, **_kwargs):
        raise AssertionError("a cached plan must not be generated again")

    monkeypatch.setattr(pq, "generate", no_generation)
    again = pq.plan_quality(BARE, "ddim", 3, n=12, cache_dir=tmp_path, progress=False)
    assert again["cached"] is True
    assert {k: again[k] for k in pq.FIGURES} == {k: first[k] for k in pq.FIGURES}


def test_module_default_n_is_honoured_and_a_bad_cache_file_is_measured_again(tmp_path, monkeypatch):
    monkeypatch.setattr(pq, "PLAN_QUALITY_IMAGES", 10)
    path = tmp_path / f"{key(plan='small:0-3', n=10)}.json"
    path.write_text('{"fid": 0.0, "trunc')  # an interrupted writer
    figures = pq.plan_quality("small:0-3", "ddim", 3, cache_dir=tmp_path, progress=False)
    assert figures["n_images"] == 10 and figures["cached"] is False and figures["fid"] > 0
    assert json.loads(path.read_text())["n_images"] == 10


@pytest.mark.parametrize("made_by", ["before the second judge", "another second judge"])
def test_a_cached_file_without_the_second_judge_s_figures_is_measured_again(tmp_path, made_by):
    first = pq.plan_quality("small:0-3", "ddim", 3, n=10, cache_dir=tmp_path, progress=False)
    path = pq.Path(first["cache_file"])
    stored = json.loads(path.read_text())
    if made_by == "before the second judge":  # what a file of the first judge alone held
        for figure in ("svm_class_accuracy", "pca_fd", "judge_agreement", "kernel_judge"):
            del stored[figure]
    else:
        stored["kernel_judge"] = {**stored["kernel_judge"], "pca_components": 7}
    path.write_text(json.dumps(stored))
    assert pq.read_cached(pq.PlanQualityKey.of("small:0-3", "ddim", 3, 0, 10), tmp_path) is None
    again = pq.plan_quality("small:0-3", "ddim", 3, n=10, cache_dir=tmp_path, progress=False)
    assert again["cached"] is False and again["cache_file"] == first["cache_file"]  # rewritten in place
    assert {k: again[k] for k in pq.FIGURES} == {k: first[k] for k in pq.FIGURES}
    assert json.loads(path.read_text())["kernel_judge"] == pq.judge_settings()


def test_several_plans_share_one_call_and_large_only_has_no_psnr(tmp_path, monkeypatch):
    generated = []

    def counting(plan, *args, **kwargs):  # the real generation, counted
        generated.append(str(plan))
        return real_generate(plan, *args, **kwargs)

    real_generate = pq.generate
    monkeypatch.setattr(pq, "generate", counting)
    figures = pq.plans_quality(["large:0-3@cloud", "small:0-3@d1", "small:0-3@d2"], "ddim", 3, n=10,
                               cache_dir=tmp_path, progress=False)
    assert list(figures) == ["large:0-3", "small:0-3"]  # one entry per plan without hosts
    assert figures["large:0-3"]["psnr_vs_large_db"] is None  # the reference itself
    assert figures["small:0-3"]["psnr_vs_large_db"] is not None
    assert len(list(tmp_path.glob("*.json"))) == 2
    assert generated == ["large:0-3", "small:0-3"]  # large-only is the PSNR reference, made once


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGESTAGE_CACHE", str(tmp_path))
    assert pq.default_cache_dir() == tmp_path
    monkeypatch.delenv("EDGESTAGE_CACHE")
    assert pq.default_cache_dir().parts[-3:] == (".cache", "edgestage", "plan-quality")


def test_figures_agree_with_edgestage_quality_plans(tmp_path):
    from analysis.plan_quality import compare_plans

    ours = pq.plan_quality("medium:0-2,small:2-3", "ddim", 3, n=10, cache_dir=tmp_path, progress=False)
    theirs = compare_plans(["medium:0-2,small:2-3"], n=10, seed=pq.PLAN_QUALITY_SEED, scheduler="ddim",
                           steps=3).iloc[0]
    for figure in TABLE_FIGURES:
        assert ours[figure] == pytest.approx(theirs[figure], rel=1e-6), figure


SHIPPED_SCENARIOS = {"smoke.toml": ("dpm", 10), "default.toml": ("dpm", 30)}


@pytest.mark.parametrize("scenario", SHIPPED_SCENARIOS)
def test_the_shipped_scenarios_plans_are_judged_from_the_shipped_figures(scenario, tmp_path, monkeypatch):
    """The figures beside the models match the shipped models' checksums and the scenarios' plans,
    so `make demo` and the smoke tests judge quality on 500 images without generating any."""
    from emulation.scenario import load_scenario
    from nodes.planning.request import PlanRequest
    from nodes.planning.strategies import Cluster, build_strategies

    loaded = load_scenario(pq.Path(__file__).resolve().parents[2] / "scenarios" / scenario)
    steps = loaded.generation.steps
    assert (loaded.generation.scheduler, steps) == SHIPPED_SCENARIOS[scenario]
    roles = {"cloud": "cloud", "edge": "edge", "d1": "device"}
    held = {host: tuple(loaded.nodes.role(role).models) for host, role in roles.items()}
    cluster = Cluster("edge", roles, held, steps)
    request = PlanRequest(request_id="r", device="d1", n=1, strategy="any")
    # elastic and routing choose among the quality table's grid, whose figures are shipped too
    # (tests/analysis/test_quality_table.py)
    fixed = {n: spec for n, spec in loaded.strategies.items() if spec.kind not in ("elastic", "routing")}
    plans = {s.plan_for(request, cluster).plan.key
             for s in build_strategies(fixed).values()}

    def no_generation(*_args, **_kwargs):
        raise AssertionError("a plan of a shipped scenario must come from the shipped figures")

    monkeypatch.setattr(pq, "generate", no_generation)
    monkeypatch.setenv("EDGESTAGE_CACHE", str(tmp_path))  # the user's cache is empty
    figures = pq.plans_quality(sorted(plans), loaded.generation.scheduler, steps, progress=False)
    assert set(figures) == plans
    for f in figures.values():
        assert f["n_images"] == pq.PLAN_QUALITY_IMAGES and f["cached"] is True
        assert pq.Path(f["cache_file"]).parent == pq.SHIPPED_DIR
