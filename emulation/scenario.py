"""A whole scenario file: the network, the nodes on it, the workload, what to compare, how to run.

    from emulation.scenario import load_scenario
    from emulation.runner import run_scenario

    scenario = load_scenario("scenarios/smoke.toml")
    faster = scenario.model_copy(update={"generation": scenario.generation.model_copy(update={"steps": 10})})
    result = run_scenario(faster, "runs/steps10")      # RunResult: DataFrames and the run directory
    result.requests.groupby("strategy").total_s.mean()

Tables of a scenario file (every one but `[topology]` has defaults):

    [topology]            topologies/spec.py, unchanged (CPU shares per role live in [topology.cpu_shares])
    [nodes.cloud|edge|device]
        models   = ["large"]            denoisers the role holds (names or model directories), or
                                        latent pipeline folders (docs/latent-pipelines.md)
        compute  = "native"|"profiled"  profiled: per-step times from the profile table, by pacing
        hardware = "datacenter_gpu"     the profile entry (profiled only)
        threads  = 1                    torch threads of the node process
        device   = "cpu"|"cuda"|"auto"  where torch computes (auto: CUDA where torch sees one; every
                                        node of an emulated run shares this machine's GPU)
        latent_components = ["vae"]     of latent pipeline folders, what is loaded besides the UNet
                                        and scheduler: tokenizer, text_encoder (to encode), vae (to
                                        decode); absent: all
    [nodes] profiles_file = "..."       optional profile table instead of nodes/profiles.toml
    [workload]
        requests = 32                   per repetition
        arrival = "fixed"|"poisson"     fixed gaps of interval_s, or exponential gaps of mean interval_s
        interval_s = 1.0
        seed = 0                        arrivals and image seeds (request k of repetition r:
                                        seed * 1_000_000 + r * requests + k)
        images_per_request = 4
        labels = "cycle" | 7 | [..]     cycle 0-9, one digit, or one label per image
        prompts = ["a cat", ..]         latent pipelines (docs/latent-pipelines.md): the prompts the
        prompts_file = "prompts.txt"      images ask for, cycled, or one per line of a file (beside
                                          this file); required where every model is a latent
                                          pipeline, refused where none is
        negative_prompts = [..]         optional, cycled as the prompts
        guidance_scale = 7.5            classifier-free guidance (> 0; on above 1)
        deadline_s = 5.0                optional; recorded as met or not per request
        request_timeout_s = 60          a device gives a request up after this long
        warmup = false                  true: one unmeasured request per (device, strategy) first,
        warmup_gap_s = 0.5                warmup_gap_s apart, the measured ones warmup_settle_s after
        warmup_settle_s = 3.0             the last (emulated seconds)
    [strategies.NAME]     kind = cloud_only|edge_only|device_only|fixed_split, model or split;
                          elastic|routing, cascade; plugin, with plugin = "module:Class",
                          "file.py:Class" (beside this file) or an entry point's name, and options
                          (nodes/planning/strategy_specs.py StrategySpec); absent: the four defaults
    [generation]          scheduler = "dpm", steps = 20
    [capture]             enabled = true, snaplen = 0 (bytes per packet, 0: whole packets)
    [run]                 repetitions = 1, timeout_s = 600, ready_timeout_s = 180,
                          time_dilation = 1 (K >= 1, or "auto"), mixed_compute = false

`load_scenario(path)` checks everything that can be checked without starting anything (models on
disk and loadable, profile entries, strategies served by the roles' models) and raises ValueError
with one line naming the file, the line where it could be found, and the field.  Types are strict:
`requests = "8"`, `requests = 8.0` and `warmup = 1` are refused rather than coerced, and numbers
must be finite (`nan`, `inf` are refused by name).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from nodes.clock import Clock
from nodes.diffusion.model_zoo import DENOISER_NAMES, check_model, is_pipeline_folder, plan_kind
from nodes.planning.plugins import anchored
from nodes.planning.request import MAX_PROMPT_CHARS, Request
from nodes.planning.strategy_specs import PLANNED_KINDS, StrategySpec, default_strategies
from nodes.runtime.node_config import (
    MAX_IMAGES,
    ComputeConfig,
    NodeConfig,
    Peer,
    SecurityConfig,
)
from nodes.schema import NODE_ROLES, SchedulerName, StrictModel, file_error, located
from topologies.spec import TopologySpec, read_with_topology

DEFAULT_DENOISERS = DENOISER_NAMES
_STRATEGY_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# the tables of a scenario file, and of a deploy file (emulation/deploy.py), which extends it
TABLES = ("topology", "nodes", "workload", "strategies", "generation", "capture", "run", "deploy")


class RoleNodes(StrictModel):
    """What the node process of every host of one role holds and how it computes.  The CPU share
    of the role is `[topology.cpu_shares]` (one place for it)."""

    models: list[str] = Field(default_factory=list, max_length=8)
    compute: Literal["native", "profiled"] = "native"
    hardware: str | None = None
    threads: StrictInt = Field(1, ge=1, le=64)
    device: Literal["auto", "cpu", "cuda"] = "cpu"  # where torch computes: nodes/runtime/compute_device.py
    # of its latent pipeline folders, what the role's hosts load besides the UNet and scheduler
    # (nodes/runtime/node_config.py): absent, every component
    latent_components: list[Literal["tokenizer", "text_encoder", "vae"]] | None = None

    @model_validator(mode="after")
    def _hardware(self) -> RoleNodes:
        if self.compute == "profiled" and not self.hardware:
            raise ValueError("compute = 'profiled' needs `hardware` (an entry of the profile table)")
        return self


class NodesSpec(StrictModel):
    cloud: RoleNodes = RoleNodes(models=["large"])
    edge: RoleNodes = RoleNodes(models=["medium"])
    device: RoleNodes = RoleNodes(models=["small"])
    profiles_file: Path | None = None

    def role(self, role: str) -> RoleNodes:
        return getattr(self, role)


def read_prompts_file(path: Path, what: str = "prompts_file") -> list[str]:
    """A prompts file's prompts, one per line, blank lines skipped.  ValueError naming the file
    (as `what`) where it does not exist, cannot be read, is empty or holds a prompt too long."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ValueError(f"{what} {path} cannot be read: {why}") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{what} {path} holds no prompt (one per line)")
    long = next((i for i, line in enumerate(lines) if len(line) > MAX_PROMPT_CHARS), None)
    if long is not None:
        raise ValueError(f"{what} {path}: prompt {long + 1} is longer than {MAX_PROMPT_CHARS} characters")
    return lines


class WorkloadSpec(StrictModel):
    requests: StrictInt = Field(32, ge=1, le=100_000)
    arrival: Literal["fixed", "poisson"] = "fixed"
    interval_s: StrictFloat = Field(1.0, gt=0, le=3600)
    seed: StrictInt = Field(0, ge=0, lt=2**31)
    images_per_request: StrictInt = Field(4, ge=1, le=MAX_IMAGES)
    labels: Literal["cycle"] | StrictInt | list[StrictInt] = "cycle"
    deadline_s: StrictFloat | None = Field(None, gt=0, le=86_400)
    request_timeout_s: StrictFloat = Field(60.0, gt=0, le=86_400)
    # one request per (device, strategy) before the measured ones, half a second apart: ZeroMQ
    # connects on first use, so these open every TCP connection the measured requests will use
    warmup: StrictBool = False
    # emulated seconds between warm-up requests, and from the last of them to the measured ones
    warmup_gap_s: StrictFloat = Field(0.5, gt=0, le=3600)
    warmup_settle_s: StrictFloat = Field(3.0, ge=0, le=3600)
    # the strategies requests are sent under (default: every one); one left out is still built,
    # as a plugin's fallback is when compare or a campaign runs the plugin alone
    strategies: list[str] | None = Field(None, min_length=1)
    # latent pipelines' requests (emulation/workload.py cycles them over the images)
    prompts: list[Annotated[str, StringConstraints(max_length=MAX_PROMPT_CHARS)]] | None = Field(
        None, min_length=1, max_length=100_000)
    prompts_file: Path | None = None
    negative_prompts: list[Annotated[str, StringConstraints(max_length=MAX_PROMPT_CHARS)]] | None = Field(
        None, min_length=1, max_length=100_000)
    guidance_scale: float | None = None

    @field_validator("guidance_scale", mode="before")
    @classmethod
    def _guidance(cls, v: object) -> object:
        number = isinstance(v, int | float) and not isinstance(v, bool)
        if v is None or (number and 0 < v <= 1000):  # nan and inf fail the bounds
            return None if v is None else float(v)
        raise ValueError(f"guidance_scale must be a positive number up to 1000 (got {v!r})")

    def prompt_list(self) -> list[str] | None:
        """The prompts, given or read from `prompts_file` (one per line, blank lines skipped);
        None where neither is given.  ValueError naming the file where it cannot be read or is empty."""
        if self.prompts_file is None:
            return None if self.prompts is None else list(self.prompts)
        return read_prompts_file(self.prompts_file)

    @model_validator(mode="after")
    def _prompts(self) -> WorkloadSpec:
        if self.prompts is not None and self.prompts_file is not None:
            raise ValueError("give prompts or prompts_file, not both")
        prompts = self.prompt_list()
        if prompts is None:
            given = [f for f in ("negative_prompts", "guidance_scale") if getattr(self, f) is not None]
            if given:
                raise ValueError(f"{given[0]} is for prompts (latent pipelines), and there are none")
        return self

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, v: object) -> object:
        def digit(x: object) -> bool:
            return isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 9

        if v == "cycle" or digit(v) or (isinstance(v, list) and v and all(digit(x) for x in v)):
            return v
        shown = repr(v) if len(repr(v)) <= 40 else repr(v)[:37] + "..."
        raise ValueError(f'labels must be "cycle", a digit 0-9 or a list of digits 0-9 (got {shown})')

    @model_validator(mode="after")
    def _label_count(self) -> WorkloadSpec:
        if isinstance(self.labels, list) and len(self.labels) != self.images_per_request:
            raise ValueError(f"labels has {len(self.labels)} entries, images_per_request is "
                             f"{self.images_per_request}")
        return self


class GenerationSpec(StrictModel):
    scheduler: SchedulerName = "dpm"
    steps: StrictInt = Field(20, ge=1, le=1000)


class CaptureSpec(StrictModel):
    enabled: StrictBool = True
    # whole packets by default: traffic attribution reads the ZeroMQ framing inside TCP
    snaplen: StrictInt = Field(0, ge=0, le=262_144)


MAX_DILATION = 1000.0


class RunSpec(StrictModel):
    repetitions: StrictInt = Field(1, ge=1, le=1000)
    timeout_s: StrictFloat = Field(600.0, gt=0, le=7 * 86_400)
    ready_timeout_s: StrictFloat = Field(180.0, gt=0, le=3600)
    # emulated time runs K times slower than wall time (docs/network-and-dilation.md: time
    # dilation); "auto": chosen before the run from the measured step times against the profiles
    # (emulation/dilation.py)
    time_dilation: StrictFloat | Literal["auto"] = 1.0
    # a native host under K > 1 computes K times faster than this machine: only when asked
    mixed_compute: StrictBool = False

    @field_validator("time_dilation", mode="before")
    @classmethod
    def _dilation(cls, v: object) -> object:
        number = isinstance(v, int | float) and not isinstance(v, bool)
        if v == "auto" or (number and 1 <= v <= MAX_DILATION):  # nan fails both bounds
            return float(v) if number else v
        raise ValueError(f'must be a number in 1..{MAX_DILATION:g} or "auto" (got {v!r})')


class Experiment(StrictModel):
    """What runs, wherever it runs: the nodes' models and compute, the workload, the strategies and
    the sampling.  A scenario (an emulated network, below) and a deployment (real machines,
    emulation/deploy.py) extend it with where the hosts are; `roles_present` says which roles
    have hosts."""

    name: str | None = None
    description: str | None = None
    nodes: NodesSpec = NodesSpec()
    workload: WorkloadSpec = WorkloadSpec()
    strategies: dict[str, StrategySpec] = Field(default_factory=default_strategies, min_length=1)
    generation: GenerationSpec = GenerationSpec()

    @field_validator("strategies")
    @classmethod
    def _strategy_names(cls, v: dict[str, StrategySpec]) -> dict[str, StrategySpec]:
        for name in v:
            if not _STRATEGY_NAME.match(name):
                raise ValueError(f"strategy name {name!r}: use [A-Za-z0-9_.-]{{1,64}}")
        return v

    def roles_present(self) -> set[str]:
        raise NotImplementedError

    def check_strategies(self, where: str) -> None:
        """Every strategy's tiers have hosts and hold its models; `where` names what the hosts
        come from (`the topology`, `deploy.hosts`).  ValueError naming the field."""
        roles = self.roles_present()
        given = "strategies" in self.model_fields_set
        self._check_sent()
        for name, spec in self.strategies.items():
            if spec.kind in PLANNED_KINDS:
                self._check_planned(name, spec)
            if spec.kind == "cascade":
                self._check_cascade(name, spec)
            if spec.kind == "plugin":
                self._check_plugin(name, spec)
            if spec.kind == "fixed_split":  # one kind of model, one latent space
                try:
                    plan_kind([s.model for s in spec.split or []])
                except ValueError as exc:
                    raise ValueError(f"strategies.{name}: {exc}") from None
            placed = "encode" if spec.encode is not None else "decode" if spec.decode is not None else None
            if placed and not all(is_pipeline_folder(m) for _, m, _ in _strategy_needs(spec)):
                raise ValueError(f"strategies.{name}.{placed}: places a latent pipeline's text encoding and "
                                 "decoding, and its models are pixel denoisers")
            for tier, model, default in _strategy_needs(spec):
                if tier not in roles:
                    raise ValueError(f"strategies.{name}: needs a {tier} host, {where} has none")
                held = self.nodes.role(tier).models
                if model in held:
                    continue
                if not given:  # the default strategies: the file has no [strategies.*] to point at
                    raise ValueError(f"nodes.{tier}.models: the default strategy {name} needs model "
                                     f"{model!r} here (holds {held}); add it, or give [strategies.*]")
                which = f"its default model {model!r} (no `model` given)" if default else f"model {model!r}"
                raise ValueError(f"strategies.{name}: {which} is not in nodes.{tier}.models {held}")

    def _check_sent(self) -> None:
        sent = self.workload.strategies
        if sent is None:
            return
        for name in sent:
            if name not in self.strategies:
                raise ValueError(f"workload.strategies: {name!r} is not a strategy of this scenario (it has: "
                                 f"{', '.join(self.strategies)})")
        if len(set(sent)) != len(sent):
            raise ValueError("workload.strategies: a strategy is named twice")

    def _check_planned(self, name: str, spec: StrategySpec) -> None:
        """A planned strategy needs the quality table of this scheduler and step count, and a plan
        in it that meets its floor with models the hosts hold."""
        from nodes.planning.plan import parse_plan
        from nodes.planning.planner import QualityFloor
        from nodes.planning.quality_table import read_table

        gen = self.generation
        held = {m for r in self.roles_present() for m in self.nodes.role(r).models}
        for text in spec.plans or []:
            try:
                plan = parse_plan(text, gen.steps)
            except ValueError as exc:
                raise ValueError(f"strategies.{name}.plans: {exc}") from None
            missing = [m for m in plan.models() if m not in held]
            if missing:
                raise ValueError(f"strategies.{name}.plans: no host holds {missing[0]!r}")
        floor = QualityFloor(spec.min_class_accuracy, spec.max_fid)
        if held and all(is_pipeline_folder(m) for m in held):  # latent pipelines: their own table
            from nodes.planning.quality_table import latent_key, latent_table_path, read_latent_table

            guidance = latent_key("", self.workload.guidance_scale)[1]  # the requests' (one per workload)
            rows = read_latent_table(gen.scheduler, gen.steps)
            usable = [r for (_, g), r in rows.items()
                      if g == guidance and set(parse_plan(r["plan"]).models()) <= held]
            if floor != QualityFloor() and not any(floor.admits(r) for r in usable):
                measured = ", ".join(f"{g:g}" for g in sorted({g for _, g in rows})) or "none"
                raise ValueError(f"strategies.{name}: no latent plan the hosts' pipelines can run has a "
                                 f"quality measured at guidance {guidance:g} that meets the floor ({floor}) "
                                 f"in {latent_table_path(gen.scheduler, gen.steps).name} (measured at "
                                 f"guidance: {measured})")
            return
        try:
            rows = read_table(gen.scheduler, gen.steps)
        except ValueError as exc:
            raise ValueError(f"strategies.{name}: {exc}") from None
        usable = [r for r in rows if set(r["models"].split(",")) <= held
                  and (spec.kind != "routing" or "," not in r["models"])]
        if not any(floor.admits(r) for r in usable):
            best = max((r["class_accuracy"] for r in usable), default=None)
            fid = min((r["fid"] for r in usable), default=None)
            raise ValueError(f"strategies.{name}: no plan the hosts' models can run meets the floor "
                             f"({floor}) in the quality table of {gen.scheduler}/{gen.steps} steps (best "
                             f"there: class accuracy {best}, FID {fid})")

    def _check_cascade(self, name: str, spec: StrategySpec) -> None:
        """A cascade's quality is the cascade table's row of its models and threshold: it must be there.
        A cascade of latent pipelines gates each image on the digit its prompt names: every prompt
        of the workload must name one."""
        from nodes.planning.cascade_table import cascade_figures, is_latent_cascade
        from nodes.planning.strategies import DEFAULT_MODEL

        gen = self.generation
        assert spec.escalate_model is not None and spec.threshold is not None  # the spec checks them
        model = spec.model or DEFAULT_MODEL["cascade"]
        try:
            cascade_figures(model, spec.escalate_model, spec.threshold, gen.scheduler, gen.steps,
                            self.workload.guidance_scale)
        except ValueError as exc:
            raise ValueError(f"strategies.{name}: {exc}") from None
        prompts = self.workload.prompt_list() if is_latent_cascade(model) else None
        if prompts:
            from nodes.diffusion.digit_attributes import prompt_digit

            for i, prompt in enumerate(prompts):
                if prompt_digit(prompt) is None:
                    raise ValueError(f"strategies.{name}: a cascade's gate checks the digit each "
                                     f"prompt names ('digit D'), and workload prompt {i + 1} ({prompt!r}) "
                                     "names none")

    def _check_plugin(self, name: str, spec: StrategySpec) -> None:
        """A plugin loads and takes its options (it is imported and built here, as the coordinator
        will), and its fallback is a built-in strategy of this scenario.  What it plans is checked per
        request at run time (nodes/planning/strategies.py Plugin)."""
        from nodes.planning.plugins import instantiate

        fallback = spec.fallback
        if fallback is not None:
            other = self.strategies.get(fallback)
            if other is None or fallback == name:
                known = ", ".join(n for n in self.strategies if n != name) or "none"
                raise ValueError(f"strategies.{name}: fallback {fallback!r} is not another strategy of this "
                                 f"scenario (others: {known})")
            if other.kind == "plugin":
                raise ValueError(f"strategies.{name}: fallback {fallback!r} is a plugin: a fallback must be "
                                 "a built-in strategy")
        assert spec.plugin is not None  # the spec checks it
        try:
            instantiate(name, spec.plugin, spec.options or {})
        except ValueError as exc:
            raise ValueError(f"strategies.{name}: {exc}") from None

    def host_radio(self, host: str) -> str | None:
        """A device's radio (energy figures); None where the experiment does not say."""
        return None

    def strategy_names(self) -> list[str]:
        """The strategies the workload sends requests under, in order."""
        return list(self.workload.strategies or self.strategies)

    def alone(self, tables: dict, name: str) -> dict:
        """This experiment's `tables` (its file's, as read) with strategy `name` alone: its table,
        and a plugin's fallback's, built but sent no request.  How compare and a campaign run each
        strategy on its own."""
        spec = self.strategies[name]
        strategies = {name: spec.model_dump(exclude_none=True)}
        workload = {k: v for k, v in (tables.get("workload") or {}).items() if k != "strategies"}
        if spec.kind == "plugin" and spec.fallback is not None:
            strategies[spec.fallback] = self.strategies[spec.fallback].model_dump(exclude_none=True)
            workload["strategies"] = [name]
        return {**tables, "strategies": strategies, "workload": workload}

    def node_configs(self, hosts: Mapping[str, tuple[str, str, str]], coordinator: str, run_dir: Path,
                     workload: Mapping[str, list[Request]], clock: Clock | None = None,
                     security: Callable[[str], SecurityConfig] | None = None) -> dict[str, NodeConfig]:
        """One node config per host, the one way they are built (emulated runs and deploy mode):
        `hosts` maps a host to (role, the endpoint the others connect to, what it binds);
        `workload` a device to its requests (nodes/planning/request.py); every node
        gets the run's `clock` (nodes/clock.py: origin and K; default: no origin, each device's
        first request goes when it is ready, K = 1); `security(host)` gives a host's CURVE
        settings (default: plain TCP)."""
        computes = {}
        for host, (role, _, _) in hosts.items():
            spec = self.nodes.role(role)
            computes[host] = ComputeConfig(mode=spec.compute, hardware=spec.hardware, threads=spec.threads,
                                           device=spec.device,
                                           profiles_file=self.nodes.profiles_file)
        peers = {h: Peer(endpoint=endpoint, role=role, models=self.nodes.role(role).models,
                         compute=computes[h], radio=self.host_radio(h),
                         latent_components=self.nodes.role(role).latent_components)
                 for h, (role, endpoint, _) in hosts.items()}
        configs = {}
        for host, (role, _, bind) in hosts.items():
            spec = self.nodes.role(role)
            compute = computes[host]
            device = role == "device"
            configs[host] = NodeConfig(
                host=host, role=role, bind=bind, coordinator=coordinator,
                peers={h: p for h, p in peers.items() if h != host}, models=spec.models, compute=compute,
                latent_components=spec.latent_components,
                run_dir=run_dir, scheduler=self.generation.scheduler, steps=self.generation.steps,
                request_timeout_s=self.workload.request_timeout_s, clock=clock or Clock(),
                strategies=self.strategies, workload=workload.get(host, []) if device else [],
                security=security(host) if security else SecurityConfig(),
            )
        return configs


class Scenario(Experiment):
    """An experiment on an emulated network: its topology, what is captured, how it runs."""

    topology: TopologySpec
    capture: CaptureSpec = CaptureSpec()
    run: RunSpec = RunSpec()

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        check_models(self.nodes)  # first: a strategy's complaint about a model that is not there misleads
        roles = self.roles_present()
        check_prompts_fit(self, roles)
        if "edge" not in roles:
            raise ValueError("topology: the runner needs an edge host (it runs the coordinator)")
        if "device" not in roles:
            raise ValueError("topology: no device hosts, so nobody issues requests")
        self.check_strategies("the topology")
        self._check_mixed_compute()
        return self

    def _check_mixed_compute(self) -> None:
        modes = {r: self.nodes.role(r).compute for r in self.roles_present() if self.nodes.role(r).models}
        if self.run.time_dilation == 1 or self.run.mixed_compute or len(set(modes.values())) < 2:
            return
        native = ", ".join(f"nodes.{r}" for r, m in sorted(modes.items()) if m == "native")
        raise ValueError(f"run.time_dilation: {native} native beside profiled hosts: under dilation a "
                         "native host computes K times faster than this machine; make every role "
                         "profiled, or set run.mixed_compute = true to accept it")

    def roles_present(self) -> set[str]:
        return {r for r in NODE_ROLES if any(self._hosts_of(r))}

    def host_radio(self, host: str) -> str | None:
        return next((d.radio for d in self.topology.device_specs() if d.name == host), None)

    def _hosts_of(self, role: str) -> list[str]:
        names = self.topology.host_names()
        devices = {d.name for d in self.topology.device_specs()}
        if role == "device":
            return [n for n in names if n in devices]
        return [n for n in names if n not in devices and re.sub(r"\d+$", "", n) == role]


def _strategy_needs(spec: StrategySpec) -> list[tuple[str, str, bool]]:
    """(tier, model, whether it is the default model) a strategy needs, with the node strategies'
    default models."""
    from nodes.planning.strategies import DEFAULT_MODEL

    if spec.kind in PLANNED_KINDS:  # any host that holds a model of a plan (checked apart)
        return []
    if spec.kind == "plugin":  # whatever it plans, checked per request when it plans it
        return []
    if spec.kind == "fixed_split":
        return [(s.tier, s.model, False) for s in spec.split or []]
    if spec.kind == "cascade":
        assert spec.escalate_tier is not None and spec.escalate_model is not None  # the spec checks them
        return [("device", spec.model or DEFAULT_MODEL["cascade"], spec.model is None),
                (spec.escalate_tier, spec.escalate_model, False)]
    tier = spec.kind.removesuffix("_only")
    return [(tier, spec.model or DEFAULT_MODEL[spec.kind], spec.model is None)]


def check_models(nodes_spec: NodesSpec) -> None:
    """Every model of every role is a default one, a denoiser directory or a latent pipeline folder
    that looks loadable (nodes/diffusion/model_zoo.py check_model: no torch).  ValueError naming
    the field."""
    for role in NODE_ROLES:
        for i, model in enumerate(nodes_spec.role(role).models):
            try:
                check_model(model)
            except ValueError as exc:
                raise ValueError(f"nodes.{role}.models[{i}]: {exc}") from None


def check_devices(scenario: Scenario) -> None:
    """A role that asks for CUDA in an emulated run (every node on this machine) needs a CUDA device
    here; in deploy mode each node checks its own at start.  ValueError naming the field."""
    asking = [r for r in NODE_ROLES if scenario.nodes.role(r).device == "cuda"]
    if not asking or getattr(scenario, "deploy", None) is not None:  # a Deployment (emulation/deploy.py)
        return
    import torch

    if not torch.cuda.is_available():
        raise ValueError(f"nodes.{asking[0]}.device: 'cuda', and torch sees no CUDA device on this machine "
                         "(use 'cpu' or 'auto')")


def check_prompts_fit(experiment: Experiment, roles: set[str]) -> None:
    """Prompts where the hosts' models are latent pipelines, none where they are pixel denoisers
    (with both kinds, the workload says which its requests are).  ValueError naming the field."""
    models = [m for r in sorted(roles) for m in experiment.nodes.role(r).models]
    latent = [m for m in models if is_pipeline_folder(m)]
    workload = experiment.workload
    given = "prompts_file" if workload.prompts_file is not None else "prompts"
    if workload.prompt_list() is not None and not latent:
        raise ValueError(f"workload.{given}: prompts are for latent pipelines, and the hosts hold pixel "
                         "denoisers only")
    if workload.prompt_list() is None and latent and len(latent) == len(models):
        raise ValueError("workload.prompts: the hosts hold latent pipelines, which need prompts "
                         "(prompts = [...] or prompts_file)")


def check_resources(scenario: Scenario, base: Path | None = None) -> Scenario:
    """Models on disk (a model directory of one's own is loaded once, so that one that does not
    load is refused here and not on a node after the network is up) and profile entries: what
    pydantic cannot see.  ValueError, one line."""
    from nodes.planning.hardware import DEFAULT_PROFILES, load_power, load_profiles, power_for, profile_for

    check_models(scenario.nodes)
    check_devices(scenario)
    profiles = None
    for role in NODE_ROLES:
        spec = scenario.nodes.role(role)
        for i, model in enumerate(spec.models):
            if is_pipeline_folder(model):  # checked by check_models; its components load on its node
                continue
            if model not in DEFAULT_DENOISERS:  # the shipped ones load (tests/nodes/test_models.py)
                from nodes.diffusion.model_zoo import load_denoiser

                try:
                    load_denoiser(model)
                except ValueError as exc:
                    raise ValueError(f"nodes.{role}.models[{i}]: {exc}") from None
        if spec.compute == "profiled":
            if profiles is None:
                profiles = load_profiles(scenario.nodes.profiles_file)
                power = load_power(scenario.nodes.profiles_file)
            try:
                for model in spec.models:
                    profile = profile_for(profiles, spec.hardware or "", model)
                    _check_phases(profile, model, spec, scenario.nodes.profiles_file or DEFAULT_PROFILES)
                # a profiled host's joules per image are reported, so its power must be known
                power_for(power, spec.hardware or "", scenario.nodes.profiles_file or DEFAULT_PROFILES)
            except ValueError as exc:
                raise ValueError(f"nodes.{role}.hardware: {exc}") from None
    return scenario


def _check_phases(profile, model: str, spec: RoleNodes, source: Path) -> None:
    """A profiled host paces the encoding and decoding it may do with a latent pipeline: its
    profile entry must time them (nodes/planning/hardware.py)."""
    if not is_pipeline_folder(model):
        return
    parts = spec.latent_components
    for phase, needs in (("encode", "text_encoder"), ("decode", "vae")):
        if (parts is None or needs in parts) and getattr(profile, phase) is None:
            raise ValueError(f"profile {spec.hardware!r} of {Path(model).name!r} in {source} has no "
                             f"{phase}_ms and {phase}_per_image_ms, and the role may {phase} with it")


def parse_scenario(data: dict, text: str = "", source: str = "scenario") -> Scenario:
    """Validate a scenario's tables (a dict as TOML gives it); ValueError naming the field."""
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        raise file_error(exc, text, source, TABLES, whole="scenario") from None
    try:
        return check_resources(scenario)
    except ValueError as exc:
        raise located(str(exc), text, source, TABLES) from None


def load_scenario(path: str | Path) -> Scenario:
    """Read and check a scenario file; nothing is started."""
    data, text = scenario_tables(path)
    return parse_scenario(data, text, str(path))


def scenario_tables(path: str | Path) -> tuple[dict, str]:
    """A scenario file's tables, with its relative paths resolved, and its text (not yet checked)."""
    p = Path(path)
    data, text = read_with_topology(p)
    nodes_table = data.get("nodes")
    if isinstance(nodes_table, dict) and isinstance(nodes_table.get("profiles_file"), str):
        prof = Path(nodes_table["profiles_file"])
        if not prof.is_absolute() and not prof.exists() and (p.parent / prof).exists():
            nodes_table["profiles_file"] = str(p.parent / prof)
    workload_table = data.get("workload")
    if isinstance(workload_table, dict) and isinstance(workload_table.get("prompts_file"), str):
        prompts = Path(workload_table["prompts_file"])
        if not prompts.is_absolute():  # beside the scenario file, as its plugins' files are
            workload_table["prompts_file"] = str(p.parent / prompts)
    anchor_plugins(data, p.parent)
    data.setdefault("name", p.stem)
    return data, text


def anchor_plugins(data: dict, base: Path) -> None:
    """Make the files that plugin strategies name relative to `base` (the file's folder) absolute:
    the node processes run in another working directory."""
    strategies = data.get("strategies")
    for table in strategies.values() if isinstance(strategies, dict) else ():
        if isinstance(table, dict) and isinstance(table.get("plugin"), str):
            table["plugin"] = anchored(table["plugin"], base)


__all__ = ["Scenario", "anchor_plugins", "load_scenario", "parse_scenario", "scenario_tables"]
