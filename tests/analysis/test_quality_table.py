"""The planner's quality table: the grid of plans, measuring it (real generation, tiny n), the CSV
on disk, the lookup rule for plans off the grid, and the shipped tables."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import analysis.quality_table as qt
from nodes.planning.plan import parse_plan

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def tiles(plan: str, steps: int) -> bool:
    parsed = parse_plan(plan, steps)  # raises where the stages do not tile [0, steps)
    return parsed.stages[0].start == 0 and parsed.total_steps == steps


@pytest.mark.parametrize("steps", [10, 30])
def test_the_grid_holds_each_model_alone_the_pairs_every_tenth_and_a_coarse_chain(steps):
    plans = qt.grid(steps)
    assert len(plans) == len(set(plans)) == 3 + 3 * 9 + 5
    assert all(tiles(p, steps) for p in plans)
    by_models: dict[str, list[str]] = {}
    for p in plans:
        by_models.setdefault(",".join(parse_plan(p).models()), []).append(p)
    assert {k: len(v) for k, v in by_models.items()} == {
        "large": 1, "medium": 1, "small": 1, "large,medium": 9, "large,small": 9, "medium,small": 9,
        "large,medium,small": 5}
    tenth = steps // 10
    cuts = [parse_plan(p).stages[1].start for p in by_models["large,small"]]
    assert cuts == [tenth * k for k in range(1, 10)]
    chains = {tuple(s.start for s in parse_plan(p).stages[1:]) for p in by_models["large,medium,small"]}
    assert chains == {(2 * tenth, 5 * tenth), (3 * tenth, 6 * tenth), (4 * tenth, 7 * tenth),
                      (2 * tenth, 8 * tenth), (5 * tenth, 8 * tenth)}


def test_the_grid_at_small_step_counts_lists_a_boundary_once_and_only_inside():
    assert qt.grid(1) == ["large:0-1", "medium:0-1", "small:0-1"]
    plans = qt.grid(3)
    assert len(plans) == len(set(plans)) == 10  # 3 alone, boundaries {1, 2} per pair, one chain (1, 2)
    assert all(tiles(p, 3) for p in plans)
    with pytest.raises(ValueError, match="positive"):
        qt.grid(0)


@pytest.mark.parametrize("scenario", ["smoke.toml", "default.toml"])
def test_the_grid_holds_every_plan_of_the_shipped_scenarios(scenario):
    plans = scenario_plans(scenario)
    assert plans <= set(qt.grid(scenario_steps(scenario)[1]))


def scenario_steps(scenario: str) -> tuple[str, int]:
    from emulation.scenario import load_scenario

    loaded = load_scenario(SCENARIOS / scenario)
    return loaded.generation.scheduler, loaded.generation.steps


def scenario_plans(scenario: str) -> set[str]:
    """The plans (without hosts) the scenario's strategies give a device's request."""
    from emulation.scenario import load_scenario
    from nodes.planning.request import PlanRequest
    from nodes.planning.strategies import Cluster, build_strategies

    loaded = load_scenario(SCENARIOS / scenario)
    roles = {"cloud": "cloud", "edge": "edge", "d1": "device"}
    held = {host: tuple(loaded.nodes.role(role).models) for host, role in roles.items()}
    cluster = Cluster("edge", roles, held, loaded.generation.steps)
    request = PlanRequest(request_id="r", device="d1", n=1, strategy="any")
    fixed = {n: spec for n, spec in loaded.strategies.items() if spec.kind not in ("elastic", "routing")}
    return {s.plan_for(request, cluster).plan.key for s in build_strategies(fixed).values()}


# --- measuring and the file on disk -----------------------------------------------------------------
def test_measure_table_gives_one_row_per_plan_with_the_columns(tmp_path):
    plans = ["small:0-2", "medium:0-1,small:1-2"]
    table = qt.measure_table("ddim", 2, n=12, cache_dir=tmp_path, plans=plans)
    assert list(table.columns) == list(qt.COLUMNS)
    assert list(table["plan"]) == plans
    assert list(table["models"]) == ["small", "medium,small"] and list(table["boundaries"]) == ["", "1"]
    assert set(table["scheduler"]) == {"ddim"} and set(table["steps"]) == {2} and set(table["n"]) == {12}
    assert (table["fid"] > 0).all() and table["class_accuracy"].between(0, 1).all()
    assert table["psnr_vs_large_db"].notna().all()
    # the second judge's figures beside the first's
    assert (table["pca_fd"] > 0).all()
    assert table[["svm_class_accuracy", "judge_agreement"]].stack().between(0, 1).all()
    assert all(Path(f).parent == tmp_path for f in table["cache_file"])  # one JSON per plan, cached
    path = qt.write_table(table, tmp_path / "tables" / "ddim-2.csv")
    again = qt.load_table("ddim", 2, path)
    pd.testing.assert_frame_equal(again, table, check_exact=False, rtol=1e-5)


def fake_table(steps: int = 10) -> pd.DataFrame:
    """The grid with made-up figures: fid = 1 + (steps on small) + 0.5 (steps on medium) / steps,
    the others linear in it, so that interpolation is exact and each plan's figures are known."""
    rows = []
    for plan in qt.grid(steps):
        stages = parse_plan(plan).stages
        share = {m: sum(s.steps for s in stages if s.model == m) / steps for m in qt.SINGLE_MODELS}
        fid = 1 + share["small"] + 0.5 * share["medium"]
        rows.append({"plan": plan, "models": ",".join(s.model for s in stages),
                     "boundaries": ",".join(str(s.start) for s in stages[1:]), "scheduler": "dpm",
                     "steps": steps, "n": 500, "fid": fid, "kid": fid / 10,
                     "class_accuracy": 1 - fid / 10,
                     "psnr_vs_large_db": None if share["large"] == 1 else 40 - 10 * fid,
                     "svm_class_accuracy": 1 - fid / 8, "pca_fd": 2 * fid, "judge_agreement": 1.1 - fid / 10,
                     "cache_file": "x.json"})
    return pd.DataFrame(rows, columns=qt.COLUMNS)


def test_write_and_load_keep_large_only_without_psnr(tmp_path):
    path = qt.write_table(fake_table(), tmp_path / "dpm-10.csv")
    table = qt.load_table("dpm", 10, path)
    assert len(table) == 35 and table["n"].tolist() == [500] * 35
    assert pd.isna(table.set_index("plan").loc["large:0-10", "psnr_vs_large_db"])
    assert list(tmp_path.iterdir()) == [path]  # no temporary left beside it


# --- lookup ---------------------------------------------------------------------------------------
def test_lookup_of_a_grid_plan_is_its_row_and_hosts_do_not_matter():
    table = fake_table()
    got = qt.lookup(table, "large:0-4@cloud,medium:4-7@edge,small:7-10@d1")
    assert got["plan"] == "large:0-4,medium:4-7,small:7-10" and got["estimated"] is False
    assert got["from"] == [got["plan"]] and got["n"] == 500
    assert got["fid"] == pytest.approx(1 + 0.3 + 0.5 * 0.3)
    assert qt.lookup(table, "large:0-10")["psnr_vs_large_db"] is None
    # one model on both sides of a split computes the unsplit plan's images
    assert qt.lookup(table, "small:0-3,small:3-10")["from"] == ["small:0-10"]


def test_lookup_off_the_grid_interpolates_between_the_two_nearest_boundaries():
    table = fake_table(30)
    got = qt.lookup(table, "large:0-14,small:14-30")
    assert got["estimated"] is True and got["from"] == ["large:0-12,small:12-30", "large:0-15,small:15-30"]
    lo, hi = (qt.lookup(table, p) for p in got["from"])
    for figure in qt.FIGURES:
        assert min(lo[figure], hi[figure]) <= got[figure] <= max(lo[figure], hi[figure])
    assert got["fid"] == pytest.approx(1 + 16 / 30)  # the made-up figures are linear in the boundary


def test_lookup_beyond_the_outer_boundaries_interpolates_towards_the_single_model_plans():
    table = fake_table(30)
    low = qt.lookup(table, "large:0-1,medium:1-30")  # between medium alone (b = 0) and b = 3
    assert low["from"] == ["medium:0-30", "large:0-3,medium:3-30"]
    assert low["fid"] == pytest.approx(1 + 0.5 * 29 / 30)
    high = qt.lookup(table, "large:0-29,medium:29-30")  # between b = 27 and large alone (no PSNR)
    assert high["from"] == ["large:0-27,medium:27-30", "large:0-30"] and high["psnr_vs_large_db"] is None


def test_lookup_of_an_off_grid_chain_takes_the_nearest_grid_chain():
    table = fake_table(30)
    got = qt.lookup(table, "large:0-13,medium:13-22,small:22-30")
    assert got["estimated"] is True and got["from"] == ["large:0-12,medium:12-21,small:21-30"]
    assert got["fid"] == qt.lookup(table, got["from"][0])["fid"]


def test_lookup_refuses_a_model_sequence_the_table_does_not_hold():
    table = fake_table()
    for plan in ("small:0-5,large:5-10", "large:0-2,small:2-5,medium:5-10", "my-unet:0-10"):
        with pytest.raises(ValueError, match=f"plan '{plan}'.*no plan of the models"):
            qt.lookup(table, plan)
    with pytest.raises(ValueError, match="small:0-30.*10 steps"):
        qt.lookup(table, "small:0-30")


# --- a missing or malformed table ----------------------------------------------------------------
def test_a_missing_table_says_how_to_make_it():
    with pytest.raises(ValueError) as err:
        qt.load_table("dpm", 7)
    assert str(err.value) == ("no quality table for dpm/7 steps: nodes/pretrained/quality-table/dpm-7.csv "
                              "(make it with: edgestage quality-table --scheduler dpm --steps 7)")


@pytest.mark.parametrize(("edit", "message"), [
    (lambda text: "plan,fid\n" + text, r"dpm-10\.csv:1: not a quality table"),
    (lambda text: text.replace(",0.9,", ",zero,", 1), r"dpm-10\.csv:\d+: class_accuracy: expected a number"),
    (lambda text: text.replace("medium:0-10,", "medium:0-9,", 1), r"dpm-10\.csv:3: plan: plan stages"),
    (lambda text: text.replace(",500,", ",5x,", 1), r"dpm-10\.csv:2: n: expected a number of images"),
    (lambda text: text + "small:0-10,small\n", r"dpm-10\.csv:37: expected 14 fields, got 2"),
    (lambda text: text.replace(",dpm,", ",ddim,", 1), r"dpm-10\.csv:2: a row for ddim/10 steps"),
    (lambda text: text.splitlines()[0] + "\n", r"dpm-10\.csv:2: quality table has no rows"),
])
def test_a_malformed_table_names_the_file_and_line(tmp_path, edit, message):
    table = fake_table()
    table["class_accuracy"] = 0.9
    path = qt.write_table(table, tmp_path / "dpm-10.csv")
    path.write_text(edit(path.read_text()))
    with pytest.raises(ValueError, match=message):
        qt.load_table("dpm", 10, path)


@pytest.mark.parametrize("figure", ["class_accuracy", "svm_class_accuracy", "judge_agreement"])
def test_a_share_outside_0_1_is_refused(tmp_path, figure):
    table = fake_table()
    table.loc[3, figure] = 1.5
    path = qt.write_table(table, tmp_path / "dpm-10.csv")
    with pytest.raises(ValueError, match=rf"dpm-10\.csv:5: {figure}: must lie in \[0, 1\], got 1.5"):
        qt.load_table("dpm", 10, path)


# --- the shipped tables -----------------------------------------------------------------------------
@pytest.mark.parametrize("scenario", ["smoke.toml", "default.toml"])
def test_the_shipped_table_covers_the_grid_and_the_scenarios_plans_on_500_images(scenario):
    from analysis.plan_quality import SHIPPED_DIR, PlanQualityKey, read_cached

    scheduler, steps = scenario_steps(scenario)
    if not qt.table_path(scheduler, steps).exists():
        pytest.skip(f"no shipped table for {scheduler}/{steps} (nodes/pretrained/quality-table/README.md)")
    table = qt.load_table(scheduler, steps)
    assert list(table["plan"]) == qt.grid(steps)
    assert (table["n"] >= 500).all()
    assert scenario_plans(scenario) <= set(table["plan"])
    # every row is the shipped per-plan figure of today's models (their checksums are in its key)
    for row in table.to_dict(orient="records"):
        cached = read_cached(PlanQualityKey.of(row["plan"], scheduler, steps, 0, row["n"]), SHIPPED_DIR)
        assert cached is not None, row["plan"]
        assert Path(row["cache_file"]).name == Path(cached["cache_file"]).name
        for figure in qt.FIGURES:
            if cached[figure] is None:  # large-only's PSNR against itself
                assert pd.isna(row[figure]), (row["plan"], figure)
            else:
                assert row[figure] == pytest.approx(cached[figure], rel=1e-5), (row["plan"], figure)


# --- the command ----------------------------------------------------------------------------------
def test_the_command_measures_writes_and_prints_the_table(tmp_path, capsys):
    from emulation.cli import main

    out = tmp_path / "ddim-1.csv"
    args = ["quality-table", "--scheduler", "ddim", "--steps", "1", "--n", "100", "--out", str(out),
            "--cache-dir", str(tmp_path / "cache")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "large:0-1" in printed and f"3 plans, ddim 1 steps, 100 images each -> {out}" in printed
    table = qt.load_table("ddim", 1, out)
    assert list(table["plan"]) == qt.grid(1) and set(table["n"]) == {100}
    assert len(list((tmp_path / "cache").glob("*.json"))) == 3


@pytest.mark.parametrize(("args", "message"), [
    (["--scheduler", "euler", "--steps", "30"], "invalid choice: 'euler'"),
    (["--scheduler", "dpm", "--steps", "0"], "--steps: must be positive"),
    (["--scheduler", "dpm", "--steps", "1001"], "--steps: at most 1000"),
    (["--scheduler", "dpm", "--steps", "30", "--n", "99"], "--n: at least 100 images per plan"),
    (["--scheduler", "dpm", "--steps", "30", "--n", "true"], "--n: expected an integer"),
    (["--scheduler", "dpm", "--steps", "30", "--out", "/proc/t.csv"], "cannot write quality table /proc/"),
    (["--scheduler", "dpm", "--steps", "30", "--out", "d/"], "give a file name"),
])
def test_the_command_refuses_bad_input_in_one_line_before_any_work(args, message, tmp_path, capsys,
                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)

    def no_measuring(*_args, **_kwargs):
        raise AssertionError("bad input must be refused before any measuring")

    monkeypatch.setattr(qt, "measure_table", no_measuring)
    assert exit_code(["quality-table", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert list(tmp_path.iterdir()) == []


def exit_code(argv: list[str]) -> int:
    """`edgestage ARGV`'s exit code: argparse's refusals end in SystemExit, the others return."""
    from emulation.cli import main

    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code)
