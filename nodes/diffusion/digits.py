"""The embedded data set: scikit-learn's 8x8 digits, upsampled to 16x16, scaled to [-1, 1].

The train/test split is fixed (stratified, seed 0) so that every model and every quality figure
in the project refers to the same held-out images.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

IMAGE_SIZE = 16
NUM_CLASSES = 10
SPLIT_SEED = 0
TEST_FRACTION = 0.2


@dataclass(frozen=True)
class DigitSplit:
    images: torch.Tensor  # N x 1 x 16 x 16 float32 in [-1, 1]
    labels: torch.Tensor  # N int64


def _upsample(raw: np.ndarray) -> torch.Tensor:
    pixels = torch.from_numpy(raw.reshape(-1, 1, 8, 8).astype(np.float32)) / 16.0
    big = F.interpolate(pixels, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    return (big.clamp(0.0, 1.0) * 2.0 - 1.0).contiguous()


@lru_cache(maxsize=2)
def load_split(part: str) -> DigitSplit:
    """`part` is "train" (1,437 images) or "test" (360 images, held out from all training)."""
    if part not in ("train", "test"):
        raise ValueError(f"unknown split {part!r}: expected 'train' or 'test'")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    train_idx, test_idx = train_test_split(
        np.arange(len(digits.target)),
        test_size=TEST_FRACTION,
        random_state=SPLIT_SEED,
        stratify=digits.target,
    )
    idx = np.sort(train_idx if part == "train" else test_idx)
    return DigitSplit(_upsample(digits.data[idx]), torch.from_numpy(digits.target[idx]).long())


def as_digit_images(images: torch.Tensor) -> torch.Tensor:
    """Any batch a judge's feature extractor may be given, as the data set's images: float, one grey
    channel, 16x16, in [-1, 1].  torchmetrics probes a custom extractor once with a 3x299x299 uint8
    image (uint8 [0, 255] -> [-1, 1], colour -> grey, any size -> 16x16); our own batches pass as they are."""
    x = images.float() / 127.5 - 1.0 if images.dtype == torch.uint8 else images.float()
    if x.shape[1] != 1:
        x = x.mean(dim=1, keepdim=True)
    if x.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
        x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", antialias=True)
    return x
