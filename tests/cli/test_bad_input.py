"""Bad input, as a user gives it, through the real command: one line on stderr naming the problem,
exit 2, nothing written (issue 9, defects 7-9).  Ctrl-C early in a command: one line, exit 130."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from nodes.diffusion.model_zoo import PRETRAINED_DIR

REPO = Path(__file__).resolve().parents[2]
EDGESTAGE = [sys.executable, "-m", "emulation.cli"]
SMOKE = (REPO / "scenarios" / "smoke.toml").read_text()
DEPLOY = (REPO / "scenarios" / "deploy-loopback.toml").read_text()


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*EDGESTAGE, *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd or REPO)


@pytest.fixture(scope="module")
def pool():
    """Runs commands side by side, for the families of cases below: each case is still its own fresh
    `edgestage` process, but most of its time is the interpreter importing torch on one core, so
    on N cores N of them take about the time of one.  Each test waits for its own case only."""
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as executor:
        yield executor


def started(pool: ThreadPoolExecutor, root: Path, args: list[str]) -> Future:
    """`edgestage ARGS` started in the pool; its future gives (the finished process, the listing
    of root before it started, the listing after it ended)."""
    before = listing(root)

    def one() -> tuple[subprocess.CompletedProcess, set[str], set[str]]:
        done = run(*args)
        return done, before, listing(root)

    return pool.submit(one)


def good_samples() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"images": rng.uniform(-1, 1, (4, 1, 16, 16)).astype(np.float32),
            "labels": np.arange(4, dtype=np.int64), "plan": np.array("small:0-10"),
            "seed": np.array(0, dtype=np.int64), "scheduler": np.array("dpm"),
            "steps": np.array(10, dtype=np.int64)}


def samples_file(path: Path, **changes: np.ndarray) -> Path:
    np.savez(path, **{**good_samples(), **changes})
    return path


def crc_corrupt(path: Path) -> Path:
    """A valid archive with one byte of the images' data flipped: the zip's CRC no longer holds."""
    samples_file(path)
    raw = bytearray(path.read_bytes())
    at = raw.find(b"images.npy") + 400  # inside the images member's data, past its npy header
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))
    return path


def truncated(path: Path) -> Path:
    samples_file(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def npy_named_npz(path: Path) -> Path:
    with path.open("wb") as handle:  # np.save to a handle keeps the name
        np.save(handle, good_samples()["images"])
    return path


def garbage_model(path: Path) -> Path:
    """A copy of the small model whose config.json is not JSON."""
    shutil.copytree(PRETRAINED_DIR / "small", path)
    (path / "config.json").write_text("{ this is : not json")
    return path


def scenario(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# name -> (how to make the input under tmp, the command's arguments given that input, needle)
SAMPLES_CASES = {
    "truncated npz": (truncated, lambda f, d: ["quality", f], "not a readable .npz"),
    "crc-corrupt npz": (crc_corrupt, lambda f, d: ["quality", f], "images does not read"),
    "npy named npz": (npy_named_npz, lambda f, d: ["quality", f], "single .npy array"),
    "wrong image shape": (lambda p: samples_file(p, images=np.zeros((4, 3, 8, 8), np.float32)),
                          lambda f, d: ["quality", f], "images must be N x 1 x 16 x 16"),
    "nan images": (lambda p: samples_file(p, images=np.full((4, 1, 16, 16), np.nan, np.float32)),
                   lambda f, d: ["quality", f], "1024 image values are NaN or infinite"),
    "labels outside 0-9": (lambda p: samples_file(p, labels=np.array([0, 1, 2, 12])),
                           lambda f, d: ["quality", f], "labels must lie in 0-9"),
    "replay truncated": (truncated, lambda f, d: ["generate", "--replay", f, "--out", f"{d}/o.npz"],
                         "not a readable .npz"),
    "replay wrong shape": (lambda p: samples_file(p, images=np.zeros((4, 1, 28, 28), np.float32)),
                           lambda f, d: ["generate", "--replay", f, "--out", f"{d}/o.npz"],
                           "images must be N x 1 x 16 x 16"),
}

ARGUMENT_CASES = {
    "seed -1": (["generate", "--plan", "small:0-10", "--steps", "10", "--seed", "-1"], "--seed"),
    "seed 2**70": (["generate", "--plan", "small:0-10", "--steps", "10", "--seed", str(2**70)],
                   "0 to 2**63 - 1"),
    "plan with a host": (["generate", "--plan", "small:0-10@nohost", "--steps", "10"],
                         "@nohost means nothing here"),
    "n above the cap": (["generate", "--plan", "small:0-10", "--steps", "10", "--n", str(10**9)],
                        "at most 100,000 images"),
    "steps above the schedule": (["generate", "--plan", "small:0-2000", "--steps", "2000"],
                                 "at most 1000"),
    "out under a file": (["generate", "--plan", "small:0-10", "--steps", "10", "--out",
                          "{tmp}/a-file/x.npz"], "is not a directory"),
    "out in /proc": (["generate", "--plan", "small:0-10", "--steps", "10", "--out",
                      "/proc/edgestage-x.npz"], "cannot create a file in /proc"),
    "bench repeats 0": (["bench", "models", "--repeats", "0"], "must be positive"),
    "deploy timeout nan": (["deploy", "{tmp}/deploy.toml", "--all", "--timeout", "nan"],
                           "positive finite number"),
}



def with_elastic(fields: str) -> str:
    """The smoke scenario with an elastic strategy `el` of these fields."""
    return SMOKE.replace("[generation]", f'[strategies.el]\nkind = "elastic"\n{fields}\n[generation]')


SCENARIO_CASES = {  # (text of the scenario, needle); every one through `run --check`
    "requests as a string": (SMOKE.replace("requests = 8 ", 'requests = "8" '),
                             ":56: workload.requests: Input should be a valid integer (got '8'"),
    "bw as a boolean": (SMOKE.replace("bw_mbit = 20\n", "bw_mbit = true\n", 1),
                        ":9: topology.devices[0].bw_mbit: Input should be a valid number (got True"),
    "old link name": (SMOKE.replace("bw_mbit = 20\n", "bw = 20\n", 1),
                      "topology.devices[0]: `bw` is now `bw_mbit` (a number)"),
    "nan interval": (SMOKE.replace("interval_s = 0.5", "interval_s = nan"),
                     ":58: workload.interval_s: Input should be a finite number (got nan"),
    "unknown model": (SMOKE.replace('models = ["medium"]', 'models = ["huge"]'),
                      ":48: nodes.edge.models[0]:"),
    "garbage model config": (SMOKE.replace('models = ["medium"]', 'models = ["{tmp}/garbage"]'),
                             "config.json is not JSON"),
    "labels outside 0-9": (SMOKE.replace('labels = "cycle"', "labels = [1, 12]"),
                           "workload.labels: labels must be"),
    "dilation below 1": (SMOKE + "time_dilation = 0.5\n",
                         ':88: run.time_dilation: must be a number in 1..1000 or "auto" (got 0.5)'),
    "dilation not a number": (SMOKE + 'time_dilation = "fast"\n',
                              ":88: run.time_dilation: must be a number in 1..1000 or \"auto\" (got 'fast')"),
    "native beside profiled, dilated": (
        SMOKE.replace('compute = "native"', 'compute = "profiled"\nhardware = "datacenter_gpu"', 1)
        + "time_dilation = 10\n",
        "run.time_dilation: nodes.device, nodes.edge native beside profiled hosts"),
    "profile without power figures": (
        SMOKE.replace('compute = "native"', 'compute = "profiled"\nhardware = "datacenter_gpu"')
        .replace("[nodes.cloud]", '[nodes]\nprofiles_file = "{tmp}/no-power.toml"\n[nodes.cloud]', 1),
        "nodes.cloud.hardware: hardware 'datacenter_gpu' has no busy_w/idle_w in"),
    "radio that does not exist": (SMOKE.replace('name = "d1"\n', 'name = "d1"\nradio = "pigeon"\n', 1),
                                  ":9: topology.devices[0].radio: Input should be 'wifi', 'lte' or '5g'"),
    "unknown objective": (with_elastic('objective = "cheapest"\n'),
                          "strategies.el.objective: Input should be 'latency', 'quality' or 'energy'"),
    "floor no plan meets": (with_elastic("min_class_accuracy = 0.99\n"),
                            "strategies.el: no plan the hosts' models can run meets the floor (class "
                            "accuracy >= 0.99)"),
    "no quality table": (with_elastic("").replace("steps = 10", "steps = 7"),
                         "strategies.el: no quality table for dpm/7 steps: "
                         "nodes/pretrained/quality-table/dpm-7.csv (make it with: edgestage quality-table "
                         "--scheduler dpm --steps 7)"),
    "a model with an elastic strategy": (with_elastic('model = "small"\n'),
                                         "elastic chooses its plans: it takes no 'model' or 'split'"),
}


def assert_bad_input(done: subprocess.CompletedProcess, needle: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("edgestage: error:") and needle in lines[0], lines[0]
    assert "Traceback" not in done.stderr + done.stdout


def listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def samples_runs(pool, tmp_path_factory) -> dict[str, Future]:
    """Every case of SAMPLES_CASES, in a folder of its own, started at once."""
    runs = {}
    for case, (make, args, _needle) in SAMPLES_CASES.items():
        tmp = tmp_path_factory.mktemp("samples")
        given = make(tmp / "in.npz")
        runs[case] = started(pool, tmp, args(str(given), str(tmp)))
    return runs


@pytest.mark.parametrize("case", SAMPLES_CASES, ids=list(SAMPLES_CASES))
def test_bad_samples_files(samples_runs, case):
    needle = SAMPLES_CASES[case][2]
    done, before, after = samples_runs[case].result()
    assert_bad_input(done, needle)
    assert after == before


@pytest.fixture(scope="module")
def argument_runs(pool, tmp_path_factory) -> dict[str, Future]:
    """Every case of ARGUMENT_CASES, in a folder of its own, started at once."""
    runs = {}
    for case, (args, _needle) in ARGUMENT_CASES.items():
        tmp = tmp_path_factory.mktemp("arguments")
        (tmp / "a-file").write_text("a file, not a folder")
        (tmp / "deploy.toml").write_text(DEPLOY)
        args = [a.replace("{tmp}", str(tmp)) for a in args]
        if args[0] == "generate" and "--out" not in args:
            args += ["--out", str(tmp / "out.npz")]
        runs[case] = started(pool, tmp, args)
    return runs


@pytest.mark.parametrize("case", ARGUMENT_CASES, ids=list(ARGUMENT_CASES))
def test_bad_arguments(argument_runs, case):
    needle = ARGUMENT_CASES[case][1]
    done, before, after = argument_runs[case].result()
    assert_bad_input(done, needle)
    assert after == before
    assert not list(Path("/proc").glob(".edgestage-probe-*"))


@pytest.mark.parametrize("case", SCENARIO_CASES, ids=list(SCENARIO_CASES))
def test_bad_scenarios_name_the_file_line_and_field(tmp_path, case):
    text, needle = SCENARIO_CASES[case]
    garbage_model(tmp_path / "garbage")
    profiles = (REPO / "nodes" / "profiles.toml").read_text().splitlines()
    (tmp_path / "no-power.toml").write_text("\n".join(line for line in profiles
                                                     if not line.startswith(("busy_w", "idle_w"))))
    path = scenario(tmp_path / "bad.toml", text.replace("{tmp}", str(tmp_path)))
    assert_bad_input(run("run", str(path), "--check"), f"{path}{needle}" if needle[0] == ":" else needle)


def test_the_smoke_scenario_itself_passes_the_check():
    done = run("run", "scenarios/smoke.toml", "--check")
    assert done.returncode == 0, done.stderr


def test_a_binary_scenario_file_is_named(tmp_path):
    path = tmp_path / "model.toml"
    path.write_bytes((PRETRAINED_DIR / "small" / "diffusion_pytorch_model.safetensors").read_bytes()[:4096])
    assert_bad_input(run("run", str(path), "--check"), f"{path}: not a text file")
    assert_bad_input(run("calibrate", str(path)), f"{path}: not a text file")


def test_calibrate_names_file_and_line(tmp_path):
    path = scenario(tmp_path / "bad.toml", SMOKE.replace('delay_ms = 15', 'delay_ms = "15 parsecs"'))
    assert_bad_input(run("calibrate", str(path)),
                     f"{path}:15: topology.devices[1].delay_ms: Input should be a valid number")


def test_deploy_check_refuses_an_address_that_is_not_one(tmp_path):
    path = scenario(tmp_path / "deploy.toml", DEPLOY.replace("127.0.0.1:56002", "999.999.999.999:56002"))
    assert_bad_input(run("deploy", str(path), "--check"), "999.999.999.999 is not an IPv4 address")


def test_report_of_a_summary_that_is_not_an_object(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps([1, 2, 3]))
    assert_bad_input(run("report", str(tmp_path)), "summary.json")
    assert listing(tmp_path) == {"summary.json"}  # no empty plots/


@pytest.mark.root  # run checks --out after it checks for root
@pytest.mark.parametrize(("out", "needle"), [("{tmp}/a-file/run", "is not a directory"),
                                             ("/proc/edgestage-run", "a kernel file system")])
def test_run_out_that_cannot_be_a_run_directory(tmp_path, out, needle):
    (tmp_path / "a-file").write_text("a file")
    done = run("run", "scenarios/smoke.toml", "--quiet", "--out", out.replace("{tmp}", str(tmp_path)))
    assert_bad_input(done, needle)
    assert listing(tmp_path) == {"a-file"}


@pytest.mark.parametrize("after_s", [0.15, 0.3, 1.0, 2.5])  # imports, parsing, the model
def test_ctrl_c_early_is_one_line_and_exit_130(tmp_path, after_s):
    out = tmp_path / "s.npz"
    # a shell's background job starts with SIGINT ignored, and Python keeps it so: give the
    # command the default disposition a terminal's Ctrl-C meets
    proc = subprocess.Popen([*EDGESTAGE, "generate", "--plan", "large:0-50", "--n", "64",
                             "--out", str(out)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        time.sleep(after_s)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # it did not stop: fail, leaving nothing running
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines() == ["edgestage: interrupted"], stderr
    assert list(tmp_path.iterdir()) == []
