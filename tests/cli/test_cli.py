"""The command line as a user runs it: real subprocesses, real files."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from nodes.diffusion.model_zoo import PRETRAINED_DIR
from nodes.diffusion.samples import load_samples

EDGESTAGE = [sys.executable, "-m", "emulation.cli"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*EDGESTAGE, *args], capture_output=True, text=True, timeout=300)


def assert_bad_input(done: subprocess.CompletedProcess, needle: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("edgestage: error:") and needle in lines[0], lines[0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--plan", "huge:0-50"], "unknown model 'huge'"),
        (["--plan", "large:0-30;small:30-50"], "malformed plan stage"),
        (["--plan", "large:0-30,small:35-50"], "do not tile"),
        (["--plan", "large:0-40"], "do not tile [0, 50)"),
        (["--plan", "small:0-50", "--n", "0"], "--n"),
        (["--plan", "small:0-50", "--label", "11"], "label must lie in 0-9"),
        (["--plan", "small:0-50", "--scheduler", "euler"], "invalid choice"),
        (["--plan", "small:0-50", "--steps", "-3"], "--steps"),
    ],
)
def test_generate_bad_input_is_one_line_exit_2_nothing_written(tmp_path, args, needle):
    out = tmp_path / "s.npz"
    assert_bad_input(run("generate", *args, "--out", str(out)), needle)
    assert list(tmp_path.iterdir()) == []


def test_samples_missing_keys_is_rejected(tmp_path):
    broken = tmp_path / "broken.npz"
    np.savez(broken, images=np.zeros((2, 1, 16, 16), np.float32))
    assert_bad_input(run("quality", str(broken)), "missing keys: labels, plan, seed")
    assert_bad_input(run("generate", "--replay", str(broken), "--out", str(tmp_path / "x.npz")),
                     "missing keys")
    assert not (tmp_path / "x.npz").exists()
    assert_bad_input(run("quality", str(tmp_path / "absent.npz")), "does not exist")


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

    assert run("generate", "--replay", str(first), "--out", str(again)).returncode == 0
    assert np.array_equal(load_samples(again).images.numpy(), samples.images.numpy())

    done = run("quality", str(first), "--json")
    assert done.returncode == 0, done.stderr
    table = json.loads(done.stdout)
    assert set(table) >= {"n", "fid", "kid", "class_accuracy", "psnr_vs_large"}
    assert table["n"] == 12 and 0 <= table["class_accuracy"] <= 1 and table["fid"] > 0


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
