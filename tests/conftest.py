"""Shared pytest set-up: root-only tests skip with a stated reason when not run as root; Ctrl-C
reaches the commands the tests interrupt, however the suite was started."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

NOT_ROOT_REASON = "needs root: creates network namespaces, interfaces, qdiscs and iptables rules"

# A suite started as a shell's background job (`make test &`, nohup, some CI runners) inherits
# SIGINT ignored, and every command it starts would too: the tests that press Ctrl-C on a run
# would then test nothing.  A handled signal is reset to its default in a child at exec, so
# handling it here gives the commands under test the disposition a terminal gives them.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


SLOW_TIMEOUT_S = 600  # a whole emulated run on 2 cores; every other test has pyproject's 180 s


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "slow" in item.keywords and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason=NOT_ROOT_REASON)
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_pipelines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Latent pipeline folders built once per test session (nodes/diffusion/latent_scale_model.py):
    the tiny scale model's `large` and `small` pipelines, a second or so on a CPU."""
    from nodes.diffusion.latent_scale_model import write_pipeline  # torch: only where it is used

    root = tmp_path_factory.mktemp("latent-tiny")
    return {unet: write_pipeline(root / f"tiny-{unet}", "tiny", unet) for unet in ("large", "small")}
