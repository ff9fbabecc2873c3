"""Per-strategy aggregates of a run: what summary.json holds and the table `edgestage run` prints.

Per strategy: requests done and failed, latency (mean / p50 / p95 of each ok request's total, from
the device's send to the result's arrival), deadline hits, profiled-compute overruns, bytes on the
wire per image (every packet of the strategy's requests on every link it crossed, ACKs included,
divided by the images delivered) and per link, the part of it that is the nodes' `report`s to the
coordinator (`report_bytes_per_image`: sent for every strategy's stages, used by the planned
ones), energy per image, and quality.

Overruns (a profiled step that really took longer than its profile) are never silent: per strategy
`overrun_steps`, `overrun_s` (seconds beyond the profile, summed) and `overrun_requests`; the
table marks such a strategy with `!` and says by how much under it (`overrun_line`).

Energy per image (analysis/energy.py, joules per delivered image, None where a figure is unknown):
`device_energy_per_image_j` (the requesting device's own compute and radio), its radio part
`device_radio_per_image_j`, and `compute_energy_per_image_j` (every host's compute).

Quality, per strategy: each distinct plan it used (with its request count) is judged on
PLAN_QUALITY_IMAGES (500) images of its own, generated locally with that plan, scheduler and steps
and cached (analysis/plan_quality.py); the strategy's figures (nodes/planning/quality_table.py's
FIGURES: the first judge's `fid`, `kid`, `class_accuracy`, `psnr_vs_large_db`, the second judge's
`svm_class_accuracy`, `pca_fd` and the two judges' `judge_agreement`) are those per-plan figures
weighted by the plan's ok requests, with `n_quality` the images behind each per-plan figure; a
cascade's come from its cascade table's row. The run's own delivered images, pooled per strategy,
are kept as `run_sample_*` (both judges' figures too): a few dozen images, whose FID is dominated
by small-sample bias and can rank strategies the wrong way round, so they are not a figure to rank by.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.boundaries import boundary_table, bytes_by_boundary
from analysis.energy import request_energy
from analysis.interleaving import overlaps
from nodes.diffusion.model_zoo import is_pipeline_folder
from nodes.planning.hardware import HardwarePower, load_power
from nodes.planning.plan import parse_plan
from nodes.planning.quality_table import FIGURES as PLAN_FIGURES
from nodes.planning.quality_table import SECOND_JUDGE, latent_key, latent_table_path, read_latent_table
from nodes.runtime.records import ESCALATION_SUFFIX, request_of

TABLE_COLUMNS = [
    ("strategy", "strategy", "{}"), ("done", "done", "{}"), ("failed", "failed", "{}"),
    ("mean_s", "latency_mean_s", "{:.3f}"), ("95% CI", "latency_mean_ci_s", "{}"),
    ("p50_s", "latency_p50_s", "{:.3f}"), ("p95_s", "latency_p95_s", "{:.3f}"), ("fid", "fid", "{:.2f}"),
    ("kid", "kid", "{:.4f}"),
    ("class_acc", "class_accuracy", "{:.3f}"), ("svm_acc", "svm_class_accuracy", "{:.3f}"),
    ("pca_fd", "pca_fd", "{:.2f}"), ("agree", "judge_agreement", "{:.3f}"), ("n_quality", "n_quality", "{}"),
    ("wire_B/img", "wire_bytes_per_image", "{:,.0f}"),
    ("J/img (device)", "device_energy_per_image_j", "{:.3g}"), ("overlap", "overlap_mean", "{:.1f}"),
    ("run_sample_fid", "run_sample_fid", "{:.2f}"),
    ("run_sample_acc", "run_sample_class_accuracy", "{:.3f}"),
    ("run_sample_svm_acc", "run_sample_svm_class_accuracy", "{:.3f}"),
    ("run_sample_n", "run_sample_images", "{}"),
]
QUALITY_NOTE = ("fid, kid, class_acc (the digit classifier's), svm_acc, pca_fd (the second judge's: an SVM "
                "and a PCA on raw pixels), agree (share of images where both judges say the same of the "
                "requested digit): each plan the strategy used, judged on n_quality images of its own "
                "(generated locally, cached), weighted by the plan's requests; run_sample_*: the run's own "
                "delivered images, too few to rank strategies by")
ENERGY_NOTE = ("J/img (device): the requesting device's compute and radio energy per delivered image "
               "(analysis/energy.py); every host's compute: compute_energy_per_image_j in summary.json")
OVERLAP_NOTE = ("overlap: other requests in flight during each of the strategy's (mean; interleaved "
                "strategies share links and hosts, analysis/interleaving.py)")
OVERRUN_NOTE = ("! profiled compute overran: steps took longer than their profile, so these strategies' "
                "times are this machine's, not the emulated hardware's")
NO_REASON = "(no reason recorded)"


PlanFigures = dict[tuple[str, str, int], dict[str, Any]]  # (plan, scheduler, steps) -> figures


def per_request(requests: pd.DataFrame) -> pd.DataFrame:
    """One row per request (its first stage row carries the request-level fields)."""
    if requests.empty:
        return requests
    return requests.sort_values("stage_index", na_position="first").groupby("request_id", sort=False).first()


def json_safe(value: Any) -> Any:
    """JSON-safe: NaN and infinities become None, numpy scalars Python ones, all the way down."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return json_safe(value.item())
    return value


def summarize(requests: pd.DataFrame, traffic: pd.DataFrame | None, samples_dir: Path,
              quality: bool = True, *, plan_images: int | None = None, cache_dir: Path | None = None,
              progress: bool | None = None, network: Mapping[str, Any] | None = None,
              power: Mapping[str, HardwarePower] | None = None) -> dict[str, dict[str, Any]]:
    """Per strategy, the aggregates of the module docstring; {} for a frame with no request.

    `plan_images` and `cache_dir` override analysis.plan_quality's defaults (500 images,
    $EDGESTAGE_CACHE); `progress` (default: stderr is a terminal) shows the generation's bars.
    `network` (the run's network.json) gives the devices' radios: without it the devices' energy
    is unknown (None); `power` (default: nodes/profiles.toml's, `load_power()`) the hardware's."""
    reqs = per_request(requests)
    if reqs.empty:
        return {}
    energy = request_energy(requests, network, load_power() if power is None else power)
    overlap = overlaps(reqs)
    wire, by_link, reports = _wire(traffic)
    boundaries = bytes_by_boundary(boundary_table(requests[requests["outcome"] == "ok"], traffic))
    ok_all = reqs[reqs["outcome"] == "ok"]
    planned = ok_all[_cascades(ok_all).isna()]  # a cascade's quality is its table's, not its first plan's
    per_plan = (_plans_quality(planned, plan_images, cache_dir, progress)
                if quality and len(planned) else {})
    out: dict[str, dict[str, Any]] = {}
    for strategy, group in reqs.groupby("strategy", sort=False):
        ok = group[group["outcome"] == "ok"]
        entry = _costs(group, ok, requests, wire, by_link, reports)
        entry.update(_overruns(requests[requests["request_id"].isin(group.index)]))
        entry.update(_energy(ok, energy))
        crossed = boundaries.get(str(strategy), {})
        if set(crossed) - {"dispatch", "state", "result"}:  # a latent pipeline's: what each boundary carries
            entry["boundary_bytes_per_image"] = crossed
        mine = overlap.loc[group.index]
        entry.update(overlap_mean=float(mine["overlapping"].mean()),
                     overlap_same_device_mean=float(mine["overlapping_same_device"].mean()))
        cascading = _cascades(ok).notna().any()
        if cascading:
            entry.update(_escalations(ok))
        if quality and len(ok):
            entry.update(_cascade_quality(ok) if cascading else _strategy_quality(ok, per_plan))
        if quality and entry["images"] >= 2:
            entry.update(_run_sample_quality(ok, samples_dir))
        out[str(strategy)] = json_safe(entry)
    return out


def _wire(traffic: pd.DataFrame | None) -> tuple[pd.Series, pd.DataFrame, pd.Series]:
    """Wire bytes per request, per request and link, and of reports per request, of the packets
    attributed to a request."""
    if traffic is None or traffic.empty:
        return pd.Series(dtype=float), pd.DataFrame(), pd.Series(dtype=float)
    attributed = traffic.dropna(subset=["request_id"])
    # a cascade's escalation travels as a request of its own: its bytes are its cascade request's
    attributed = attributed.assign(request_id=attributed["request_id"].map(request_of))
    wire = attributed.groupby("request_id")["wire_bytes"].sum()
    by_link = attributed.groupby(["request_id", "link"])["wire_bytes"].sum().unstack(fill_value=0.0)
    reports = attributed[attributed["kind"] == "report"].groupby("request_id")["wire_bytes"].sum()
    return wire, by_link, reports


def _failures(group: pd.DataFrame) -> pd.DataFrame:
    failed = group[group["outcome"] == "failed"]
    reasons = failed["reason"].astype(object).where(failed["reason"].notna(), NO_REASON)
    return pd.DataFrame({"request_id": failed.index.astype(str), "reason": reasons.astype(str)})


def _costs(group: pd.DataFrame, ok: pd.DataFrame, requests: pd.DataFrame, wire: pd.Series,
           by_link: pd.DataFrame, reports: pd.Series) -> dict[str, Any]:
    """Counts, failures with their reasons, latency, deadlines, overruns and bytes of one strategy."""
    totals = ok["total_s"].astype(float)
    images = int(ok["n_images"].sum())
    rows = requests[requests["request_id"].isin(ok.index)]
    failures = _failures(group)
    done = len(ok) > 0
    entry: dict[str, Any] = {
        "requests": len(group), "done": len(ok), "failed": len(failures), "images": images,
        "failure_reasons": failures["reason"].value_counts().to_dict(),
        "failures": failures.to_dict("records"),  # every failed request, with its reason
        "plans": ok["plan"].value_counts().to_dict(),
        "plans_without_hosts": ok["plan_key"].value_counts().to_dict(),
        "latency_mean_s": totals.mean() if done else None,
        **_mean_interval(totals),
        "latency_p50_s": totals.quantile(0.5) if done else None,
        "latency_p95_s": totals.quantile(0.95) if done else None,
        "compute_s_mean": rows.groupby("request_id")["compute_s"].sum().mean() if done else None,
        "transfer_s_mean": (rows.groupby("request_id")[["transfer_s", "result_transfer_s"]].sum()
                            .sum(axis=1).mean()) if done else None,
        "deadline_met": int(ok["deadline_met"].fillna(False).astype(bool).sum())
        if ok["deadline_met"].notna().any() else None,
        "wire_bytes": float(wire.reindex(ok.index).fillna(0).sum()) if len(wire) else None,
        "wire_bytes_per_image": (float(wire.reindex(ok.index).fillna(0).sum()) / images)
        if len(wire) and images else None,
        "report_bytes_per_image": (float(reports.reindex(ok.index).fillna(0).sum()) / images)
        if len(wire) and images else None,
        "payload_bytes_per_image": (float(rows["message_bytes"].fillna(0).sum()
                                          + rows["result_message_bytes"].fillna(0).sum()) / images)
        if images else None,
    }
    if not by_link.empty:  # where the strategy's bytes go: access links, backhaul ...
        links = by_link.reindex(ok.index).fillna(0.0).sum()
        entry["wire_bytes_by_link"] = {str(k): float(v) for k, v in links.items() if v > 0}
    return entry


def _mean_interval(totals: pd.Series) -> dict[str, Any]:
    """The 95 % bootstrap interval of the mean latency (analysis/statistics.py)."""
    from analysis.statistics import mean_interval

    interval = mean_interval(totals.to_numpy())
    return {"latency_mean_ci_low_s": interval.low, "latency_mean_ci_high_s": interval.high}


def _overruns(rows: pd.DataFrame) -> dict[str, Any]:
    """Profiled steps that took longer than their profile, over all of a strategy's stage rows."""
    steps = rows["overrun_steps"].fillna(0).astype(int)
    per_request_steps = steps.groupby(rows["request_id"]).sum()
    return {"overrun_steps": int(steps.sum()), "overrun_s": float(rows["overrun_s"].fillna(0.0).sum()),
            "overrun_requests": int((per_request_steps > 0).sum())}


def _energy(ok: pd.DataFrame, energy: pd.DataFrame) -> dict[str, Any]:
    """Joules per delivered image; None where any ok request's figure is unknown (a partial sum
    would understate it) or nothing was delivered."""
    images = int(ok["n_images"].sum())
    mine = energy.reindex(ok.index)

    def per_image(column: str) -> float | None:
        values = mine[column]
        if not images or values.isna().any():
            return None
        return float(values.sum()) / images

    return {"device_energy_per_image_j": per_image("device_energy_j"),
            "device_radio_per_image_j": per_image("device_radio_j"),
            "compute_energy_per_image_j": per_image("total_compute_j")}


def _plan_usage(ok: pd.DataFrame) -> pd.DataFrame:
    """(plan without hosts, scheduler, steps) -> ok requests, one row per distinct triple."""

    ok = ok[ok["plan_key"].notna()]
    frame = pd.DataFrame({"plan": ok["plan_key"].astype(str).to_numpy(),
                          "scheduler": ok["scheduler"].astype(str).to_numpy(),
                          "steps": ok["steps"].astype(int).to_numpy()})
    return frame.value_counts(sort=False).rename("requests").reset_index()


def _plans_quality(ok: pd.DataFrame, n: int | None, cache_dir: Path | None,
                   progress: bool | None) -> PlanFigures:
    """Figures of every plan any strategy used, one plans_quality call per (scheduler, steps) so
    that the large-only reference is generated once."""
    import sys

    from analysis.plan_quality import PLAN_QUALITY_SEED, PlanQualityKey, plans_quality

    progress = sys.stderr.isatty() if progress is None else progress
    usage = _plan_usage(ok)
    out: PlanFigures = {}
    for (scheduler, steps), group in usage.groupby(["scheduler", "steps"], sort=False):
        figures, good = {}, []
        latent = read_latent_table(str(scheduler), int(steps))
        for plan in group["plan"]:
            if all(is_pipeline_folder(m) for m in parse_plan(plan).models()):
                used = ok[(ok["plan_key"] == plan) & (ok["scheduler"].astype(str) == str(scheduler))]
                figures[plan] = _latent_figures(plan, latent, str(scheduler), int(steps), _guidance(used))
                continue
            try:  # a model not on this machine, say: that plan unjudged, the others still are
                PlanQualityKey.of(plan, str(scheduler), int(steps), PLAN_QUALITY_SEED, 2)
                good.append(plan)
            except (ValueError, OSError) as exc:
                figures[plan] = {"error": str(exc)}
        if good:
            figures.update(plans_quality(good, str(scheduler), int(steps), n=n, cache_dir=cache_dir,
                                         progress=progress))
        out.update({(plan, str(scheduler), int(steps)): f for plan, f in figures.items()})
    return out


def _guidance(rows: pd.DataFrame) -> float | None | str:
    """The one guidance scale these latent requests asked for (None: the request gave none, 7.5);
    a string saying why there is not one: several, or records from before it was recorded."""
    if "guidance_scale" not in rows:
        return "the run's records do not say the guidance scale (a run from before it was recorded)"
    scales = sorted({float(g) for g in rows["guidance_scale"].dropna()})
    if len(scales) > 1:
        return f"its requests asked for several guidance scales ({', '.join(f'{g:g}' for g in scales)})"
    return scales[0] if scales else None


def _latent_figures(plan: str, table: Mapping[tuple[str, float], Mapping[str, Any]], scheduler: str,
                    steps: int, guidance: float | None | str) -> dict[str, Any]:
    """A latent plan's figures: its row of the latent quality table at the guidance scale its
    requests asked for (measured offline on the embedded pipelines' evaluation prompts,
    analysis/latent_quality_table.py), not regenerated."""
    if isinstance(guidance, str):
        return {"error": guidance}
    key = latent_key(plan, guidance)
    row = table.get(key)
    if row is None:
        return {"error": f"no row in the latent quality table of {scheduler}/{steps} steps at guidance "
                         f"{key[1]:g} (not measured)"}
    return {"n_images": int(row["n"]), "fid": row["fid"], "kid": row["kid"],
            "class_accuracy": row["class_accuracy"], "psnr_vs_large_db": row["psnr_vs_large"],
            "cache_file": str(latent_table_path(scheduler, steps).name)}


def _strategy_quality(ok: pd.DataFrame, per_plan: PlanFigures) -> dict[str, Any]:
    """The plans a strategy used with their figures, and those figures weighted by requests."""
    plans = []
    for row in _plan_usage(ok).to_dict("records"):
        figures = per_plan[(row["plan"], row["scheduler"], row["steps"])]
        if "error" in figures:
            return {"quality_error": f"{row['plan']}: {figures['error']}"}
        plans.append({**row, "n_images": figures["n_images"], **{k: figures.get(k) for k in PLAN_FIGURES},
                      "cache_file": figures.get("cache_file")})
    if not plans:
        return {}
    weights = [p["requests"] for p in plans]
    entry: dict[str, Any] = {"plan_quality": plans, "n_quality": min(p["n_images"] for p in plans)}
    for key in PLAN_FIGURES:
        values = [p[key] for p in plans]
        # None where a plan has no figure (PSNR of large-only: it is the reference)
        entry[key] = (None if any(v is None for v in values)
                      else sum(w * v for w, v in zip(weights, values, strict=True)) / sum(weights))
    return entry


def _cascades(reqs: pd.DataFrame) -> pd.Series:
    """Per request, its cascade (`small>large@0.9`), or NaN; all NaN for a run from before cascades."""
    return reqs["cascade"] if "cascade" in reqs else pd.Series(float("nan"), index=reqs.index, dtype=object)


def _escalations(ok: pd.DataFrame) -> dict[str, Any]:
    """How many of a cascade's delivered images its devices' gates sent up again."""
    images = int(ok["n_images"].sum())
    escalated = int(ok["escalated_images"].fillna(0).sum())
    return {"escalated_images": escalated, "escalation_rate": escalated / images if images else None,
            "escalated_requests": int((ok["escalated_images"].fillna(0) > 0).sum())}


def _cascade_quality(ok: pd.DataFrame) -> dict[str, Any]:
    """A cascade's figures: the cascade table's row of its models and threshold (n images of its
    own, nodes/pretrained/cascade/), weighted by requests like a plan's."""
    from nodes.planning.cascade_table import cascade_figures, is_latent_cascade, parse_cascade

    usage = pd.DataFrame({"cascade": ok["cascade"].astype(str), "scheduler": ok["scheduler"].astype(str),
                          "steps": ok["steps"].astype(int)}).value_counts(sort=False)
    plans = []
    for (cascade, scheduler, steps), requests in usage.items():
        used = ok[ok["cascade"].astype(str) == cascade]
        guidance = _guidance(used) if is_latent_cascade(parse_cascade(cascade)[0]) else None
        try:
            if isinstance(guidance, str):
                raise ValueError(guidance)
            row = cascade_figures(*parse_cascade(cascade), scheduler, int(steps), guidance)
        except ValueError as exc:
            return {"quality_error": f"cascade {cascade}: {exc}"}
        plans.append({"plan": f"cascade {cascade}", "scheduler": scheduler, "steps": int(steps),
                      "requests": int(requests), "n_images": row["n"],
                      "table_escalation_rate": row["escalation_rate"],
                      "guidance_scale": row.get("guidance_scale"),  # a latent cascade's table row's
                      **{k: row.get(k) for k in PLAN_FIGURES}})
    weights = [p["requests"] for p in plans]
    entry: dict[str, Any] = {"plan_quality": plans, "n_quality": min(p["n_images"] for p in plans)}
    for key in (*PLAN_FIGURES, "table_escalation_rate"):
        values = [p[key] for p in plans]
        entry[key] = (None if any(v is None or v != v for v in values)
                      else sum(w * float(v) for w, v in zip(weights, values, strict=True)) / sum(weights))
    return entry


def _run_sample_quality(ok: pd.DataFrame, samples_dir: Path) -> dict[str, Any]:
    """Quality of the run's own delivered images, pooled: few, so only named as what they are.
    A cascade request delivered its escalation's images in place of the ones its gate doubted.  A
    latent pipeline's images are judged as their grey image against the digit each prompt names."""
    import torch

    from analysis.quality import quality_table
    from nodes.diffusion.digits import as_digit_images
    from nodes.diffusion.samples import load_samples

    indices = (ok["escalated_indices"] if "escalated_indices" in ok
               else pd.Series(None, index=ok.index, dtype=object))
    images, labels = [], []
    for rid, doubted in indices.items():
        path = Path(samples_dir) / f"{rid}.npz"
        if not path.is_file():
            continue
        s = load_samples(path)
        wanted = s.labels if s.labels is not None else _prompted_digits(s.prompts or ())
        if wanted is None:  # a latent pipeline's images whose prompts name no digit: nothing to judge by
            continue
        delivered = s.images.clone()
        if isinstance(doubted, str) and doubted:
            escalation = load_samples(path.with_name(f"{rid}{ESCALATION_SUFFIX}.npz"))
            delivered[[int(i) for i in doubted.split(",")]] = escalation.images
        images.append(as_digit_images(delivered))  # a latent pipeline's: the grey image, as the judges see it
        labels.append(wanted)
    if sum(len(x) for x in images) < 2:
        return {}
    table = quality_table(torch.cat(images), torch.cat(labels))
    judged = ("fid", "kid", "kid_std", "class_accuracy", *SECOND_JUDGE)  # no PSNR: no reference here
    return {**{f"run_sample_{k}": table[k] for k in judged}, "run_sample_images": table["n"]}


def _prompted_digits(prompts: tuple[str, ...]) -> Any:
    """The digit each prompt names, as a tensor; None where one names none."""
    import torch

    from nodes.diffusion.digit_attributes import prompt_digit

    digits = [prompt_digit(p) for p in prompts]
    return None if not digits or None in digits else torch.tensor(digits)


def format_table(summary: dict[str, dict[str, Any]], title: str = "") -> str:
    """The terminal table: one row per strategy (`!` after one whose profiled compute overran), its
    notes, an `overran:` line saying by how much, and each strategy's failure reasons."""
    header = [c[0] for c in TABLE_COLUMNS]
    body = []
    for strategy, entry in summary.items():
        row = []
        name = strategy + ("!" if entry.get("overrun_steps") else "")
        for _, key, fmt in TABLE_COLUMNS:
            value = {"strategy": name, "latency_mean_ci_s": _ci(entry)}.get(key, entry.get(key))
            row.append("-" if value is None else fmt.format(value))
        body.append(row)
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]
    lines = [title] if title else []
    lines.append("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths,
                                                                                              strict=True))))
    for r in body:
        lines.append("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths,
                                                                                                strict=True))))
    if not summary:
        lines.append("no request was recorded")
    if any("n_quality" in e or "run_sample_images" in e for e in summary.values()):
        lines.append(QUALITY_NOTE)
    if any(e.get("device_energy_per_image_j") is not None for e in summary.values()):
        lines.append(ENERGY_NOTE)
    if len(summary) > 1 and any(e.get("overlap_mean") for e in summary.values()):
        lines.append(OVERLAP_NOTE)
    overran = overrun_line(summary)
    if overran:
        lines += [overran, OVERRUN_NOTE]
    lines += [f"{strategy} failures: {format_reasons(e['failure_reasons'])}"
              for strategy, e in summary.items() if e.get("failure_reasons")]
    return "\n".join(lines)


def _ci(entry: dict[str, Any]) -> str | None:
    low, high = entry.get("latency_mean_ci_low_s"), entry.get("latency_mean_ci_high_s")
    return None if low is None or high is None else f"{low:.3f}-{high:.3f}"


def overrun_parts(summary: dict[str, dict[str, Any]]) -> list[str]:
    """`cloud_only 12 steps in 3 requests, +0.84 s`, one per strategy whose profiled compute overran."""
    return [f"{name} {_count(e['overrun_steps'], 'step')} in "
            f"{_count(e.get('overrun_requests') or 0, 'request')}, +{e.get('overrun_s') or 0.0:.2f} s"
            for name, e in summary.items() if e.get("overrun_steps")]


def overrun_line(summary: dict[str, dict[str, Any]]) -> str | None:
    """`overran: cloud_only 12 steps in 3 requests, +0.84 s; ...`, or None when no strategy overran."""
    parts = overrun_parts(summary)
    return "overran: " + "; ".join(parts) if parts else None


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def format_reasons(reasons: dict[str, int]) -> str:
    """`timeout (3); node down (1)`: each reason a request failed for, with how many."""
    return "; ".join(f"{reason} ({count})" for reason, count in reasons.items())


def format_accuracy(headline: dict[str, Any]) -> str:
    """Two lines under the table: how far the figures above can be trusted (accuracy.json)."""
    def fmt(value: Any, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    return (f"state transfer time / (bytes/bw + delay), warm connections, p50: "
            f"{fmt(headline.get('state_transfer_ratio_warm_p50'), '.2f')}; "
            f"latency parts add up (within 2 %): {headline.get('latency_parts_within_2pct', '-')}\n"
            f"wire bytes / (payload + 66 B per packet), p50: "
            f"{fmt(headline.get('wire_accounting_ratio_p50'), '.3f')}  (details: accuracy.json)"
            + _prediction_line(headline) + _planner_line(headline))


def _prediction_line(headline: dict[str, Any]) -> str:
    return _figure_line(headline, "request_prediction", "ratio_p50", "{:.3f}",
                        "profiled request latency / (profiled steps + bytes/bw + delay per hop), p50")


def _planner_line(headline: dict[str, Any]) -> str:
    return _figure_line(headline, "planner_prediction", "abs_error_p50", "{:.1%}",
                        "coordinator's latency prediction at planning (live estimates) vs measured, "
                        "median |error|")


def _figure_line(headline: dict[str, Any], prefix: str, key: str, spec: str, what: str) -> str:
    """One more line for a headline figure over n requests; nothing where there were none."""
    n = headline.get(f"{prefix}_n")
    if not n:
        return ""
    return f"\n{what}: {spec.format(headline.get(f'{prefix}_{key}'))} over {n} requests"


def format_memory(memory: dict[str, Any]) -> str:
    """One line: the node processes' memory while all were up (summary.json's node_memory)."""
    if not memory:
        return "node memory: not measured (no node was running)"
    return (f"node memory, MB, all nodes up: PSS per node median {memory['node_pss_median_mb']:.0f}, "
            f"max {memory['node_pss_max_mb']:.0f} (RSS max {memory['node_rss_max_mb']:.0f}, shared pages "
            f"counted in full); nodes and launcher together {memory['total_pss_mb']:.0f}")
