"""The cascade's gate: how sure the device's own small classifier (`gate`, nodes/pretrained/gate,
not the judge of quality in analysis/quality.py) is that each image shows its requested digit.

A latent pipeline's images (three channels) are judged as their grey image, as the judges do
(nodes/diffusion/digits.py `as_digit_images`); their requested digit is the one their prompt names
(nodes/diffusion/digit_attributes.py `prompt_digit`)."""

from __future__ import annotations

import torch

from nodes.diffusion.digits import as_digit_images
from nodes.diffusion.model_zoo import GATE_NAME, load_classifier


def gate_confidence(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The gate's probability of each image's requested label, N floats in [0, 1]."""
    with torch.no_grad():
        probabilities = load_classifier(GATE_NAME)(as_digit_images(images)).softmax(dim=1)
    return probabilities[torch.arange(len(labels)), labels.long()]


def escalated(images: torch.Tensor, labels: torch.Tensor, threshold: float) -> list[int]:
    """Indices of the images the gate gives less than `threshold` for their label."""
    return [int(i) for i in torch.nonzero(gate_confidence(images, labels) < threshold).flatten()]
