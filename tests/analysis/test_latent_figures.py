"""A latent plan's quality is the latent quality table's row at the guidance scale its requests
asked for (nodes/planning/quality_table.py `read_latent_table`, analysis/summary.py): a request at a
guidance the table was not measured at has no figures, and says so."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis.summary import _plans_quality
from nodes.planning.quality_table import latent_table_path, read_latent_table

PLAN = "latent-large:0-20"


def test_the_shipped_latent_table_is_keyed_by_plan_and_guidance():
    rows = read_latent_table("ddim", 20)
    assert len(rows) == 22 and {g for _, g in rows} == {4.0, 7.5}
    # the same plan, another guidance: other figures (guided harder, these digits are further from the data)
    assert rows[(PLAN, 4.0)]["class_accuracy"] > 0.99 and rows[(PLAN, 7.5)]["fid"] > rows[(PLAN, 4.0)]["fid"]


def test_a_plan_twice_at_one_guidance_is_refused(tmp_path):
    text = latent_table_path("ddim", 20).read_text().splitlines()
    path = tmp_path / "latent-ddim-20.csv"
    path.write_text("\n".join([*text, text[1]]) + "\n")
    with pytest.raises(ValueError, match=f"latent-ddim-20.csv:{len(text) + 1}: plan {PLAN} at guidance 4 is "
                                         "in the table twice"):
        read_latent_table("ddim", 20, path)


def _ok(*scales: float | None) -> pd.DataFrame:
    return pd.DataFrame({"plan_key": [PLAN] * len(scales), "scheduler": ["ddim"] * len(scales),
                         "steps": [20] * len(scales), "guidance_scale": list(scales)})


def test_a_run_s_latent_figures_are_the_row_at_its_requests_guidance():
    figures = _plans_quality(_ok(4.0, 4.0), None, None, False)[(PLAN, "ddim", 20)]
    assert figures["class_accuracy"] > 0.99 and figures["n_images"] == 180
    assert _plans_quality(_ok(6.0), None, None, False)[(PLAN, "ddim", 20)] == {
        "error": "no row in the latent quality table of ddim/20 steps at guidance 6 (not measured)"}
    several = _plans_quality(_ok(4.0, 6.0), None, None, False)[(PLAN, "ddim", 20)]
    assert several["error"] == "its requests asked for several guidance scales (4, 6)"
    older = _plans_quality(_ok(4.0).drop(columns="guidance_scale"), None, None, False)[(PLAN, "ddim", 20)]
    assert "do not say the guidance scale" in older["error"]


def test_a_latent_cascade_s_row_is_the_one_at_its_guidance():
    from nodes.planning.cascade_table import cascade_figures

    assert cascade_figures("latent-small", "latent-large", 0.995, "ddim", 20, 4.0)["escalation_rate"] > 0.1
    with pytest.raises(ValueError, match="at threshold 0.995 and guidance 6 \\(it has: none\\)"):
        cascade_figures("latent-small", "latent-large", 0.995, "ddim", 20, 6.0)


def test_a_run_s_own_latent_images_are_judged_against_their_prompted_digits(tmp_path):
    """The summary's run-sample figures take a latent pipeline's delivered images (a cascade's
    escalated ones in place) as grey images against the digit each prompt names; a request whose
    prompts name no digit is left out."""
    import torch

    from analysis.summary import _run_sample_quality
    from nodes.diffusion.samples import Samples, save_samples
    from nodes.planning.plan import parse_plan

    plan = parse_plan("latent-small:0-20@d1")
    torch.manual_seed(0)
    for rid, prompts in (("a", ("a digit 1", "a digit 2", "a digit 3")), ("b", ("a cat", "a dog", "a cow"))):
        save_samples(tmp_path / f"{rid}.npz", Samples(torch.rand(3, 3, 16, 16) * 2 - 1, None, plan, 0, "ddim",
                                                      20, prompts=prompts, guidance_scale=4.0))
    save_samples(tmp_path / "a.esc.npz", Samples(torch.rand(1, 3, 16, 16) * 2 - 1, None, plan, 1, "ddim", 20,
                                                 prompts=("a digit 2",), guidance_scale=4.0))
    ok = pd.DataFrame({"escalated_indices": ["1", None]}, index=["a", "b"])
    figures = _run_sample_quality(ok, tmp_path)
    assert figures["run_sample_images"] == 3 and 0 <= figures["run_sample_class_accuracy"] <= 1
