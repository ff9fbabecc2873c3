"""A campaign's runs on several machines, through Dask distributed: `edgestage campaign ...
--cluster tcp://SCHEDULER:8786` (a lab's machines) or `--cluster local:N` (N workers on this
machine).

    table = run_campaign_on_cluster(plan_campaign("scenarios/smoke.toml", repetitions=4),
                                    "runs/c", "tcp://10.0.0.1:8786")

Why Dask: its workers are plain Python processes started with one command on each machine
(`dask scheduler`, `dask worker`), it installs from PyPI with no service of its own, and its worker
resources say exactly "one emulated network per machine at a time": each worker is started with
`--resources network=1` and every run asks for `network=1`, so the scheduler gives a machine's
worker its next run only when its last is done, and never sends a run to a worker that offers no
network.  Ray would do as well; it brings a much larger runtime for what is one task per run here.

Each run is one task: on its worker it runs in a process of its own (`python -m
emulation.campaign_cluster`, which calls emulation/runner.py's run_scenario, as `edgestage run`
does), which dies with its worker (PR_SET_PDEATHSIG: SIGTERM, on which the run unwinds and takes
its network down).  Its run directory is written under the worker's /tmp, sent back as a gzipped
tar and unpacked into OUT/<name> here; the worker's copy is removed.  Two workers on one machine
still run one network at a time: they take turns on a Dask lock named after the machine before a
run's process starts, and the runner's machine lock (emulation/guard.py) holds in any case.

What is the same as on one machine (emulation/campaign.py): the plan, the seeds, the index and
campaign.json (rewritten after each run), resuming, a run that overran running once more, a run
that fails stopping the campaign (the runs in flight on other machines finish, and are dropped).
What differs: one K for the campaign, the largest that `auto` measures on any of the machines
(each machine measured once, by one of its workers, before the first run); the order in which runs
finish; and the machine each ran on (its manifest's `host`, and a line as each run is done).

The scheduler, every worker and this command need the same edgestage commit (checked: a worker of
another commit or version is refused with one line), installed with `make setup`, run as root,
and started from the repository root (scenarios name their files relative to it).
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from emulation.campaign import (
    ATTEMPTS,
    Campaign,
    completed_runs,
    overrun_note,
    run_status,
    set_aside,
    stored_dilation,
    stored_index,
    write_index,
)

if TYPE_CHECKING:
    from distributed import Client

    from emulation.dilation import Dilation
    from emulation.scenario import Scenario

RESOURCE = "network"  # the worker resource a run takes: one per machine
CONNECT_TIMEOUT_S = 20


@dataclass(frozen=True)
class MemberResult:
    """What a run's task sends back: where it ran, how its process ended, its run directory."""

    name: str
    host: str
    returncode: int
    archive: bytes  # the run directory as a gzipped tar (empty if it made none)
    stderr_tail: str


def parse_cluster(value: str) -> str | int:
    """`--cluster`: a scheduler address (tcp://host:port) as given, or `local:N` as the number N
    of workers to start on this machine.  ValueError (one line) otherwise."""
    if value.startswith("local:"):
        count = value.removeprefix("local:")
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"--cluster {value}: local:N needs a positive number of workers")
        return int(count)
    if value.startswith(("tcp://", "tls://")) and ":" in value.split("://", 1)[1]:
        return value
    raise ValueError(f"--cluster {value}: give a scheduler address tcp://HOST:PORT or local:N")


@contextlib.contextmanager
def connect(cluster: str | int) -> Iterator[Client]:
    """A client of the scheduler at the address, or of N local workers started here (each one
    thread, `network=1`), closed (and the local workers stopped) on the way out."""
    import logging

    from distributed import Client, LocalCluster

    if isinstance(cluster, int):
        # the scheduler runs in this process: its INFO lines (each worker and client come and
        # go) would bury the campaign's own; -v (the root logger at DEBUG) keeps them
        if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
            logging.getLogger("distributed").setLevel(logging.WARNING)
        with LocalCluster(n_workers=cluster, threads_per_worker=1, processes=True,
                          resources={RESOURCE: 1}, dashboard_address=None,
                          silence_logs=logging.CRITICAL) as local, Client(local) as client:
            yield client
        return
    try:
        client = Client(cluster, timeout=f"{CONNECT_TIMEOUT_S}s")
    except OSError as exc:
        raise ValueError(f"--cluster {cluster}: no scheduler answered ({exc})") from None
    with client:
        yield client


def check_workers(client: Client) -> dict[str, list[str]]:
    """Host -> its workers' addresses, of the workers that offer a network; ValueError (one
    line) where none does, or a worker runs another edgestage or not as root."""
    from emulation.provenance import edgestage_version, git_commit

    info = client.scheduler_info()["workers"]
    able = {addr: w for addr, w in info.items() if (w.get("resources") or {}).get(RESOURCE, 0) >= 1}
    if not able:
        raise ValueError(f"the cluster's {len(info)} workers offer no '{RESOURCE}' resource: start one "
                         f"worker per machine with `dask worker SCHEDULER --nthreads 1 --resources "
                         f"{RESOURCE}=1`")
    ours = (edgestage_version(), git_commit())
    for addr, (version, commit, root) in client.run(_identity, workers=list(able)).items():
        if (version, commit) != ours:
            raise ValueError(f"worker {addr} runs edgestage {version} at commit {commit}, this command "
                             f"{ours[0]} at {ours[1]}: the same commit everywhere")
        if not root:
            raise ValueError(f"worker {addr} does not run as root (a run needs root)")
    hosts: dict[str, list[str]] = {}
    for addr, w in sorted(able.items()):
        hosts.setdefault(w.get("host") or addr, []).append(addr)
    return hosts


def _identity() -> tuple[str | None, str | None, bool]:
    from emulation.provenance import edgestage_version, git_commit

    return edgestage_version(), git_commit(), os.geteuid() == 0


def cluster_dilation(client: Client, hosts: dict[str, list[str]],
                     scenarios: list[Scenario]) -> Dilation | None:
    """The campaign's one K: each machine measures (emulation/variants.py shared_dilation, by
    one of its workers, taking its network slot so that nothing else runs there meanwhile), and
    the largest K counts; None where the runs set different `run.time_dilation`."""
    import dataclasses

    from emulation.variants import shared_dilation

    futures = {host: client.submit(shared_dilation, scenarios, workers=addrs, resources={RESOURCE: 1},
                                   pure=False, key=f"edgestage-dilation-{host}")
               for host, addrs in hosts.items()}
    chosen = {host: f.result() for host, f in futures.items()}
    if any(d is None for d in chosen.values()):
        return None
    worst_host, worst = max(chosen.items(), key=lambda item: item[1].k)
    if len(chosen) > 1:
        each = ", ".join(f"{h} K = {d.k:g}" for h, d in chosen.items())
        worst = dataclasses.replace(worst, how=f"{worst.how} on {worst_host}, the largest of {len(chosen)} "
                                    f"machines ({each})")
    return worst


def run_campaign_on_cluster(campaign: Campaign, out_dir: str | Path, cluster: str | int, quality: bool = True,
                            progress: bool = True, on_run: Callable[[str, Path], None] | None = None,
                            clock: Callable[[], float] = time.monotonic) -> pd.DataFrame:
    """Run every run of `campaign` not yet completed in OUT on the cluster (parse_cluster's
    value); the rows of OUT/index.csv, as emulation/campaign.py's run_campaign gives them."""
    from distributed import as_completed

    from emulation.variants import format_duration

    out = Path(out_dir)
    done = completed_runs(campaign, out)  # OUT holding another campaign: ValueError
    dilation, how = stored_dilation(stored_index(out))
    runs = {r.name: r.scenario for r in campaign.runs}
    todo = [name for name in runs if name not in done]
    with connect(cluster) as client:
        hosts = check_workers(client)
        if dilation is None and how is None:
            dilation = cluster_dilation(client, hosts, list(runs.values()))
            how = dilation.how if dilation else "each run its own: the grid sets run.time_dilation"
        out.mkdir(parents=True, exist_ok=True)
        shared = {"time_dilation": dilation.k if dilation else None, "how": how}
        write_index(campaign, out, **shared)
        attempts = dict.fromkeys(todo, 0)

        def submit(name: str) -> Any:
            if run_status(out / name) == "overran":
                aside = set_aside(out, name)
                if progress:
                    print(overrun_note(name, aside), file=sys.stderr, flush=True)
            shutil.rmtree(out / name, ignore_errors=True)  # a partial directory of an earlier try
            attempts[name] += 1
            return client.submit(run_member, name, runs[name], dilation, quality, resources={RESOURCE: 1},
                                 pure=False, key=f"edgestage-run-{name}-{attempts[name]}")

        pending = as_completed([submit(name) for name in todo])
        started, finished = clock(), 0
        try:
            for future in pending:
                result: MemberResult = future.result()
                _unpack(result, out)
                write_index(campaign, out, **shared)
                if result.returncode != 0:
                    raise RuntimeError(f"run {result.name} failed on {result.host} (exit "
                                       f"{result.returncode}): {result.stderr_tail}")
                if run_status(out / result.name) == "overran" and attempts[result.name] < ATTEMPTS:
                    pending.add(submit(result.name))
                    continue
                finished += 1
                if progress:
                    left = (clock() - started) / finished * (len(todo) - finished)
                    print(f"run {finished} of {len(todo)} done: {result.name} on {result.host}"
                          f"{f' ({format_duration(left)} left)' if finished < len(todo) else ''}",
                          file=sys.stderr, flush=True)
                if on_run:
                    on_run(result.name, out / result.name)
        finally:
            for future in pending.futures:
                future.cancel()
            write_index(campaign, out, **shared)
    return pd.read_csv(out / "index.csv")


def _unpack(result: MemberResult, out: Path) -> None:
    """The run directory into OUT/<name>, whole or not at all (unpacked beside it, then renamed)."""
    if not result.archive:
        return
    partial = out / f".incoming-{result.name}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    with tarfile.open(fileobj=io.BytesIO(result.archive), mode="r:gz") as tar:
        tar.extractall(partial, filter="data")
    shutil.rmtree(out / result.name, ignore_errors=True)
    os.replace(partial / result.name, out / result.name)
    partial.rmdir()


def run_member(name: str, scenario: Scenario, dilation: Dilation | None, quality: bool) -> MemberResult:
    """One run, on the worker that calls it: in a process of its own, into a directory under
    /tmp sent back as a gzipped tar and then removed."""
    from distributed import Lock

    # workers sharing a machine take turns before the run's process starts: the runner's machine
    # lock would keep their networks apart too, but not the start-up of a process waiting on it
    # (imports, model loading), which would take CPU from the run in progress
    with Lock(f"edgestage-network-{socket.gethostname()}"):
        return _run_process(name, scenario, dilation, quality)


def _run_process(name: str, scenario: Scenario, dilation: Dilation | None, quality: bool) -> MemberResult:
    work = Path(tempfile.mkdtemp(prefix="edgestage-run-"))
    try:
        spec = work / "member.pickle"
        spec.write_bytes(pickle.dumps((scenario, dilation, quality)))
        run_dir = work / name
        proc = subprocess.run([sys.executable, "-m", "emulation.campaign_cluster", str(spec), str(run_dir),
                               str(os.getpid())], capture_output=True, text=True)
        archive = _archive(run_dir, name) if run_dir.is_dir() else b""
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        return MemberResult(name, socket.gethostname(), proc.returncode, archive, tail)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _archive(run_dir: Path, name: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        tar.add(run_dir, arcname=name)
    return buffer.getvalue()


def _die_with(parent: int) -> None:
    """SIGTERM to this process when the worker that started it ends (however it ends)."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:  # it ended before the line above
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str]) -> int:
    """`python -m emulation.campaign_cluster SPEC RUN_DIR WORKER_PID`: the run of run_member."""
    from emulation.guard import install_handlers

    install_handlers()
    spec, run_dir, parent = argv
    _die_with(int(parent))
    scenario, dilation, quality = pickle.loads(Path(spec).read_bytes())
    from emulation.runner import run_scenario

    run_scenario(scenario, run_dir, progress=False, quality=quality, dilation=dilation)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
