"""Quality of generated digits: FID and KID on the digit classifier's features (torchmetrics),
class accuracy (the classifier agrees with the requested label), and PSNR against the large-only
output of the same seed and labels (fidelity to what the biggest model alone would have drawn).

The real reference set is the held-out test split, which no model saw in training.
"""

from __future__ import annotations

import functools
import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.image import PeakSignalNoiseRatio
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from nodes.diffusion.architectures import DigitClassifier
from nodes.diffusion.digits import IMAGE_SIZE, load_split
from nodes.diffusion.model_zoo import load_classifier

KID_SUBSETS = 50
METRIC_SEED = 0


class ClassifierFeatures(nn.Module):
    """Adapter that lets torchmetrics use the digit classifier as its feature extractor.

    torchmetrics probes a custom extractor once with a 3x299x299 uint8 image, so any input is
    converted: uint8 [0, 255] -> [-1, 1], colour -> grey, any size -> 16x16.
    """

    def __init__(self, classifier: DigitClassifier) -> None:
        super().__init__()
        self.classifier = classifier
        # Raw features have a per-dimension spread of ~7; dividing by the real set's spread puts
        # FID and KID (a cubic kernel, sensitive to scale) on the scale people are used to.
        with torch.no_grad():
            spread = classifier.features(load_split("test").images).std(dim=0).mean()
        self.register_buffer("scale", spread.clamp_min(1e-6))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 127.5 - 1.0 if images.dtype == torch.uint8 else images.float()
        if x.shape[1] != 1:
            x = x.mean(dim=1, keepdim=True)
        if x.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
            x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", antialias=True)
        return self.classifier.features(x) / self.scale


@functools.cache
def _features() -> ClassifierFeatures:
    return ClassifierFeatures(load_classifier())


def _real_images() -> torch.Tensor:
    return load_split("test").images


def fid_kid(images: torch.Tensor, real: torch.Tensor | None = None) -> tuple[float, float, float]:
    """FID, KID mean and KID std of `images` against `real` (default: the held-out test split)."""
    real = _real_images() if real is None else real
    features = _features()
    fid = FrechetInceptionDistance(feature=features, reset_real_features=True)
    subset = min(len(images), len(real), 100)
    with warnings.catch_warnings():  # its memory warning is about datasets far larger than ours
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(feature=features, subsets=KID_SUBSETS, subset_size=subset)
    for metric in (fid, kid):
        metric.update(real, real=True)
        metric.update(images, real=False)
    torch.manual_seed(METRIC_SEED)  # KID draws random subsets
    kid_mean, kid_std = kid.compute()
    return float(fid.compute()), float(kid_mean), float(kid_std)


@torch.no_grad()
def class_accuracy(images: torch.Tensor, labels: torch.Tensor) -> float:
    predicted = load_classifier()(images.float()).argmax(dim=1)
    return float((predicted == labels).float().mean())


def psnr(images: torch.Tensor, reference: torch.Tensor) -> float:
    """PSNR in dB over the whole batch, images in [-1, 1] (data range 2)."""
    value = float(PeakSignalNoiseRatio(data_range=2.0)(images.float(), reference.float()))
    return value if math.isfinite(value) else float("inf")


def quality_table(
    images: torch.Tensor, labels: torch.Tensor, large_reference: torch.Tensor | None = None
) -> dict[str, float | int | None]:
    """The figures `edgestage quality --json` prints; psnr_vs_large only where a reference applies."""
    if len(images) < 2:
        raise ValueError("quality needs at least 2 images (FID needs a covariance)")
    if len(labels) != len(images):
        raise ValueError(f"quality: {len(images)} images but {len(labels)} labels")
    if not torch.isfinite(images).all():  # FID would be nan (and LAPACK complains on stdout)
        bad = int((~torch.isfinite(images)).sum())
        raise ValueError(f"quality: {bad} image values are NaN or infinite")
    fid, kid, kid_std = fid_kid(images)
    table: dict[str, float | int | None] = {
        "n": len(images),
        "fid": fid,
        "kid": kid,
        "kid_std": kid_std,
        "class_accuracy": class_accuracy(images, labels),
    }
    if large_reference is not None:
        table["psnr_vs_large"] = psnr(images, large_reference)
    return table
