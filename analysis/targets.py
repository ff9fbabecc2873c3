"""Benchmark targets as data: a TOML file of `[[target]]` entries, each checked on a table with one
row per strategy (`edgestage compare`'s).  The shipped one is scenarios/bench-targets.toml.

    [[target]]
    name = "elastic mean / oracle mean"          # what compare.json's `check` says
    value = "elastic.latency_mean_s / oracle.latency_mean_s"
    at_most = 1.10                               # and/or at_least
    when = ["elastic.fid <= 1.05 * cloud_only.fid"]   # optional: conditions met also needs
    each = "cascade*"                            # optional: one check per strategy matching it,
                                                 # named `each` in the expressions
    note = "the paper's figure"                  # optional: shown beside the bound

`value` and `when` are expressions of analysis/expressions.py.  A check is {check, value, target,
met}: met is None where the table lacks what the value or a condition needs (a strategy not run,
or that served nothing), and an `each` pattern that matches no strategy gives one such check.

Judged on the interval, not the point: a value that is one strategy's `latency_mean_s` or
`latency_p95_s` is judged on its confidence interval (the table's `..._ci_low_s` and
`..._ci_high_s` columns, where the table has them), and a ratio of two strategies' mean latencies
(`a.latency_mean_s / b.latency_mean_s`) on the paired ratio's interval over the requests both
completed (where check_targets is given `paired`, as compare_table does).  An `at_most` is met only
if the interval's upper end is at most the bound, an `at_least` only if its lower end is at least
it; no interval (fewer than two requests) leaves met None.  Such a check also has `interval`, and
its `target` text says what was judged (the paired ratio with its interval, p-value and n).
Every other value is judged on its point.
"""

from __future__ import annotations

import fnmatch
import math
import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.expressions import EACH, Expression, Missing, Rows, at_least, at_most, parse
from analysis.statistics import Paired

DEFAULT_TARGETS = Path(__file__).resolve().parents[1] / "scenarios" / "bench-targets.toml"
_KEYS = {"name", "value", "at_least", "at_most", "when", "each", "note"}
# the table's columns that have an interval, and the columns holding its ends
CI_COLUMNS = {"latency_mean_s": ("latency_mean_ci_low_s", "latency_mean_ci_high_s"),
              "latency_p95_s": ("latency_p95_ci_low_s", "latency_p95_ci_high_s")}
RATIO_COLUMN = "latency_mean_s"  # a ratio of two strategies' means is judged on the paired ratio
PairedRatio = Callable[[str, str], Paired | None]


@dataclass(frozen=True)
class Target:
    name: str
    value: Expression
    at_least: float | None = None
    at_most: float | None = None
    when: tuple[Expression, ...] = ()
    each: str | None = None
    note: str | None = None

    def bound(self) -> str:
        parts = [f">= {self.at_least:g}"] if self.at_least is not None else []
        parts += [f"<= {self.at_most:g}"] if self.at_most is not None else []
        return " and ".join(parts) + (f" ({self.note})" if self.note else "")


def load_targets(path: str | Path, columns: Collection[str] | None = None) -> list[Target]:
    """The targets of a file, every expression parsed; ValueError, one line naming the file and
    the entry, on anything wrong.  `columns`: the table's columns a cell may name."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"--targets {path}: cannot read it ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"--targets {path}: not TOML ({str(exc).splitlines()[0]})") from None
    return parse_targets(data, str(path), columns)


def parse_targets(data: Mapping[str, Any], source: str,
                  columns: Collection[str] | None = None) -> list[Target]:
    """load_targets for an already read table (`source` names it in errors)."""
    extra = set(data) - {"target"}
    entries = data.get("target")
    if extra or not isinstance(entries, list) or not entries:
        raise ValueError(f"--targets {source}: expected [[target]] entries only"
                         + (f" (unknown: {', '.join(sorted(extra))})" if extra else ""))
    return [_target(entry, f"--targets {source}: target {i}", columns) for i, entry in enumerate(entries, 1)]


def _target(entry: Any, where: str, columns: Collection[str] | None) -> Target:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: not a table")
    name = entry.get("name")
    if isinstance(name, str) and name:
        where = f"{where} ({name!r})"
    try:
        if not isinstance(name, str) or not name.strip():
            raise ValueError("needs a name (a non-empty string)")
        if unknown := set(entry) - _KEYS:
            raise ValueError(f"unknown key {sorted(unknown)[0]!r} (keys: {', '.join(sorted(_KEYS))})")
        each = entry.get("each")
        if each is not None and (not isinstance(each, str) or not each):
            raise ValueError("each: a strategy name pattern, e.g. \"cascade*\"")
        bounds = {k: entry.get(k) for k in ("at_least", "at_most")}
        if all(v is None for v in bounds.values()):
            raise ValueError("needs a bound: at_least or at_most")
        for key, bound in bounds.items():
            if bound is not None and (isinstance(bound, bool) or not isinstance(bound, int | float)):
                raise ValueError(f"{key}: {bound!r} is not a number")
        when = entry.get("when", [])
        if isinstance(when, str):
            when = [when]
        if not isinstance(when, list):
            raise ValueError("when: a condition or a list of them")
        note = entry.get("note")
        if note is not None and not isinstance(note, str):
            raise ValueError("note: a string")
        value = _expression(entry.get("value"), "value", columns, False, each is not None)
        conditions = tuple(_expression(c, "when", columns, True, each is not None) for c in when)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    return Target(name, value, bounds["at_least"], bounds["at_most"], conditions, each, note)


def _expression(text: Any, key: str, columns: Collection[str] | None, condition: bool,
                each: bool) -> Expression:
    try:
        return parse(text, columns, condition=condition, each=each)
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from None


def check_targets(table: pd.DataFrame, targets: list[Target],
                  floor: Mapping[str, float | None] | None = None,
                  paired: PairedRatio | None = None) -> list[dict[str, Any]]:
    """Each target's checks on `table` (one row per strategy, a `strategy` column): check (the
    name; `STRATEGY: name` for an `each` target; the strategies a min_of/max_of took in brackets),
    value, target (the bound) and met (None where the table cannot say).  `paired(a, b)`: the
    paired ratio of a's mean latency over b's (None where there is none); with it a ratio of two
    means is judged on its interval."""
    records = table.to_dict("records")
    served = {r["strategy"]: r for r in records if _served(r)}
    checks = []
    for target in targets:
        if target.each is None:
            checks.append(_check(target, Rows(served, floor or {}), target.name, paired))
            continue
        matched = [r["strategy"] for r in records if fnmatch.fnmatchcase(str(r["strategy"]), target.each)]
        for name in matched or [target.each]:
            rows = Rows(served, floor or {}, each=name if matched else None)
            checks.append(_check(target, rows, f"{name}: {target.name}", paired))
    return checks


def _served(row: Mapping[str, Any]) -> bool:
    done = row.get("done", 1)
    return done is not None and not pd.isna(done) and done > 0


def _check(target: Target, rows: Rows, label: str, paired: PairedRatio | None) -> dict[str, Any]:
    value: Any = None
    met: bool | None = None
    interval = None
    try:
        value = target.value.evaluate(rows)
        interval = _interval(target.value.tree, rows, paired)
        within = _within(target, interval) if interval is not None else _bounded(target, value)
        conditions = all([c.evaluate(rows) for c in target.when])
        met = None if within is None else within and conditions
    except Missing:
        met = None  # the value may be known while a condition is not: met stays unknown
    if rows.picked:
        label = f"{label} ({', '.join(dict.fromkeys(rows.picked))})"
    text = target.bound() + (f"; {_describe(target, interval)}" if interval is not None else "")
    check = {"check": label, "value": value, "target": text, "met": None if met is None else bool(met)}
    return check | ({"interval": interval} if interval is not None else {})


def _bounded(target: Target, value: Any) -> bool:
    return ((target.at_least is None or at_least(value, target.at_least))
            and (target.at_most is None or at_most(value, target.at_most)))


def _within(target: Target, interval: Mapping[str, Any]) -> bool | None:
    """Whether the whole interval meets the bounds; None where an end it needs is unknown."""
    ends = [(interval["low"], target.at_least, at_least), (interval["high"], target.at_most, at_most)]
    needed = [(end, bound, ok) for end, bound, ok in ends if bound is not None]
    if any(end is None for end, _, _ in needed):
        return None
    return all(ok(end, bound) for end, bound, ok in needed)


def _interval(tree: tuple, rows: Rows, paired: PairedRatio | None) -> dict[str, Any] | None:
    """The interval a value is judged on: a strategy's latency mean or p95 (the table's interval
    columns), or a ratio of two strategies' means (the paired ratio); None: judged on the point."""
    if tree[0] == "cell" and tree[2] in CI_COLUMNS:
        name = _name(tree[1], rows)
        row = rows.rows[name]
        low_column, high_column = CI_COLUMNS[tree[2]]
        if low_column not in row and high_column not in row:
            return None  # a table without intervals (one made before them): the point it is
        return {"kind": "interval", "of": name, "column": tree[2], "estimate": _number(row.get(tree[2])),
                "low": _number(row.get(low_column)), "high": _number(row.get(high_column)),
                "n": _number(row.get("done"))}
    if (paired is not None and tree[0] == "bin" and tree[1] == "/"
            and all(t[0] == "cell" and t[2] == RATIO_COLUMN for t in tree[2:4])):
        a, b = _name(tree[2][1], rows), _name(tree[3][1], rows)
        ratio = paired(a, b)
        if ratio is None:
            return None
        return {"kind": "paired ratio", "of": [a, b], "column": RATIO_COLUMN, "estimate": ratio.ratio,
                "low": ratio.low, "high": ratio.high, "p_value": ratio.p_value, "n": ratio.n_pairs,
                "confidence": ratio.confidence, "note": ratio.note}
    return None


def _name(strategy: str, rows: Rows) -> str:
    return rows.each if strategy == EACH and rows.each is not None else strategy


def _number(value: Any) -> float | None:
    value = value.item() if hasattr(value, "item") else value
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _describe(target: Target, interval: Mapping[str, Any]) -> str:
    """What was judged, e.g. `judged on the paired ratio 0.71× (95 % CI 0.62–0.8, p = 0.002,
    n = 32): met only if its upper end is <= 1.1`."""
    confidence = f"{100 * interval.get('confidence', 0.95):g} % CI"
    if interval["low"] is None or interval["high"] is None:
        span = f"no {confidence}: {interval.get('note') or 'fewer than two requests'}"
    else:
        span = f"{confidence} {interval['low']:.3g}\u2013{interval['high']:.3g}"
    if interval["kind"] == "paired ratio":
        p = interval["p_value"]
        shown = "-" if interval["estimate"] is None else f"{interval['estimate']:.3g}\u00d7"
        what = (f"the paired ratio {shown} ({span}, p = {'-' if p is None else f'{p:.2g}'}, "
                f"n = {interval['n']})")
    else:
        what = f"its {span} (n = {interval['n']})"
    ends = [f"its lower end is >= {target.at_least:g}"] if target.at_least is not None else []
    ends += [f"its upper end is <= {target.at_most:g}"] if target.at_most is not None else []
    return f"judged on {what}: met only if {' and '.join(ends)}"
