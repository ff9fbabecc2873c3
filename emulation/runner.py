"""The experiment runner: a scenario in, a run directory out.

    result = run_scenario(load_scenario("scenarios/smoke.toml"), "runs/smoke")
    result.requests      # requests.parquet: one row per request per stage
    result.traffic       # traffic.parquet: bytes and packets per link, flow and message
    result.summary       # summary.json: per-strategy aggregates and the accuracy headline
    result.accuracy      # accuracy.json: transfer-time ratios, latency parts, wire overhead

Order: check (root, output directory) -> network up (emulation/network.py) -> capture
(emulation/capture.py) -> node processes (emulation/node_procs.py: infrastructure first, then
devices, on a clock whose first request is far enough ahead for them to start) -> the devices
drive the workload
(emulation/workload.py: all strategies interleaved) while a progress bar follows the records
files -> all requests recorded, or the run's timeout -> nodes stopped (SIGTERM: devices record
what is unfinished as failed) -> capture stopped -> network down -> run directory written
(requests.parquet, traffic.parquet, summary.json, accuracy figures, manifest.json).

A request nobody recorded (its device's node died, or the run timed out or was interrupted
before it was sent) is recorded by the runner as failed with the reason.  The per-device records
files are the durable source (analysis/run_tables.py): `requests.parquet` is rewritten from them
while the run goes and once more at the end, also after Ctrl-C or SIGTERM; after a SIGKILL,
`edgestage report RUN_DIR` rebuilds it.  Every run that got as far as its workload ends with
`summary.json`, its report and a final status in the manifest, also one in which every request
failed or that was interrupted.

The run's clock (nodes/clock.py): t = 0 is the first measured request; warm-ups go at t < 0;
link events, traces and the channel model count from the same t = 0, not from the network coming
up, so an event hits the requests its time says whatever start-up and warm-up took; an event
after the last measured request is sent is warned about (it may hit nothing measured).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from analysis.pipeline import Finished, finish_run_dir, json_default, requests_table
from analysis.run_tables import requests_frame, run_clock, unrecorded_failures
from emulation.cgroups import process_start
from emulation.dilation import Dilation, choose_dilation
from emulation.provenance import checksums
from emulation.provenance import versions as provenance_versions
from emulation.scenario import Scenario
from emulation.workload import by_device, plan_workload
from nodes.clock import Clock
from nodes.planning.request import Request
from nodes.progress import progress_bar
from nodes.runtime.launcher import NodeLauncher
from nodes.runtime.local_cluster import NodeProcess, stop_all, wait_ready
from nodes.runtime.memory import nodes_memory
from nodes.runtime.records import RecordWriter

if TYPE_CHECKING:
    from emulation.network import EmulatedNetwork

log = logging.getLogger(__name__)
RUNNER_RECORDS = "_runner.jsonl"  # the runner's own failed rows, beside the devices' files
PARQUET_EVERY_S = 5.0
MIN_T0_MARGIN_S = 1.5  # wall seconds from the devices starting to the first request, at least


@dataclass
class RunResult:
    run_dir: Path
    requests: pd.DataFrame
    traffic: pd.DataFrame
    summary: dict[str, Any]
    manifest: dict[str, Any]
    accuracy: dict[str, Any] = field(default_factory=dict)
    planned: list[Request] = field(default_factory=list)


def default_out_dir(scenario: Scenario) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{scenario.name or 'scenario'}-{stamp}"


def check_can_run(out_dir: Path) -> None:
    """What must hold before anything is created; ValueError (one line) otherwise."""
    if os.geteuid() != 0:
        raise ValueError("run needs root (network namespaces, qdiscs, cgroups): use sudo")
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir}: exists and is not a directory")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"--out {out_dir}: exists and is not empty (choose a new directory)")
    parent = next((p for p in out_dir.absolute().parents if p.exists()), Path("/"))
    if not parent.is_dir():
        raise ValueError(f"--out {out_dir}: {parent} is not a directory")
    if parent.resolve().parts[1:2] in (("proc",), ("sys",), ("dev",)):
        raise ValueError(f"--out {out_dir}: under {parent.resolve()}, a kernel file system")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out_dir}: cannot create it under {parent} (not writable)")


def make_run_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--out {out_dir}: cannot create it ({exc.strerror})") from None


During = Callable[["EmulatedNetwork", Path], None]


def run_scenario(scenario: Scenario, out_dir: str | Path | None = None, progress: bool = True,
                 quality: bool = True, during: During | None = None,
                 on_finish: Callable[[RunResult], None] | None = None,
                 dilation: Dilation | None = None) -> RunResult:
    """Run a validated scenario; returns the run's tables. Raises ValueError before starting if the
    run cannot start (not root, output directory in use).

    `during(net, run_dir)`, if given, runs in a thread from the first request's time (a warm-up's)
    while the workload goes: a script
    of what happens to the network mid-run (`net.set_link`, `net.link_down`, `net.popen` of a
    traffic source ...; not `net.cmd`, which belongs to the main thread).  The run waits for it
    before stopping the nodes; an exception it raises is logged and goes into the manifest.

    `on_finish(result)`, if given, is called once the run directory is complete, also for a run
    that was interrupted or failed (before the exception goes on): the CLI prints its table there.

    `dilation`: the time dilation, as `emulation.dilation.choose_dilation(scenario)` gives it
    (which is called here if it is not given; "auto" measures the models' steps first)."""
    out = Path(out_dir) if out_dir is not None else default_out_dir(scenario)
    check_can_run(out)
    dilation = dilation or choose_dilation(scenario)
    make_run_dir(out)
    run = _Run(scenario, out.resolve(), progress, during, dilation)
    try:
        run.execute()
    except BaseException as exc:
        run.status = "interrupted" if isinstance(exc, KeyboardInterrupt | SystemExit) else "failed"
        run.error = f"{type(exc).__name__}: {exc}"
        try:
            result = run.finish(quality=False, traffic=False)
            if on_finish:
                on_finish(result)
        except Exception:  # the first exception is the one to report; this one is logged
            log.exception("finishing the %s run failed", run.status)
        raise
    result = run.finish(quality=quality, traffic=scenario.capture.enabled)
    if on_finish:
        on_finish(result)
    return result


def finish_killed_run(run_dir: str | Path, quality: bool = True) -> RunResult:
    """Finish a run whose runner died without finishing it (SIGKILL, a crash): requests without a
    record become failed rows that say so, then the end-of-run pipeline (analysis/pipeline.py),
    and status `killed` in the manifest.  ValueError if it is not such a run."""
    d = Path(run_dir).resolve()
    try:
        manifest = json.loads((d / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{d}: no readable manifest.json ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("status") != "running":
        raise ValueError(f"{d}: not an unfinished run")
    runner = manifest.get("runner") or {}
    if runner.get("pid") and process_start(runner["pid"]) == runner.get("start_ticks"):
        raise ValueError(f"{d}: the run is still going (runner pid {runner['pid']})")
    clock = run_clock(manifest)
    seen = set(requests_frame(d, [], clock)["request_id"])
    generation = (manifest.get("scenario") or {}).get("generation") or {}
    planned = [Request(**row) for row in manifest.get("workload") or []]
    rows = unrecorded_failures(seen, planned, generation.get("scheduler", "dpm"),
                               generation.get("steps", 0), clock,
                               "the run was killed before this request was recorded")
    if rows:
        RecordWriter(d / "records" / RUNNER_RECORDS).write(rows)
    manifest.update(status="killed",
                    error="the runner ended without finishing the run; finished by finish_killed_run")
    _write_json_atomic(d / "manifest.json", manifest)
    capture = ((manifest.get("scenario") or {}).get("capture") or {}).get("enabled", True)
    finished = finish_run_dir(d, manifest, quality=quality, traffic=capture)
    _record_finish(manifest, finished)
    _write_json_atomic(d / "manifest.json", manifest)
    return RunResult(d, finished.requests, finished.traffic, finished.summary, manifest, finished.accuracy,
                     planned)


def _record_finish(manifest: dict[str, Any], finished: Finished) -> None:
    manifest.setdefault("timings", {}).update(finished.timings)
    if finished.errors:
        manifest.setdefault("finish_errors", {}).update(finished.errors)


def _write_json_atomic(path: Path, document: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(document, indent=1, default=json_default))
    os.replace(tmp, path)


class _Run:
    def __init__(self, scenario: Scenario, run_dir: Path, progress: bool,
                 during: During | None = None, dilation: Dilation | None = None) -> None:
        self.scenario = scenario
        self.dilation = dilation or Dilation(1.0, "none given")
        self.k = self.dilation.k
        self.during = during
        self.run_dir = run_dir
        self.progress = progress
        self.status = "running"
        self.error: str | None = None
        self.planned: list[Request] = []
        self.manifest: dict[str, Any] = {}
        self.timings: dict[str, float] = {}
        self.handles: list[NodeProcess] = []
        self.cpu_limited: set[str] = set()  # hosts whose node was moved into its CPU group
        self.capture = None
        self.net_manifest: dict[str, Any] = {}
        self.began = time.monotonic()
        self.clock = Clock(dilation=self.k)  # its origin once the devices' start is known
        self._seen: set[str] = set()
        self._offsets: dict[Path, int] = {}
        self.memory: dict[str, Any] = {}
        self.warnings: list[str] = []
        self.launcher: NodeLauncher | None = None
        self._runner_writer: RecordWriter | None = None
        self._last_parquet = 0.0

    # ---- the run -------------------------------------------------------------------------------

    def execute(self) -> None:
        from emulation.network import EmulatedNetwork
        from emulation.node_procs import node_hosts

        sc = self.scenario
        self._write_manifest()
        # the launcher imports torch and diffusers while the network comes up; it outlives the
        # network, but every node it forked is stopped before the network goes down
        launcher = self.launcher = NodeLauncher(self.run_dir)
        with launcher, EmulatedNetwork(sc.topology, run_dir=self.run_dir, hold_dynamics=True,
                                       dilation=self.k) as net:
            self.timings["network_up_s"] = round(time.monotonic() - self.began, 3)
            self.net_manifest = net.manifest()
            hosts = node_hosts(net)
            devices = [h for h, role in hosts.items() if role == "device"]
            self.planned = plan_workload(sc.workload, devices, sc.strategy_names(), sc.run.repetitions)
            self._warn_outside_window()
            self._write_manifest()
            try:
                self._start_nodes(net, launcher, hosts)
                script = None
                if self.during is not None:
                    script = threading.Thread(target=self._run_during, args=(net,), name="during",
                                              daemon=True)
                    script.start()
                self._drive()
                if script is not None:
                    script.join(timeout=sc.run.timeout_s)
            finally:
                self._measure_memory(launcher)
                self.manifest["memory"] = self.memory
                exit_codes = stop_all(self.handles)
                self.manifest["node_exit_codes"] = exit_codes
                if self.capture is not None:
                    self.capture.stop()
                self.manifest["capture"] = self.capture.manifest() if self.capture else []
                self._node_statuses()
                self.manifest["launcher"] = {"pid": launcher.pid, "import_s": launcher.import_s}
        self.timings["run_s"] = round(time.monotonic() - self.began, 3)
        self.status = "completed"

    def _start_nodes(self, net: EmulatedNetwork, launcher: NodeLauncher, hosts: dict[str, str]) -> None:
        """Capture first, then the infrastructure nodes (the slow ones: bigger models), then the
        devices, on a clock whose origin is set from how long the infrastructure took to start."""
        from emulation.capture import Capture
        from emulation.node_procs import build_configs, start_in_host

        sc = self.scenario
        devices = [h for h, role in hosts.items() if role == "device"]
        infra = [h for h, role in hosts.items() if role != "device"]
        launcher.wait_ready()
        self.timings["launcher_ready_s"] = round(time.monotonic() - self.began, 3)
        if sc.capture.enabled:  # before any node starts: a node connects to its peers at once, and
            # traffic analysis places a stream's bytes from its SYN on
            self.capture = Capture(net, self.run_dir / "pcap", sc.capture.snaplen)
            self.capture.start()
        started = time.monotonic()
        configs = build_configs(sc, net, self.run_dir, {}, self.clock)
        def into_cpu_group(node: NodeProcess) -> None:
            # start-up (loading weights) is outside the host's CPU share; the run is inside it
            limiter = net.limiter
            if limiter is not None and node.host in limiter.hosts and node.pid is not None:
                limiter.add(node.host, node.pid)  # cgroup.procs moves every thread of the process
                self.cpu_limited.add(node.host)

        self.handles = [start_in_host(net, launcher, configs[h]) for h in infra]
        wait_ready(self.handles, sc.run.ready_timeout_s, on_ready=into_cpu_group)
        infra_s = time.monotonic() - started
        # devices start together on the same CPUs: scale what the infrastructure took by how
        # many more processes start now, with room to spare (a late device sends late, and the
        # manifest says by how much).  Nodes fork from the launcher with torch loaded, so the
        # infrastructure is ready in a fraction of a second: the floor is not what it takes
        margin = max(MIN_T0_MARGIN_S, 2.0 * infra_s * max(1.0, len(devices) / max(1, len(infra))))
        self.timings["infra_ready_s"] = round(infra_s, 3)
        self.timings["t0_margin_s"] = round(margin, 3)
        # the first request (a warm-up, at t < 0) goes `margin` wall seconds from now
        self.clock = Clock(wall_origin=time.time() + margin - self.first_at_s() * self.k, dilation=self.k)
        net.start_clock(self.clock)
        self.manifest["clock"] = {
            "wall_origin": self.clock.wall_origin, **self.dilation.manifest(),
            "note": "t = 0 at wall_origin: the first measured request (warm-up requests go before it, "
                    "at t < 0); link events, traces and the channel model count from it; every time is "
                    "emulated seconds unless its name starts with wall_ (nodes/clock.py)"}
        configs = build_configs(sc, net, self.run_dir, by_device(self.planned), self.clock)
        device_handles = [start_in_host(net, launcher, configs[h]) for h in devices]
        self.handles += device_handles
        wait_ready(device_handles, sc.run.ready_timeout_s, on_ready=into_cpu_group)
        self.timings["nodes_ready_s"] = round(time.monotonic() - started, 3)
        first = self.clock.wall_at(self.first_at_s())
        late = {h.host: round(h.ready_at - first, 3) for h in device_handles if h.ready_at > first}
        if late:
            log.warning("devices ready after the first request's time (their first requests go out late, "
                        "wall seconds): %s", late)
        self.manifest["wall_devices_late_s"] = late
        self._write_manifest()

    def first_at_s(self) -> float:
        """When the first request goes, warm-ups included (t <= 0 on the run's clock)."""
        return min((r.at_s for r in self.planned), default=0.0)

    def _warn_outside_window(self) -> None:
        """Link events after the last measured request is sent may hit nothing measured."""
        measured = [r.at_s for r in self.planned if not r.warmup]
        if not measured:
            return
        window = max(measured)
        for ev in self.scenario.topology.events:
            if ev.at > window:
                text = (f"link event {ev.action} {'-'.join(ev.link)} at {ev.at:g} s comes after the last "
                        f"measured request is sent ({window:.3g} s on the workload's clock): it may affect "
                        "no measured request")
                log.warning(text)
                self.warnings.append(text)

    def _measure_memory(self, launcher: NodeLauncher | None) -> None:
        """The nodes' memory, kept only from a moment when every node was alive (nodes/runtime/memory.py)."""
        if launcher is None or not self.handles or any(h.exit_code() is not None for h in self.handles):
            return  # a node is gone: keep the last figure taken with all of them up
        self.memory = nodes_memory({h.host: h.pid for h in self.handles if h.pid is not None}, launcher.pid)
        if self.clock.wall_origin is not None:
            self.memory["t_taken"] = round(self.clock.at(time.time()), 3)

    def _run_during(self, net: EmulatedNetwork) -> None:
        time.sleep(max(0.0, self.clock.wall_at(self.first_at_s()) - time.time()))
        try:
            self.during(net, self.run_dir)  # type: ignore[misc]
        except Exception as exc:  # the run goes on; the manifest says what went wrong
            log.exception("the run's `during` script failed")
            self.manifest["during_error"] = f"{type(exc).__name__}: {exc}"

    def _drive(self) -> None:
        """Follow the records until every request is recorded or the run's time is up."""
        total = len(self.planned)
        last = max(r.at_s for r in self.planned)
        deadline = self.clock.wall_at(last + self.scenario.run.timeout_s)
        bar = progress_bar(total=total, unit="req", desc="requests", disable=not self.progress,
                           dynamic_ncols=True)
        counts = {"ok": 0, "failed": 0}
        dead: set[str] = set()
        try:
            while True:
                new = self._collect_new()
                for outcome in new:
                    counts[outcome] += 1
                for handle in self.handles:
                    code = handle.exit_code()
                    if code is not None and handle.host not in dead:
                        dead.add(handle.host)
                        log.warning("node %s exited with %s", handle.host, code)
                        if handle.config.role == "device":
                            self._collect_new()  # what it wrote before it died counts
                            n = self._fail_missing(f"device node {handle.host} exited with code {code}",
                                                   device=handle.host)
                            counts["failed"] += n
                            bar.update(n)
                bar.set_postfix(ok=counts["ok"], failed=counts["failed"], refresh=False)
                bar.update(len(new))
                if time.monotonic() - self._last_parquet > PARQUET_EVERY_S:
                    self.write_requests()
                    self._measure_memory(self.launcher)
                if len(self._seen) >= total:
                    break
                if time.time() > deadline:
                    log.warning("run timeout: %d of %d requests recorded", len(self._seen), total)
                    break
                time.sleep(0.2)
        finally:
            bar.close()

    # ---- records ---------------------------------------------------------------------------------

    def _collect_new(self) -> list[str]:
        """Outcomes of requests recorded since the last call (reads only the new lines)."""
        outcomes = []
        for path in sorted((self.run_dir / "records").glob("*.jsonl")):
            offset = self._offsets.get(path, 0)
            try:
                with path.open("rb") as f:
                    f.seek(offset)
                    chunk = f.read()
            except OSError:
                continue
            end = chunk.rfind(b"\n") + 1  # a line still being written waits for the next call
            self._offsets[path] = offset + end
            for line in chunk[:end].splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if row["request_id"] not in self._seen:
                    self._seen.add(row["request_id"])
                    outcomes.append(row["outcome"])
        return outcomes

    def _fail_missing(self, reason: str, device: str | None = None) -> int:
        """Record every planned request (of `device`) that no node recorded, as failed."""
        if self._runner_writer is None:
            self._runner_writer = RecordWriter(self.run_dir / "records" / RUNNER_RECORDS)
        planned = [r for r in self.planned if device is None or r.device == device]
        gen = self.scenario.generation
        clock = self.clock.started()  # a run that failed before its devices started: from now
        rows = unrecorded_failures(self._seen, planned, gen.scheduler, gen.steps, clock, reason)
        if rows:
            self._runner_writer.write(rows)
        failed = {row.request_id for row in rows}
        self._seen |= failed
        return len(failed)

    def write_requests(self) -> pd.DataFrame:
        frame = requests_table(self.run_dir, self.manifest)
        self._last_parquet = time.monotonic()
        return frame

    def _node_statuses(self) -> None:
        statuses = {}
        for handle in self.handles:
            s = handle.status() or {}
            statuses[handle.host] = {k: s.get(k) for k in ("state", "rss_bytes", "pss_bytes", "uss_bytes",
                                                           "rss_peak_bytes", "counts",
                                                           "dropped", "model_load_s", "workload")}
            statuses[handle.host]["ready_at"] = handle.ready_at
            statuses[handle.host]["cpu_limited"] = handle.host in self.cpu_limited
        self.manifest["nodes"] = statuses

    # ---- the end -------------------------------------------------------------------------------------

    def finish(self, quality: bool, traffic: bool) -> RunResult:
        """Records (what no node recorded becomes a failed row), then the final status in the
        manifest, then the end-of-run pipeline (analysis/pipeline.py)."""
        if self.planned:
            self._collect_new()  # what the devices recorded when they were stopped
            why = {"completed": "run timeout: no record of this request when the run ended",
                   "interrupted": "run interrupted before this request was recorded"}
            self._fail_missing(why.get(self.status, f"run failed ({self.error})"))
        with contextlib.suppress(OSError, ValueError):  # written by the network's teardown
            self.manifest["cpu_stats"] = json.loads((self.run_dir / "cpu_stats.json").read_text())
        self.manifest["warnings"] = self.warnings
        self.manifest["memory"] = self.memory
        self._write_manifest()  # the final status, before anything else can fail
        finished = finish_run_dir(self.run_dir, self.manifest, quality=quality, traffic=traffic)
        _record_finish(self.manifest, finished)
        self._write_manifest()
        return RunResult(self.run_dir, finished.requests, finished.traffic, finished.summary, self.manifest,
                         finished.accuracy, self.planned)

    def _write_manifest(self) -> None:
        sc = self.scenario
        self.manifest.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))  # once: when it began
        if "checksums" not in self.manifest:  # once: the code, packages and files a run reads stay put
            self.manifest.update(versions=versions(), checksums=checksums(sc))
        self.manifest.update({
            "status": self.status,
            "error": self.error,
            "run_dir": str(self.run_dir),
            "runner": {"pid": os.getpid(), "start_ticks": process_start(os.getpid())},
            "host": platform.node(),  # which machine ran it: a campaign's runs may run on several
            "kernel": platform.release(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "timings": self.timings,
            "seeds": {"topology": sc.topology.seed, "workload": sc.workload.seed,
                      "requests": {r.request_id: r.seed for r in self.planned}},
            "compute": compute_manifest(sc),
            "network": self.net_manifest,
            "workload": [r.model_dump(mode="json") for r in self.planned],
            "scenario": sc.model_dump(mode="json"),
        })
        _write_json_atomic(self.run_dir / "manifest.json", self.manifest)


def compute_manifest(sc: Scenario) -> dict[str, Any]:
    """CPU shares (from [topology.cpu_shares]) and, for profiled roles, the profile entries used."""
    from nodes.planning.hardware import load_profiles
    from nodes.schema import NODE_ROLES

    out: dict[str, Any] = {}
    profiles = None
    for role in NODE_ROLES:
        spec = sc.nodes.role(role)
        share = sc.topology.cpu_shares.get(role)
        entry: dict[str, Any] = {"cpu_share": share, **spec.model_dump(mode="json")}
        if spec.compute == "profiled":
            profiles = profiles or load_profiles(sc.nodes.profiles_file)
            entry["profiles"] = {m: vars(profiles[spec.hardware][m]) for m in spec.models}
        out[role] = entry
    out["profiles_file"] = str(sc.nodes.profiles_file or "nodes/profiles.toml")
    return out


def versions() -> dict[str, Any]:
    """emulation/provenance.py's (edgestage's commit and dirty state, the direct dependencies), and
    the network's tools."""
    import subprocess

    out = provenance_versions()
    with contextlib.suppress(Exception):
        from mininet.net import VERSION

        out["mininet"] = VERSION
    with contextlib.suppress(Exception):
        out["tcpdump"] = subprocess.run(["tcpdump", "--version"], capture_output=True, text=True,
                                        timeout=5).stdout.splitlines()[0]
    return out
