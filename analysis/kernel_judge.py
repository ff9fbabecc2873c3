"""The second judge of quality: a kernel machine and a PCA on raw pixels, sharing nothing with the
cascade's gate (nodes/pretrained/gate) or the first judge (the CNN classifier of analysis/quality.py).

Why a second one: the gate is a CNN classifier trained on the same digits as the first judge, so the
images the gate doubts (and escalates) are the ones the first judge would doubt too, and a cascade
judged by that CNN alone is flattered.  This judge learns no features and shares no code, weights or
training with either: an RBF-kernel SVM on the 256 raw pixels of each image, and a Fréchet distance
on the raw pixels' principal components.

- `svm_predictions(images)`: the digit `SVC(kernel="rbf", C=SVM_C, gamma="scale")` gives each
  image, trained on the train split's raw pixels (nodes.diffusion.digits, 1,437 images in [-1, 1]).
  C was chosen once, by 5-fold cross-validation on the train split alone (C = 0.3, 1, 3, 10, 30,
  100: 0.976, 0.988, 0.989, 0.988, 0.988, 0.988); the held-out test split stayed out of the choice.
- `pca_fd(images, real)`: the Fréchet distance between `images` and `real` (default: the held-out
  test split, 360 images) on PCA_COMPONENTS principal components of the train split's raw pixels
  (the fewest that keep 95 % of its pixel variance), in pixel units, unscaled; computed by
  torchmetrics' FrechetInceptionDistance, as the first judge's FID is, with the projection as its
  feature extractor.

No weights ship: both are fitted once per process from the train split (about a second on 2 cores),
and the fit is deterministic (libsvm draws no random numbers without probability estimates; the PCA
is a full SVD), so every process judges with the same judge.  `SETTINGS` names it; the per-plan
cache (analysis/plan_quality.py) keeps a figure only while it was made by these settings.
On the held-out test split it classifies 357 of 360 digits right (`held_out_accuracy()`, 0.992).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance

from nodes.diffusion.digits import as_digit_images, load_split

SVM_C = 3.0
PCA_COMPONENTS = 21
# what a cached figure of this judge was made with (analysis/plan_quality.py compares it)
SETTINGS: dict[str, Any] = {"svm": f"SVC(kernel='rbf', C={SVM_C:g}, gamma='scale')",
                            "pca_components": PCA_COMPONENTS, "fitted_on": "train split, raw pixels"}


def _pixels(images: torch.Tensor) -> np.ndarray:
    """N x 256 float64 raw pixels, what both parts of the judge see."""
    return as_digit_images(images).flatten(1).double().numpy()


class PcaFeatures(nn.Module):
    """The PCA projection as a torchmetrics feature extractor (any input: as_digit_images)."""

    def __init__(self, mean: np.ndarray, components: np.ndarray) -> None:
        super().__init__()
        self.num_features = len(components)  # torchmetrics then needs no probe image
        self.register_buffer("mean", torch.from_numpy(mean))
        self.register_buffer("components", torch.from_numpy(components))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = as_digit_images(images).flatten(1).double()
        return (x - self.mean) @ self.components.T


@dataclass(frozen=True)
class KernelJudge:
    svm: Any  # sklearn.svm.SVC, fitted
    features: PcaFeatures
    explained_variance: float  # share of the train split's pixel variance the components keep


@functools.cache
def kernel_judge() -> KernelJudge:
    """The judge, fitted on the train split once per process (sklearn imported only here)."""
    from sklearn.decomposition import PCA
    from sklearn.svm import SVC

    train = load_split("train")
    x, y = _pixels(train.images), train.labels.numpy()
    svm = SVC(kernel="rbf", C=SVM_C, gamma="scale").fit(x, y)
    pca = PCA(n_components=PCA_COMPONENTS, svd_solver="full").fit(x)
    features = PcaFeatures(pca.mean_, pca.components_).eval()
    return KernelJudge(svm, features, float(pca.explained_variance_ratio_.sum()))


def svm_predictions(images: torch.Tensor) -> torch.Tensor:
    """The digit the SVM gives each image (int64, one per image)."""
    return torch.from_numpy(kernel_judge().svm.predict(_pixels(images))).long()


def pca_fd(images: torch.Tensor, real: torch.Tensor | None = None) -> float:
    """Fréchet distance of `images` to `real` (default: the held-out test split) on PCA features."""
    real = load_split("test").images if real is None else real
    metric = FrechetInceptionDistance(feature=kernel_judge().features, reset_real_features=True)
    metric.update(real, real=True)
    metric.update(images, real=False)
    return float(metric.compute())


def held_out_accuracy() -> float:
    """The SVM's accuracy on the held-out test split: how far this judge can be trusted (docs)."""
    test = load_split("test")
    return float((svm_predictions(test.images) == test.labels).double().mean())
