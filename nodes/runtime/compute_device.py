"""Where a node's torch computes: a role's `device` (nodes/runtime/node_config.py ComputeConfig).

"cpu" (the default), "cuda" (refused in one line where torch sees no CUDA device), or "auto" (CUDA
where there is one, else the CPU).  In an emulated run every node of a role that asks for CUDA
shares the machine's GPU.  The state a stage hands on is moved to CPU memory before it goes on the
wire, and a stage's input onto the device, so hosts on either compute the same hand-offs (exact on
the CPU; not measured on a GPU here: no GPU was lent to this project's machine).
"""

from __future__ import annotations

import torch

from nodes.diffusion.state import StateBundle


def torch_device(setting: str) -> torch.device:
    """The torch device of a `device` setting; ValueError naming it where CUDA is asked for and
    torch sees none."""
    available = torch.cuda.is_available()
    if setting == "cuda" and not available:
        raise ValueError("compute device 'cuda': torch sees no CUDA device on this host "
                         "(use 'cpu' or 'auto')")
    if setting not in ("auto", "cpu", "cuda"):
        raise ValueError(f"compute device {setting!r}: expected auto, cpu or cuda")
    return torch.device("cuda" if setting == "cuda" or (setting == "auto" and available) else "cpu")


def moved(state: StateBundle, device: torch.device) -> StateBundle:
    """The state with its tensors on `device` (the same tensors where they are there already)."""
    if all(t.device == device for t in state.tensors.values()):
        return state
    return StateBundle(meta=state.meta, tensors={k: v.to(device) for k, v in state.tensors.items()})
