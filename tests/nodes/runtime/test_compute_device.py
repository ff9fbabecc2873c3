"""Where a node's torch computes (nodes/runtime/compute_device.py): the settings, a refusal where CUDA
is asked for and there is none, and a state's move (a no-op where it is already there).  Run on a
CPU machine; a GPU machine takes the other branches (not run here: no GPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from emulation.scenario import load_scenario
from nodes.diffusion.state import StateBundle
from nodes.runtime.compute_device import moved, torch_device

NO_CUDA = not torch.cuda.is_available()


@pytest.mark.skipif(not NO_CUDA, reason="this machine has a CUDA device")
def test_cpu_and_auto_compute_on_the_cpu_and_cuda_is_refused_without_one():
    assert torch_device("cpu") == torch_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="torch sees no CUDA device on this host"):
        torch_device("cuda")
    with pytest.raises(ValueError, match="expected auto, cpu or cuda"):
        torch_device("gpu")


def test_a_state_already_there_is_not_copied():
    state = StateBundle(meta={"scheduler": "ddim"}, tensors={"sample": torch.zeros(1, 1, 4, 4)})
    assert moved(state, torch.device("cpu")) is state


@pytest.mark.skipif(not NO_CUDA, reason="this machine has a CUDA device")
def test_a_scenario_asking_for_cuda_on_a_machine_without_one_is_refused(tmp_path: Path):
    path = tmp_path / "cuda.toml"
    path.write_text('[topology]\nkind = "two_tier"\nnum_devices = 1\n[nodes.edge]\nmodels = ["medium"]\n'
                    'device = "cuda"\n')
    with pytest.raises(ValueError, match="nodes.edge.device: 'cuda', and torch sees no CUDA device"):
        load_scenario(path)
    path.write_text(path.read_text().replace('"cuda"', '"auto"'))
    assert load_scenario(path).nodes.edge.device == "auto"
