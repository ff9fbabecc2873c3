"""The metrics rank what they should: real digits far above noise, large-only above small-only."""

import pytest
import torch

from analysis.quality import ClassifierFeatures, class_accuracy, fid_kid, psnr, quality_table
from nodes.diffusion.digits import load_split
from nodes.diffusion.generation import generate, request_labels
from nodes.diffusion.model_zoo import load_classifier
from nodes.planning.plan import single_model_plan


def test_adapter_takes_torchmetrics_probe_image():
    probe = torch.randint(0, 255, (2, 3, 299, 299), dtype=torch.uint8)
    assert ClassifierFeatures(load_classifier())(probe).shape == (2, 64)


def test_classifier_judges_held_out_digits_well():
    test = load_split("test")
    assert class_accuracy(test.images, test.labels) >= 0.95


def test_real_digits_score_far_better_than_noise():
    train = load_split("train")
    real = train.images[:300]
    noise = torch.randn_like(real).clamp(-1, 1)
    fid_real, kid_real, _ = fid_kid(real)
    fid_noise, kid_noise, _ = fid_kid(noise)
    assert fid_noise > 10 * fid_real
    assert kid_noise > 10 * max(kid_real, 1e-4)
    assert class_accuracy(real, train.labels[:300]) > 0.95
    assert class_accuracy(noise, train.labels[:300]) < 0.3


@pytest.fixture(scope="module")
def single_model_images():
    labels = request_labels(100)
    return labels, {
        name: generate(single_model_plan(name, 10), labels, seed=0, scheduler="dpm")
        for name in ("small", "large")
    }


@pytest.mark.slow  # 200 images of 10 DPM steps generated first (the runs' sampler; ~6 s on 2 cores)
def test_large_only_beats_small_only(single_model_images):
    labels, images = single_model_images
    small = quality_table(images["small"], labels)
    large = quality_table(images["large"], labels)
    assert large["fid"] < small["fid"]
    assert large["kid"] < small["kid"]
    assert large["class_accuracy"] > small["class_accuracy"]


@pytest.mark.slow  # 200 images of 10 DPM steps generated first (the runs' sampler; ~6 s on 2 cores)
def test_psnr_vs_large_is_infinite_for_itself_and_finite_otherwise(single_model_images):
    _, images = single_model_images
    assert psnr(images["large"], images["large"]) == float("inf")
    value = psnr(images["small"], images["large"])
    assert 0 < value < 60


def test_quality_needs_two_images():
    with pytest.raises(ValueError, match="at least 2"):
        quality_table(torch.zeros(1, 1, 16, 16), torch.tensor([0]))
