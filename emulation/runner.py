"""The experiment runner: a scenario in, a run directory out.

    result = run_scenario(load_scenario("scenarios/smoke.toml"), "runs/smoke")
    result.requests      # requests.parquet: one row per request per stage
    result.traffic       # traffic.parquet: bytes and packets per link, flow and message
    result.summary       # summary.json: per-strategy aggregates and the accuracy headline
    result.accuracy      # accuracy.json: transfer-time ratios, latency parts, wire overhead

Order: check (root, output directory) -> network up (emulation/network.py) -> node processes
(emulation/node_procs.py: infrastructure first, then devices with a common t0 far enough ahead
for them to start) -> capture (emulation/capture.py) -> the devices drive the workload
(emulation/workload.py: all strategies interleaved) while a progress bar follows the records
files -> all requests recorded, or the run's timeout -> nodes stopped (SIGTERM: devices record
what is unfinished as failed) -> capture stopped -> network down -> run directory written
(requests.parquet, traffic.parquet, summary.json, accuracy figures, manifest.json).

A request nobody recorded (its device's node died, or the run timed out before it was sent) is
recorded by the runner as failed with the reason.  `requests.parquet` is rewritten from the
records while the run goes and once more at the end, also after Ctrl-C or SIGTERM, so an
interrupted run keeps what it did.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from tqdm import tqdm

from emulation.scenario import Scenario
from emulation.workload import PlannedRequest, by_device, plan_workload
from nodes.launcher import NodeLauncher
from nodes.memory import nodes_memory
from nodes.records import RecordWriter, StageRecord, failed_records, read_records

if TYPE_CHECKING:
    from emulation.network import EmulatedNetwork

log = logging.getLogger(__name__)
RUNNER_RECORDS = "_runner.jsonl"  # the runner's own failed rows, beside the devices' files
PARQUET_EVERY_S = 5.0


@dataclass
class RunResult:
    run_dir: Path
    requests: pd.DataFrame
    traffic: pd.DataFrame
    summary: dict[str, Any]
    manifest: dict[str, Any]
    accuracy: dict[str, Any] = field(default_factory=dict)
    planned: list[PlannedRequest] = field(default_factory=list)


def default_out_dir(scenario: Scenario) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{scenario.name or 'scenario'}-{stamp}"


def check_can_run(out_dir: Path) -> None:
    """What must hold before anything is created; ValueError (one line) otherwise."""
    if os.geteuid() != 0:
        raise ValueError("run needs root (network namespaces, qdiscs, cgroups): use sudo")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"--out {out_dir}: exists and is not empty (choose a new directory)")


During = Callable[["EmulatedNetwork", Path], None]


def run_scenario(scenario: Scenario, out_dir: str | Path | None = None, progress: bool = True,
                 quality: bool = True, during: During | None = None) -> RunResult:
    """Run a validated scenario; returns the run's tables. Raises ValueError before starting if the
    run cannot start (not root, output directory in use).

    `during(net, run_dir)`, if given, runs in a thread from t0 while the workload goes: a script
    of what happens to the network mid-run (`net.set_link`, `net.link_down`, `net.popen` of a
    traffic source ...; not `net.cmd`, which belongs to the main thread).  The run waits for it
    before stopping the nodes; an exception it raises is logged and goes into the manifest."""
    out = Path(out_dir) if out_dir is not None else default_out_dir(scenario)
    check_can_run(out)
    out.mkdir(parents=True, exist_ok=True)
    run = _Run(scenario, out.resolve(), progress, during)
    try:
        run.execute()
    except BaseException as exc:
        run.status = "interrupted" if isinstance(exc, KeyboardInterrupt | SystemExit) else "failed"
        run.error = f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(Exception):
            run.finish(quality=False, traffic=False)
        raise
    return run.finish(quality=quality, traffic=scenario.capture.enabled)


class _Run:
    def __init__(self, scenario: Scenario, run_dir: Path, progress: bool,
                 during: During | None = None) -> None:
        self.scenario = scenario
        self.during = during
        self.run_dir = run_dir
        self.progress = progress
        self.status = "running"
        self.error: str | None = None
        self.planned: list[PlannedRequest] = []
        self.manifest: dict[str, Any] = {}
        self.timings: dict[str, float] = {}
        self.handles: list = []
        self.capture = None
        self.net_manifest: dict[str, Any] = {}
        self.began = time.monotonic()
        self.t0: float | None = None
        self._seen: set[str] = set()
        self._offsets: dict[Path, int] = {}
        self.memory: dict[str, Any] = {}
        self._runner_writer: RecordWriter | None = None
        self._last_parquet = 0.0

    # ---- the run -------------------------------------------------------------------------------

    def execute(self) -> None:
        from emulation.network import EmulatedNetwork
        from emulation.node_procs import node_hosts, stop_all

        sc = self.scenario
        self._write_manifest()
        # the launcher imports torch and diffusers while the network comes up; it outlives the
        # network, but every node it forked is stopped before the network goes down
        launcher = NodeLauncher(self.run_dir)
        with launcher, EmulatedNetwork(sc.topology, run_dir=self.run_dir) as net:
            self.timings["network_up_s"] = round(time.monotonic() - self.began, 3)
            self.net_manifest = net.manifest()
            hosts = node_hosts(net)
            devices = [h for h, role in hosts.items() if role == "device"]
            self.planned = plan_workload(sc.workload, devices, sc.strategy_names(), sc.run.repetitions)
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
                # the nodes' memory while all of them are still up (nodes/memory.py)
                self.memory = nodes_memory({h.host: h.pid for h in self.handles if h.pid is not None},
                                           launcher.pid)
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
        """Infrastructure nodes first (the slow ones: bigger models), then the devices, whose
        common t0 is set from how long the infrastructure took to start; capture in between."""
        from emulation.capture import Capture
        from emulation.node_procs import NodeHandle, build_configs, wait_ready

        sc = self.scenario
        devices = [h for h, role in hosts.items() if role == "device"]
        infra = [h for h, role in hosts.items() if role != "device"]
        launcher.wait_ready()
        self.timings["launcher_ready_s"] = round(time.monotonic() - self.began, 3)
        started = time.monotonic()
        configs = build_configs(sc, net, self.run_dir, {}, None)
        self.handles = [NodeHandle(net, launcher, configs[h]) for h in infra]
        for handle in self.handles:
            handle.start()
        wait_ready(self.handles, sc.run.ready_timeout_s)
        infra_s = time.monotonic() - started
        # devices start together on the same CPUs: scale what the infrastructure took by how
        # many more processes start now, with room to spare (a late device sends late, and the
        # manifest says by how much)
        margin = max(5.0, 1.5 * infra_s * max(1.0, len(devices) / max(1, len(infra))))
        self.timings["infra_ready_s"] = round(infra_s, 3)
        self.timings["t0_margin_s"] = round(margin, 3)
        if sc.capture.enabled:  # before any node connects: ZeroMQ connects on first send
            self.capture = Capture(net, self.run_dir / "pcap", sc.capture.snaplen)
            self.capture.start()
        self.t0 = time.time() + margin
        configs = build_configs(sc, net, self.run_dir, by_device(self.planned), self.t0)
        device_handles = [NodeHandle(net, launcher, configs[h]) for h in devices]
        self.handles += device_handles
        for handle in device_handles:
            handle.start()
        wait_ready(self.handles, sc.run.ready_timeout_s)
        self.timings["nodes_ready_s"] = round(time.monotonic() - started, 3)
        late = {h.host: round(h.ready_at - self.t0, 3) for h in device_handles if h.ready_at > self.t0}
        if late:
            log.warning("devices ready after t0 (their first requests go out late): %s", late)
        self.manifest["devices_ready_after_t0_s"] = late
        self._write_manifest()

    def _run_during(self, net: EmulatedNetwork) -> None:
        time.sleep(max(0.0, (self.t0 or 0.0) - time.time()))
        try:
            self.during(net, self.run_dir)  # type: ignore[misc]
        except Exception as exc:  # the run goes on; the manifest says what went wrong
            log.exception("the run's `during` script failed")
            self.manifest["during_error"] = f"{type(exc).__name__}: {exc}"

    def _drive(self) -> None:
        """Follow the records until every request is recorded or the run's time is up."""
        total = len(self.planned)
        deadline = self.t0 + max(r.at_s for r in self.planned) + self.scenario.run.timeout_s
        bar = tqdm(total=total, unit="req", desc="requests", disable=not self.progress, dynamic_ncols=True)
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
        rows: list[StageRecord] = []
        sc = self.scenario
        for r in self.planned:
            if r.request_id in self._seen or (device is not None and r.device != device):
                continue
            scheduled = (self.t0 or time.time()) + r.at_s
            # when (or whether) it was sent is unknown: the device that knew is gone
            note = {"request_id": r.request_id, "device": r.device, "strategy": r.strategy, "n": r.n,
                    "seed": r.seed, "scheduler": sc.generation.scheduler, "steps": sc.generation.steps,
                    "deadline_s": r.deadline_s, "t_scheduled": scheduled, "t_request_sent": scheduled}
            rows += failed_records(note, reason, None)
            self._seen.add(r.request_id)
        if rows:
            self._runner_writer.write(rows)
        return len({row.request_id for row in rows})

    def requests_frame(self) -> pd.DataFrame:
        rows: list[dict] = []
        for path in sorted((self.run_dir / "records").glob("*.jsonl")):
            rows += [r.model_dump() for r in read_records(path)]
        frame = pd.DataFrame(rows, columns=list(StageRecord.model_fields))
        planned = pd.DataFrame([{"request_id": r.request_id, "repetition": r.repetition,
                                 "at_s": r.at_s, "warmup": r.warmup} for r in self.planned],
                               columns=["request_id", "repetition", "at_s", "warmup"])
        frame = frame.merge(planned, on="request_id", how="left")
        return frame.sort_values(["t_scheduled", "request_id", "stage_index"], na_position="first",
                                 kind="stable").reset_index(drop=True)

    def write_requests(self) -> pd.DataFrame:
        frame = self.requests_frame()
        tmp = self.run_dir / ".requests.parquet.tmp"
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, self.run_dir / "requests.parquet")
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
            statuses[handle.host]["cpu_limited"] = handle.limited
        self.manifest["nodes"] = statuses

    # ---- the end -------------------------------------------------------------------------------------

    def finish(self, quality: bool, traffic: bool) -> RunResult:
        from analysis.report import write_report
        from analysis.run_report import accuracy_report
        from analysis.summary import format_accuracy, format_memory, format_table, summarize
        from analysis.traffic import empty_traffic, parse_run_traffic

        if self.planned and self.t0 is not None:
            self._collect_new()  # what the devices recorded when they were stopped
            why = {"completed": "run timeout: no record of this request when the run ended",
                   "interrupted": "run interrupted before this request was recorded"}
            self._fail_missing(why.get(self.status, f"run failed ({self.error})"))
        requests = self.write_requests()
        frame = empty_traffic()
        if traffic and (self.run_dir / "pcap").is_dir():
            began = time.monotonic()
            frame = parse_run_traffic(self.run_dir / "pcap", self.net_manifest)
            frame.to_parquet(self.run_dir / "traffic.parquet", index=False)
            self.timings["traffic_parse_s"] = round(time.monotonic() - began, 3)
        began = time.monotonic()
        measured = requests[requests["warmup"].ne(True)]  # warm-up requests only open connections
        summary = summarize(measured, frame, self.run_dir / "samples", quality=quality)
        self.timings["quality_s"] = round(time.monotonic() - began, 3)
        accuracy = accuracy_report(measured, frame, self.net_manifest)
        (self.run_dir / "accuracy.json").write_text(json.dumps(accuracy, indent=1, default=_json))
        document = {"scenario": self.scenario.name, "status": self.status, "strategies": summary,
                    "accuracy": accuracy.get("headline", {}),
                    "node_memory": {k: v for k, v in self.memory.items() if k not in ("nodes", "launcher")}}
        (self.run_dir / "summary.json").write_text(json.dumps(document, indent=1, default=_json))
        with contextlib.suppress(OSError, ValueError):  # written by the network's teardown
            self.manifest["cpu_stats"] = json.loads((self.run_dir / "cpu_stats.json").read_text())
        self._write_manifest()
        try:
            write_report(self.run_dir)
        except Exception as exc:  # the run's data is written; a failed figure must not lose it
            log.warning("report.md not written: %s (edgestage report %s)", exc, self.run_dir)
        if self.progress or self.status != "completed":
            print(format_table(summary, title=f"{self.scenario.name}: {self.status}"))
            print(format_accuracy(accuracy.get("headline", {})))
            print(format_memory(document["node_memory"]))
        return RunResult(self.run_dir, requests, frame, document, self.manifest, accuracy, self.planned)

    def _write_manifest(self) -> None:
        sc = self.scenario
        self.manifest.update({
            "status": self.status,
            "error": self.error,
            "run_dir": str(self.run_dir),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": versions(),
            "kernel": platform.release(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "t0": self.t0,
            "timings": self.timings,
            "seeds": {"topology": sc.topology.seed, "workload": sc.workload.seed,
                      "requests": {r.request_id: r.seed for r in self.planned}},
            "compute": compute_manifest(sc),
            "network": self.net_manifest,
            "workload": [r.as_row() for r in self.planned],
            "scenario": sc.model_dump(mode="json"),
        })
        tmp = self.run_dir / ".manifest.json.tmp"
        tmp.write_text(json.dumps(self.manifest, indent=1, default=_json))
        os.replace(tmp, self.run_dir / "manifest.json")


def compute_manifest(sc: Scenario) -> dict[str, Any]:
    """CPU shares (from [topology.compute]) and, for profiled roles, the profile entries used."""
    from emulation.scenario import NODE_ROLES
    from nodes.compute import load_profiles

    out: dict[str, Any] = {}
    profiles = None
    for role in NODE_ROLES:
        spec = sc.nodes.role(role)
        entry: dict[str, Any] = {"cpu_share": sc.topology.compute.get(role), **spec.model_dump(mode="json")}
        if spec.compute == "profiled":
            profiles = profiles or load_profiles(sc.nodes.profiles_file)
            entry["profiles"] = {m: vars(profiles[spec.hardware][m]) for m in spec.models}
        out[role] = entry
    out["profiles_file"] = str(sc.nodes.profiles_file or "nodes/profiles.toml")
    return out


def versions() -> dict[str, str | None]:
    import importlib.metadata as md
    import subprocess

    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for dist in ("torch", "diffusers", "pyzmq", "scapy", "pandas", "pyarrow", "pydantic", "numpy"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    with contextlib.suppress(Exception):
        from mininet.net import VERSION

        out["mininet"] = VERSION
    with contextlib.suppress(Exception):
        out["tcpdump"] = subprocess.run(["tcpdump", "--version"], capture_output=True, text=True,
                                        timeout=5).stdout.splitlines()[0]
    with contextlib.suppress(Exception):
        root = Path(__file__).resolve().parent.parent
        out["edgestage_commit"] = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"],
                                                 capture_output=True, text=True, timeout=5).stdout.strip()
    return out


def _json(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
