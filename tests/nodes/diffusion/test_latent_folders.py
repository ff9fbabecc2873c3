"""Pipeline folders looked at without loading them (nodes/diffusion/latent_folders.py): what is
refused, with one line naming it; when two pipelines share a latent space; the bytes that cross
each kind of boundary."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nodes.diffusion.latent_folders import check_compatible, check_folder, crossing_bytes, latent_space

ROOT = Path(__file__).resolve().parents[3]


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.safetensors"))
    for weights in source.rglob("*.safetensors"):  # configs are what is checked: empty weights do
        (target / weights.relative_to(source)).touch()
    return target


def _edit(folder: Path, config: str, **changes: Any) -> None:
    path = folder / config
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _refused(folder: Path | str, match: str, compare_with: Path | None = None) -> str:
    with pytest.raises(ValueError, match=match) as caught:
        check_compatible([compare_with, folder]) if compare_with else latent_space(folder)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_the_tiny_pipeline_is_a_folder_with_its_latent_space(tiny_pipelines):
    space = latent_space(tiny_pipelines["large"])
    assert space.latents_shape(2) == (2, 4, 8, 8) and space.vae_factor == 4
    assert (space.image_channels, space.image_height, space.image_width) == (3, 32, 32)
    assert (space.text_tokens, space.text_dim, space.scaling_factor) == (16, 32, 0.18215)
    assert dict(space.schedule)["beta_schedule"] == "scaled_linear"


def test_what_is_not_a_pipeline_folder_is_refused_in_one_line(tiny_pipelines, tmp_path):
    _refused(tmp_path / "nowhere", "nowhere: not a directory")
    _refused(tmp_path, "no model_index.json")
    broken = _copy(tiny_pipelines["large"], tmp_path / "broken")
    shutil.rmtree(broken / "vae")
    _refused(broken, r"component folder vae/ is missing")
    _refused(broken, r"component folder vae/ is missing", compare_with=tiny_pipelines["large"])
    assert check_folder(broken, ["unet", "scheduler"]) == broken.resolve()  # a denoising host's check
    garbled = _copy(tiny_pipelines["large"], tmp_path / "garbled")
    (garbled / "unet" / "config.json").write_text("{not json")
    _refused(garbled, r"unet/config.json is not JSON")
    weightless = _copy(tiny_pipelines["large"], tmp_path / "weightless")
    (weightless / "text_encoder" / "model.safetensors").unlink()
    _refused(weightless, r"no weights \(\*.safetensors\) in text_encoder/")
    other = _copy(tiny_pipelines["large"], tmp_path / "other")
    _edit(other, "model_index.json", unet=["diffusers", "UNet2DModel"])
    _refused(other, "its unet is a UNet2DModel, not a UNet2DConditionModel")


def test_a_folder_whose_own_components_disagree_is_refused(tiny_pipelines, tmp_path):
    folder = _copy(tiny_pipelines["large"], tmp_path / "p")
    _edit(folder, "unet/config.json", in_channels=8)
    _refused(folder, "unet in_channels 8 != vae latent_channels 4")
    folder = _copy(tiny_pipelines["large"], tmp_path / "q")
    _edit(folder, "unet/config.json", cross_attention_dim=64)
    _refused(folder, "unet cross_attention_dim 64 != text_encoder hidden_size 32")
    folder = _copy(tiny_pipelines["large"], tmp_path / "r")
    _edit(folder, "vae/config.json", sample_size=64)
    _refused(folder, r"unet sample_size x vae factor \[32, 32\] != vae sample_size \[64, 64\]")


def test_pipelines_of_one_scale_model_share_a_latent_space(tiny_pipelines):
    assert check_compatible(list(tiny_pipelines.values())) == latent_space(tiny_pipelines["small"])


@pytest.mark.parametrize(("edits", "match"), [
    ({"unet/config.json": {"in_channels": 8, "out_channels": 8}, "vae/config.json": {"latent_channels": 8}},
     "do not share a latent space: latent_channels 4 vs 8"),
    ({"vae/config.json": {"scaling_factor": 0.13025}}, "scaling_factor 0.18215 vs 0.13025"),
    ({"unet/config.json": {"cross_attention_dim": 64}, "text_encoder/config.json": {"hidden_size": 64}},
     "text_dim 32 vs 64"),
    ({"scheduler/scheduler_config.json": {"beta_end": 0.02}},
     "different noise schedules: scheduler beta_end 0.012 vs 0.02"),
    ({"scheduler/scheduler_config.json": {"prediction_type": "v_prediction"}},
     "scheduler prediction_type 'epsilon' vs 'v_prediction'"),
])
def test_pipelines_that_do_not_share_a_latent_space_or_schedule_are_refused(tiny_pipelines, tmp_path, edits,
                                                                            match):
    folder = _copy(tiny_pipelines["small"], tmp_path / "other")
    for config, changes in edits.items():
        _edit(folder, config, **changes)
    message = _refused(folder, match, compare_with=tiny_pipelines["large"])
    assert str(tiny_pipelines["large"]) in message and str(folder) in message


def test_a_schedule_field_one_config_leaves_to_its_default_still_counts(tiny_pipelines, tmp_path):
    folder = _copy(tiny_pipelines["small"], tmp_path / "other")
    config = json.loads((folder / "scheduler/scheduler_config.json").read_text())
    del config["steps_offset"]  # diffusers' default: 0, where SD 1.5 has 1
    (folder / "scheduler/scheduler_config.json").write_text(json.dumps(config))
    _refused(folder, "scheduler steps_offset 1 vs 0", compare_with=tiny_pipelines["large"])


def test_crossing_bytes_of_the_tiny_pipeline(tiny_pipelines):
    sizes = crossing_bytes(tiny_pipelines["large"], n=2, dtype="float32", guidance=True, solver_history=2)
    latents = 2 * 4 * 8 * 8 * 4
    embeddings = 2 * 2 * 16 * 32 * 4
    assert sizes == {"prompt": 2 * 16 * 8, "embeddings": embeddings, "latents": latents,
                     "handoff": 3 * latents + embeddings, "pixels": 2 * 3 * 32 * 32 * 4,
                     "pixels_uint8": 2 * 3 * 32 * 32}


def test_checking_a_folder_needs_no_torch(tiny_pipelines):
    code = ("import sys; from nodes.diffusion import latent_folders, latent_scale_model; "
            f"latent_folders.check_compatible([{str(tiny_pipelines['large'])!r}]); "
            "assert not {'torch', 'diffusers', 'transformers'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
