"""Definitions of the embedded models: three class-conditional denoisers and a digit classifier.

The denoisers differ in cost on purpose (the paper's small / medium / large models that a device,
an edge server and a cloud host can afford); they share one training noise schedule so that any
of them can continue another's denoising trajectory.
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from nodes.diffusion.digits import IMAGE_SIZE, NUM_CLASSES

DENOISER_NAMES = ("small", "medium", "large")

# name -> (block_out_channels, layers_per_block, attention per level, norm groups)
_DENOISER_SHAPES: dict[str, tuple[tuple[int, ...], int, tuple[bool, ...], int]] = {
    "small": ((8, 16), 1, (False, False), 4),
    "medium": ((24, 48), 1, (False, True), 8),
    "large": ((64, 128), 2, (False, True), 8),
}


def build_denoiser(name: str) -> UNet2DModel:
    channels, layers, attention, groups = _DENOISER_SHAPES[name]
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention))
    return UNet2DModel(
        sample_size=IMAGE_SIZE,
        in_channels=1,
        out_channels=1,
        block_out_channels=channels,
        layers_per_block=layers,
        down_block_types=down,
        up_block_types=up,
        num_class_embeds=NUM_CLASSES,
        norm_num_groups=groups,
    )


def training_noise_schedule() -> DDPMScheduler:
    """The forward process every embedded denoiser is trained on (saved beside its weights)."""
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="epsilon",
        clip_sample=True,
    )


class DigitClassifier(ModelMixin, ConfigMixin):
    """A small CNN; its penultimate layer is the feature space of FID/KID, its output the judge."""

    @register_to_config
    def __init__(self, num_classes: int = NUM_CLASSES, feature_dim: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(64 * 4 * 4, feature_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """images: N x 1 x 16 x 16 in [-1, 1] -> N x feature_dim."""
        return self.body(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
