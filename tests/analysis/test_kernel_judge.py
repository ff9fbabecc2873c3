"""The second judge (an RBF SVM and a PCA on raw pixels): refit the same in every process, good on
the held-out digits, its Fréchet distance fed to torchmetrics like the first judge's, and the two
judges' agreement as defined."""

import pytest
import torch

import analysis.kernel_judge as kj
from analysis.quality import classifier_predictions, judge_agreement, quality_table
from nodes.diffusion.digits import load_split


def test_the_judge_is_refit_identically():
    images = load_split("test").images[:64]
    noise = torch.rand(64, 1, 16, 16) * 2 - 1
    first = kj.kernel_judge()
    before = (kj.svm_predictions(noise), first.features.components.clone(), kj.pca_fd(images))
    kj.kernel_judge.cache_clear()
    try:
        again = kj.kernel_judge()
        assert again is not first
        assert torch.equal(kj.svm_predictions(noise), before[0])
        assert torch.equal(again.features.components, before[1])
        assert kj.pca_fd(images) == before[2]
    finally:
        kj.kernel_judge.cache_clear()


def test_it_classifies_the_held_out_digits_well_and_its_pca_keeps_95_percent():
    assert kj.held_out_accuracy() >= 0.99  # measured: 357 of 360 (0.992)
    assert kj.kernel_judge().explained_variance >= 0.95  # measured: 0.951 with 21 components


def test_the_pca_features_take_torchmetrics_probe_image():
    probe = torch.randint(0, 255, (2, 3, 299, 299), dtype=torch.uint8)
    assert kj.kernel_judge().features(probe).shape == (2, kj.PCA_COMPONENTS)


def test_real_digits_are_near_the_held_out_split_and_noise_far():
    train = load_split("train").images[:300]
    noise = (torch.rand_like(train) * 2 - 1)
    assert abs(kj.pca_fd(load_split("test").images)) < 1e-6  # the reference against itself
    assert kj.pca_fd(noise) > 10 * kj.pca_fd(train)


def test_agreement_counts_images_both_judges_call_right_or_both_wrong():
    labels = torch.tensor([0, 1, 2, 3, 4])
    first = torch.tensor([0, 1, 2, 9, 8])   # right, right, right, wrong, wrong
    second = torch.tensor([0, 7, 2, 5, 4])  # right, wrong, right, wrong, right
    # agree on 0 and 2 (both right) and 3 (both wrong, on different digits)
    assert judge_agreement(first, second, labels) == pytest.approx(0.6)
    assert judge_agreement(first, first, labels) == 1.0


def test_the_quality_table_reports_both_judges_and_full_agreement_where_both_are_right():
    test = load_split("test")
    both_right = ((classifier_predictions(test.images) == test.labels)
                  & (kj.svm_predictions(test.images) == test.labels))
    images, labels = test.images[both_right][:100], test.labels[both_right][:100]
    table = quality_table(images, labels)
    assert table["class_accuracy"] == table["svm_class_accuracy"] == table["judge_agreement"] == 1.0
    assert table["pca_fd"] > 0 and table["n"] == 100
    wrong = (labels + 1) % 10  # every image asked for another digit: both judges say no
    table = quality_table(images, wrong)
    assert table["class_accuracy"] == table["svm_class_accuracy"] == 0.0 and table["judge_agreement"] == 1.0
