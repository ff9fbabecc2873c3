"""Latent pipeline folders built once per test session (nodes/diffusion/latent_scale_model.py):
the tiny scale model's `large` and `small` pipelines, a second or so on a CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodes.diffusion.latent_scale_model import write_pipeline


@pytest.fixture(scope="session")
def tiny_pipelines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("latent-tiny")
    return {unet: write_pipeline(root / f"tiny-{unet}", "tiny", unet) for unet in ("large", "small")}
