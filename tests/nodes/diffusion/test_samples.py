"""A samples file is written whole or not at all, and Ctrl-C cannot come between making a
temporary file and knowing its name (which left a probe file behind once, in CI)."""

import os
import signal
import threading
import time

import pytest

from nodes.diffusion.samples import check_output_path, ctrl_c_held


def test_ctrl_c_inside_a_held_block_comes_when_it_ends(tmp_path):
    handler = signal.getsignal(signal.SIGINT)  # Python's, or the CLI's once emulation.cli is imported
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with ctrl_c_held():
            os.kill(os.getpid(), signal.SIGINT)
            reached.append("after the signal")  # not interrupted here
        reached.append("after the block")  # interrupted before this
    assert reached == ["after the signal"]
    assert signal.getsignal(signal.SIGINT) is handler  # the handler is back


def test_ctrl_c_is_held_off_even_when_another_thread_takes_the_signal():
    # torch's and ZeroMQ's threads do not block SIGINT, so the kernel may hand it to them
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    reached = []
    try:
        with pytest.raises(KeyboardInterrupt), ctrl_c_held():
            signal.pthread_kill(other.ident, signal.SIGINT)
            time.sleep(0.05)
            reached.append("after the signal")
    finally:
        stop.set()
        other.join()
    assert reached == ["after the signal"]


def test_checking_an_output_path_leaves_nothing(tmp_path):
    assert check_output_path(tmp_path / "new" / "s.npz") == tmp_path / "new" / "s.npz"
    assert list(tmp_path.iterdir()) == []  # not even the folder it would make
    with pytest.raises(ValueError, match="it is a directory"):
        check_output_path(tmp_path)


def test_a_latent_pipeline_s_samples_keep_their_prompts_in_place_of_labels(tmp_path):
    """Issue 19: N x 3 x H x W images with one prompt (and negative prompt) each and the guidance
    scale; no labels.  A pixel file is what it was."""
    import numpy as np
    import torch

    from nodes.diffusion.samples import Samples, load_samples, save_samples
    from nodes.planning.plan import parse_plan

    images = torch.rand(2, 3, 32, 32) * 2 - 1
    plan = parse_plan("/models/tiny-large:0-4@cloud,/models/tiny-small:4-8@edge")
    samples = Samples(images=images, labels=None, plan=plan, seed=5, scheduler="dpm", steps=8,
                      prompts=("a cat", "ein Hund"), negative_prompts=("", "blurry"), guidance_scale=5.0)
    save_samples(tmp_path / "s.npz", samples)
    loaded = load_samples(tmp_path / "s.npz")
    assert loaded.labels is None and loaded.prompts == ("a cat", "ein Hund")
    assert loaded.negative_prompts == ("", "blurry") and loaded.guidance_scale == 5.0
    assert torch.equal(loaded.images, images) and loaded.plan == plan
    assert set(np.load(tmp_path / "s.npz").files) == {"images", "prompts", "negative_prompts",
                                                       "guidance_scale", "plan", "seed", "scheduler", "steps"}
    bad = dict(np.load(tmp_path / "s.npz"))
    np.savez(tmp_path / "bad.npz", **{**bad, "prompts": np.array(["only one"])})
    with pytest.raises(ValueError, match="prompts must be 2 strings, one per image"):
        load_samples(tmp_path / "bad.npz")
    np.savez(tmp_path / "bad.npz", **{**bad, "guidance_scale": np.array(-1.0)})
    with pytest.raises(ValueError, match="guidance_scale must be one positive number"):
        load_samples(tmp_path / "bad.npz")
    np.savez(tmp_path / "bad.npz", **{**bad, "images": bad["images"][:, :1]})
    with pytest.raises(ValueError, match="a latent pipeline's images must be N x 3 x H x W"):
        load_samples(tmp_path / "bad.npz")


def test_generate_and_quality_refuse_a_latent_samples_file_they_cannot_use_in_one_line(tmp_path):
    """A latent pipeline's samples replay from their pipeline folder and are judged against the digit
    each prompt names: a folder that is not there, or a prompt that names no digit, is one line."""
    import subprocess
    import sys
    from pathlib import Path

    import torch

    from nodes.diffusion.samples import Samples, save_samples
    from nodes.planning.plan import parse_plan

    path = tmp_path / "latent.npz"
    save_samples(path, Samples(images=torch.zeros(2, 3, 8, 8), labels=None, plan=parse_plan("/m/p:0-2"),
                               seed=1, scheduler="ddim", steps=2, prompts=("a", "b"), guidance_scale=2.0))
    root = Path(__file__).resolve().parents[3]
    cases = ((["generate", "--replay", str(path), "--out", str(tmp_path / "o.npz")], "/m/p"),
             (["quality", str(path), "--no-reference"], "prompt 1 ('a') names no digit"))
    running = [subprocess.Popen([sys.executable, "-m", "emulation.cli", *argv], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=root) for argv, _ in cases]
    for proc, (_, fragment) in zip(running, cases, strict=True):  # side by side: each is mostly imports
        _, stderr = proc.communicate(timeout=120)
        lines = stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and fragment in lines[0], stderr
    assert not (tmp_path / "o.npz").exists()
