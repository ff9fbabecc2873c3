"""The command line as a user runs it: real subprocesses, real files."""

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from nodes.diffusion.model_zoo import PRETRAINED_DIR
from nodes.diffusion.samples import load_samples

EDGESTAGE = [sys.executable, "-m", "emulation.cli"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*EDGESTAGE, *args], capture_output=True, text=True, timeout=300)


def run_all(*commands: list[str]) -> list[subprocess.CompletedProcess]:
    """Independent commands side by side, each its own fresh process: most of each one's time is
    the interpreter importing torch on one core, so on N cores N of them take about one's time."""
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        return list(pool.map(lambda args: run(*args), commands))


def assert_bad_input(done: subprocess.CompletedProcess, needle: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("edgestage: error:") and needle in lines[0], lines[0]


GENERATE_BAD_INPUT = [
    (["--plan", "huge:0-50"], "unknown model 'huge'"),
    (["--plan", "large:0-30;small:30-50"], "malformed plan option 'small:30-50' after ';'"),
    (["--plan", "large:0-30,small:35-50"], "do not tile"),
    (["--plan", "large:0-40"], "do not tile [0, 50)"),
    (["--plan", "small:0-50", "--n", "0"], "--n"),
    (["--plan", "small:0-50", "--label", "11"], "label must lie in 0-9"),
    (["--plan", "small:0-50", "--scheduler", "euler"], "invalid choice"),
    (["--plan", "small:0-50", "--steps", "-3"], "--steps"),
]


@pytest.fixture(scope="module")
def generate_bad_input_runs(tmp_path_factory) -> list[tuple[subprocess.CompletedProcess, list]]:
    """Every case of GENERATE_BAD_INPUT, each with a folder of its own, run side by side: per case
    the finished process and what its folder holds afterwards."""
    folders = [tmp_path_factory.mktemp("generate") for _ in GENERATE_BAD_INPUT]
    done = run_all(*(["generate", *args, "--out", str(folder / "s.npz")]
                     for (args, _), folder in zip(GENERATE_BAD_INPUT, folders, strict=True)))
    return [(d, list(folder.iterdir())) for d, folder in zip(done, folders, strict=True)]


@pytest.mark.parametrize(("args", "needle"), GENERATE_BAD_INPUT)
def test_generate_bad_input_is_one_line_exit_2_nothing_written(generate_bad_input_runs, args, needle):
    done, left = generate_bad_input_runs[GENERATE_BAD_INPUT.index((args, needle))]
    assert_bad_input(done, needle)
    assert left == []


def test_samples_missing_keys_is_rejected(tmp_path):
    broken = tmp_path / "broken.npz"
    np.savez(broken, images=np.zeros((2, 1, 16, 16), np.float32))
    quality, replay, absent = run_all(
        ["quality", str(broken)], ["generate", "--replay", str(broken), "--out", str(tmp_path / "x.npz")],
        ["quality", str(tmp_path / "absent.npz")])
    assert_bad_input(quality, "missing keys: labels, plan, seed")
    assert_bad_input(replay, "missing keys")
    assert not (tmp_path / "x.npz").exists()
    assert_bad_input(absent, "does not exist")


def test_generate_replay_and_quality(tmp_path):
    first, again = tmp_path / "samples.npz", tmp_path / "again.npz"
    done = run("generate", "--plan", "medium:0-6,small:6-10", "--steps", "10", "--n", "12",
               "--seed", "4", "--scheduler", "dpm", "--out", str(first))
    assert done.returncode == 0, done.stderr
    samples = load_samples(first)
    assert samples.images.shape == (12, 1, 16, 16) and samples.images.dtype.is_floating_point
    assert samples.images.min() >= -1 and samples.images.max() <= 1
    assert samples.labels.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert (str(samples.plan), samples.seed, samples.scheduler, samples.steps) == (
        "medium:0-6,small:6-10", 4, "dpm", 10)

    # the replay and the figures of the first file, side by side
    replayed, done = run_all(["generate", "--replay", str(first), "--out", str(again)],
                             ["quality", str(first), "--json"])
    assert replayed.returncode == 0, replayed.stderr
    assert np.array_equal(load_samples(again).images.numpy(), samples.images.numpy())

    assert done.returncode == 0, done.stderr
    table = json.loads(done.stdout)
    assert set(table) >= {"n", "fid", "kid", "class_accuracy", "psnr_vs_large",  # both judges
                          "svm_class_accuracy", "pca_fd", "judge_agreement"}
    assert table["n"] == 12 and 0 <= table["class_accuracy"] <= 1 and table["fid"] > 0
    assert 0 <= table["svm_class_accuracy"] <= 1 and 0 <= table["judge_agreement"] <= 1
    assert table["pca_fd"] > 0


def test_a_model_directory_given_by_path_loads(tmp_path):
    mine = tmp_path / "my-model"
    shutil.copytree(PRETRAINED_DIR / "small", mine)
    out = tmp_path / "s.npz"
    done = run("generate", "--plan", f"{mine}:0-5", "--steps", "5", "--n", "2", "--label", "3",
               "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert load_samples(out).labels.tolist() == [3, 3]


def test_label_fixes_every_image(tmp_path):
    out = tmp_path / "s.npz"
    done = run("generate", "--plan", "small:0-4", "--steps", "4", "--n", "3", "--label", "7",
               "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert load_samples(out).labels.tolist() == [7, 7, 7]


def test_doctor_json_reports_machine_and_models():
    done = run("doctor", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    for key in ("root", "mininet", "sch_netem", "impairment_backend", "cgroup", "cpu_count",
                "torch", "diffusers", "models"):
        assert key in report
    names = {m["name"] for m in report["models"]}
    assert names == {"small", "medium", "large", "classifier", "gate"}
    assert all(len(m["sha256"]) == 64 and m["weights_bytes"] > 0 for m in report["models"])


def test_report_of_a_directory_without_a_run_is_exit_2_nothing_written(tmp_path):
    assert_bad_input(run("report", str(tmp_path)), "is not a run directory")
    assert list(tmp_path.iterdir()) == []


def test_unknown_subcommand_is_exit_2():
    done = run("frobnicate")
    assert done.returncode == 2 and "invalid choice" in done.stderr


def test_generate_replay_and_quality_of_a_latent_plan(tmp_path):
    """Issue 19: a latent pipeline's plan locally, from prompts cycled over the images; its replay is
    the same images; its quality is judged against the digit, weight and slant each prompt names,
    PSNR against its first pipeline alone."""
    first, again = tmp_path / "latent.npz", tmp_path / "again.npz"
    prompts = ["a bold right-slanted digit 7", "a thin upright digit 3"]
    done = run("generate", "--plan", "latent-large:0-10,latent-small:10-20", "--steps", "20", "--n", "6",
               "--prompts", *prompts, "--negative-prompts", "blurry", "--guidance", "4", "--out", str(first))
    assert done.returncode == 0, done.stderr
    samples = load_samples(first)
    assert samples.images.shape == (6, 3, 16, 16) and samples.labels is None
    assert list(samples.prompts) == prompts * 3 and samples.negative_prompts == ("blurry",) * 6
    assert (str(samples.plan), samples.guidance_scale, samples.steps) == (
        "latent-large:0-10,latent-small:10-20", 4.0, 20)
    replayed, judged = run_all(["generate", "--replay", str(first), "--out", str(again)],
                               ["quality", str(first), "--json"])
    assert replayed.returncode == 0, replayed.stderr
    assert np.array_equal(load_samples(again).images.numpy(), samples.images.numpy())
    assert judged.returncode == 0, judged.stderr
    table = json.loads(judged.stdout)
    assert set(table) == {"n", "class_accuracy", "fid", "kid", "weight_agreement", "slant_agreement",
                          "psnr_vs_large"}
    assert table["n"] == 6 and 0 <= table["class_accuracy"] <= 1 and table["psnr_vs_large"] > 0


LATENT_BAD_INPUT = [
    (["--plan", "latent-large:0-20", "--steps", "20"], "runs latent pipelines: give --prompts"),
    (["--plan", "small:0-20", "--steps", "20", "--prompts", "a"], "runs pixel models: --prompts"),
    (["--plan", "latent-large:0-20", "--steps", "20", "--prompts", "a", "--guidance", "0"], "--guidance"),
    (["--plan", "latent-large:0-20", "--steps", "20", "--prompts-file", "/absent.txt"],
     "--prompts-file /absent.txt does not exist"),
    (["--plan", "latent-large:0-10,small:10-20", "--steps", "20", "--prompts", "a"],
     "cannot mix pixel and latent models"),
]


def test_latent_generate_bad_input_is_one_line_exit_2_nothing_written(tmp_path):
    folders = [tmp_path / str(i) for i in range(len(LATENT_BAD_INPUT))]
    done = run_all(*(["generate", *args, "--out", str(folder / "s.npz")]
                     for (args, _), folder in zip(LATENT_BAD_INPUT, folders, strict=True)))
    for result, (_, needle), folder in zip(done, LATENT_BAD_INPUT, folders, strict=True):
        assert_bad_input(result, needle)
        assert not folder.exists()
