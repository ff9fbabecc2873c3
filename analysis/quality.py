"""Quality of generated digits, by two judges that share nothing (docs/nodes-and-models.md#two-judges):

- the first, the digit classifier (a CNN, nodes/pretrained/classifier): FID and KID on its features
  (torchmetrics), class accuracy (it agrees with the requested label);
- the second, analysis/kernel_judge.py (an RBF-kernel SVM and a PCA on raw pixels, nothing learnt
  in common with the first judge or with the cascade's gate, itself a CNN classifier):
  `svm_class_accuracy`, and `pca_fd`, the Fréchet distance on PCA features;
- `judge_agreement`: the share of images where the two say the same of whether the image is the
  requested digit;

and PSNR against the large-only output of the same seed and labels (fidelity to what the biggest
model alone would have drawn).  The real reference set is the held-out test split, which no model
and no judge saw in training.
"""

from __future__ import annotations

import functools
import math
import warnings

import torch
from torch import nn
from torchmetrics.image import PeakSignalNoiseRatio
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from analysis.kernel_judge import pca_fd, svm_predictions
from nodes.diffusion.architectures import DigitClassifier
from nodes.diffusion.digits import as_digit_images, load_split
from nodes.diffusion.model_zoo import load_classifier

KID_SUBSETS = 50
METRIC_SEED = 0


class ClassifierFeatures(nn.Module):
    """Adapter that lets torchmetrics use the digit classifier as its feature extractor.

    torchmetrics probes a custom extractor once with a 3x299x299 uint8 image, so any input is
    converted (nodes.diffusion.digits.as_digit_images).
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
        return self.classifier.features(as_digit_images(images)) / self.scale


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
def classifier_predictions(images: torch.Tensor) -> torch.Tensor:
    """The digit the first judge (the classifier) gives each image."""
    return load_classifier()(images.float()).argmax(dim=1)


def _share(hits: torch.Tensor) -> float:
    return float(hits.float().mean())


def class_accuracy(images: torch.Tensor, labels: torch.Tensor) -> float:
    return _share(classifier_predictions(images) == labels)


def judge_agreement(first: torch.Tensor, second: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of images where two judges' predictions say the same of whether each image is its
    requested digit: both right, or both wrong (not necessarily on the same wrong digit)."""
    return _share((first == labels) == (second == labels))


def psnr(images: torch.Tensor, reference: torch.Tensor) -> float:
    """PSNR in dB over the whole batch, images in [-1, 1] (data range 2)."""
    value = float(PeakSignalNoiseRatio(data_range=2.0)(images.float(), reference.float()))
    return value if math.isfinite(value) else float("inf")


def quality_table(
    images: torch.Tensor, labels: torch.Tensor, large_reference: torch.Tensor | None = None
) -> dict[str, float | int | None]:
    """The figures `edgestage quality --json` prints, both judges' (module docstring); psnr_vs_large
    only where a reference applies."""
    if len(images) < 2:
        raise ValueError("quality needs at least 2 images (FID needs a covariance)")
    if len(labels) != len(images):
        raise ValueError(f"quality: {len(images)} images but {len(labels)} labels")
    if not torch.isfinite(images).all():  # FID would be nan (and LAPACK complains on stdout)
        bad = int((~torch.isfinite(images)).sum())
        raise ValueError(f"quality: {bad} image values are NaN or infinite")
    fid, kid, kid_std = fid_kid(images)
    first, second = classifier_predictions(images), svm_predictions(images)
    table: dict[str, float | int | None] = {
        "n": len(images),
        "fid": fid,
        "kid": kid,
        "kid_std": kid_std,
        "class_accuracy": _share(first == labels),
        "svm_class_accuracy": _share(second == labels),
        "pca_fd": pca_fd(images),
        "judge_agreement": judge_agreement(first, second, labels),
    }
    if large_reference is not None:
        table["psnr_vs_large"] = psnr(images, large_reference)
    return table
