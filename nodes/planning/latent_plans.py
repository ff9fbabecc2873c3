"""What the planner knows of latent pipelines' plans (docs/latent-pipelines.md): their grid, where
their text encoding and decoding may be placed, and the bytes each boundary carries.

The grid is the quality table's for the pipelines the hosts hold: each pipeline alone, and each
pair with the larger UNet first and a boundary every 10 % of the steps.  Each plan of it, on
every assignment of hosts, is a candidate with each placement the hosts allow (nodes/planning/plan.py
`place`): the prompts encoded on the first denoising host, on the device or on every denoising
host; the latents decoded on the last denoising host or on the device.  A host encodes only where
it loaded the text encoder and tokenizer, decodes only where it loaded the VAE.

The bytes are the tensors' (fp32, as they travel), from the folders' configs:

    encoding stage -> first denoiser       the embeddings ((2 with guidance) x n x tokens x dims)
    denoiser -> denoiser                   the latents, the sampler's history (DPM-Solver++ 2M: 2
                                           latents-sized tensors), and the embeddings unless the
                                           next host encodes the prompts itself
    last denoiser -> decoding stage        the latents
    decoder -> device                      the images (n x 3 x H x W)

plus MESSAGE_OVERHEAD_BYTES of header and envelope per message (a few hundred bytes of JSON).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache

from nodes.diffusion import latent_folders
from nodes.diffusion.model_zoo import is_pipeline_folder, plan_models_kind
from nodes.planning.plan import DECODE_PLACES, ENCODE_PLACES, Plan, Stage, place

MESSAGE_OVERHEAD_BYTES = 1_000  # JSON header and envelope, measured 0.6-0.9 kB on the tiny pipeline
FLOAT_BYTES = 4  # tensors travel as float32
TEXT_COMPONENTS = frozenset({"tokenizer", "text_encoder"})


def pipelines(models: Iterable[str]) -> list[str]:
    """The latent pipeline folders among `models`, larger UNet first (by its weights' size)."""
    found = {m for m in models if is_pipeline_folder(m)}
    return sorted(found, key=lambda m: (-_unet_bytes(m), m))


@lru_cache(maxsize=64)
def _unet_bytes(folder: str) -> int:
    unet = latent_folders.pipeline_path(folder) / "unet"
    return sum(p.stat().st_size for p in unet.glob("*.safetensors"))


def _tenth(steps: int, k: int) -> int:
    return round(steps * k / 10)


def grid(folders: Sequence[str], steps: int) -> list[Plan]:
    """Each pipeline alone; each compatible pair (larger first) at every tenth of the steps."""
    plans = [Plan((Stage(f, 0, steps),)) for f in folders]
    cuts = sorted({b for k in range(1, 10) if 0 < (b := _tenth(steps, k)) < steps})
    for big, small in itertools.combinations(folders, 2):
        try:
            latent_folders.check_compatible([big, small])
        except ValueError:
            continue  # a plan can only join pipelines that share a latent space
        plans += [Plan((Stage(big, 0, b), Stage(small, b, steps))) for b in cuts]
    return plans


def placements(hosted: Plan, device: str, can_encode: Callable[[str, str], bool],
               can_decode: Callable[[str, str], bool]) -> list[Plan]:
    """`hosted` (denoising stages with hosts) with every placement of its encoding and decoding
    that its hosts allow; `can_encode(host, model)`, `can_decode(host, model)`."""
    out: dict[str, Plan] = {}
    for encode, decode in itertools.product(ENCODE_PLACES, DECODE_PLACES):
        plan = place(hosted, encode, decode, device)
        if not can_decode(plan.stages[-1].host or "", plan.stages[-1].model):
            continue
        encoders = [s for i, s in enumerate(plan.stages) if plan.encodes_at(i)]
        if not all(can_encode(s.host or "", s.model) for s in encoders):
            continue
        if plan.encode_each:
            try:
                plan_models_kind(plan)  # the same text encoder on every host
            except ValueError:
                continue
        out.setdefault(str(plan), plan)
    return list(out.values())


def boundary_bytes(plan: Plan, index: int, n: int, guided: bool, history: int) -> int:
    """Bytes of the message stage `index` of a latent `plan` sends on: to the next stage, or for
    the last stage its images to the device."""
    space = _space(plan.stages[index].model)
    latents = space.latents_bytes(n, "float32")
    embeddings = space.embeddings_bytes(n, "float32", guided)
    if index == len(plan.stages) - 1:
        tensors = space.image_bytes(n, "float32")
    elif not plan.stages[index].steps:
        tensors = embeddings
    elif not plan.stages[index + 1].steps:
        tensors = latents
    else:
        tensors = latents * (1 + history) + (0 if plan.encodes_at(index + 1) else embeddings)
    return tensors + MESSAGE_OVERHEAD_BYTES


@lru_cache(maxsize=64)
def _space(folder: str) -> latent_folders.LatentSpace:
    return latent_folders.latent_space(folder)


def solver_history(scheduler: str) -> int:
    """Latents-sized tensors of the sampler's state a hand-off carries (DPM-Solver++ 2M: 2)."""
    return 2 if scheduler == "dpm" else 0


def component_checks(components: Mapping[str, tuple[str, ...] | None],
                     models: Mapping[str, tuple[str, ...]]) -> tuple[Callable[[str, str], bool],
                                                                     Callable[[str, str], bool]]:
    """can_encode(host, model), can_decode(host, model) from what each host loads besides the UNet
    (None: every component) and the models it holds."""
    def loaded(host: str, model: str, needed: frozenset[str]) -> bool:
        parts = components.get(host)
        return model in models.get(host, ()) and (parts is None or needed <= set(parts))

    return (lambda h, m: loaded(h, m, TEXT_COMPONENTS)), (lambda h, m: loaded(h, m, frozenset({"vae"})))
