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
"""

from __future__ import annotations

import fnmatch
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.expressions import Expression, Missing, Rows, parse

DEFAULT_TARGETS = Path(__file__).resolve().parents[1] / "scenarios" / "bench-targets.toml"
_KEYS = {"name", "value", "at_least", "at_most", "when", "each", "note"}


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
                  floor: Mapping[str, float | None] | None = None) -> list[dict[str, Any]]:
    """Each target's checks on `table` (one row per strategy, a `strategy` column): check (the
    name; `STRATEGY: name` for an `each` target; the strategies a min_of/max_of took in brackets),
    value, target (the bound) and met (None where the table cannot say)."""
    records = table.to_dict("records")
    served = {r["strategy"]: r for r in records if _served(r)}
    checks = []
    for target in targets:
        if target.each is None:
            checks.append(_check(target, Rows(served, floor or {}), target.name))
            continue
        matched = [r["strategy"] for r in records if fnmatch.fnmatchcase(str(r["strategy"]), target.each)]
        for name in matched or [target.each]:
            rows = Rows(served, floor or {}, each=name if matched else None)
            checks.append(_check(target, rows, f"{name}: {target.name}"))
    return checks


def _served(row: Mapping[str, Any]) -> bool:
    done = row.get("done", 1)
    return done is not None and not pd.isna(done) and done > 0


def _check(target: Target, rows: Rows, label: str) -> dict[str, Any]:
    value: Any = None
    met: bool | None = None
    try:
        value = target.value.evaluate(rows)
        met = ((target.at_least is None or value >= target.at_least)
               and (target.at_most is None or value <= target.at_most)
               and all([c.evaluate(rows) for c in target.when]))
    except Missing:
        met = None  # the value may be known while a condition is not: met stays unknown
    if rows.picked:
        label = f"{label} ({', '.join(dict.fromkeys(rows.picked))})"
    return {"check": label, "value": value, "target": target.bound(),
            "met": None if met is None else bool(met)}
