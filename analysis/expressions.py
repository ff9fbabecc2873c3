"""A small expression language over a table of strategies (one row per strategy), for benchmark
targets written as data (analysis/targets.py).  Parsed by hand and evaluated on a tree: no eval().

    value  := term (("+" | "-") term)*
    term   := factor (("*" | "/") factor)*
    factor := "-" factor | NUMBER | CELL | CALL | "(" value ")"
    CELL   := STRATEGY "." COLUMN                 cloud_only.latency_mean_s, `cascade-0.9`.fid
    CALL   := abs(value) | min(value, value, ...) | max(value, value, ...)
            | min_of(COLUMN, [STRATEGY, ...]) | max_of(COLUMN, [STRATEGY, ...])
            | min_of(COLUMN, [STRATEGY, ...], meets_floor)
    condition := value ("<=" | ">=" | "<" | ">" | "==" | "!=") value

Comparisons (and a target's bounds) take two values equal within float rounding as equal (`same`).

A STRATEGY is a name (letters, digits, `_`), or any name in backquotes; `each` is the strategy a
target is being checked for (a target's `each` pattern).  `min_of(c, [a, b], meets_floor)` is the
least `c` among those of a, b that are in the table, served requests and meet the quality floor
(class accuracy at least the floor's minimum, FID at most its maximum); the strategy it took is
recorded.  A cell whose strategy is not in the table (or served nothing), an empty cell, a
`min_of` with no strategy left and a division by zero make the whole value missing (`Missing`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

Number = int | float
EACH = "each"
FUNCTIONS = ("abs", "min", "max")
OVER = ("min_of", "max_of")
FLOOR_FLAG = "meets_floor"


def same(a: float, b: float) -> bool:
    """Equal but for float rounding: 0.962 - 0.952 is one point, not 0.010000000000000009 of one."""
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def at_most(a: float, b: float) -> bool:
    return a <= b or same(a, b)


def at_least(a: float, b: float) -> bool:
    return a >= b or same(a, b)


_COMPARE = {"<=": at_most, ">=": at_least, "<": lambda a, b: a < b and not same(a, b),
            ">": lambda a, b: a > b and not same(a, b), "==": same, "!=": lambda a, b: not same(a, b)}
_TOKEN = re.compile(r"\s*(?:(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)|(?P<name>[A-Za-z_]\w*)"
                    r"|`(?P<quoted>[^`]+)`|(?P<op><=|>=|==|!=|[-+*/(),.\[\]<>]))")


class Missing(Exception):
    """The table lacks what the expression needs: its value is unknown, not false."""


@dataclass
class Rows:
    """What an expression is evaluated against: each strategy's row (only those that served
    requests), the quality floor, the strategy `each` names, and the strategies `min_of` took."""

    rows: Mapping[str, Mapping[str, Any]]
    floor: Mapping[str, float | None] = field(default_factory=dict)
    each: str | None = None
    picked: list[str] = field(default_factory=list)

    def cell(self, strategy: str, column: str) -> Number:
        name = self.each if strategy == EACH else strategy
        if name is None or name not in self.rows:
            raise Missing(strategy)
        value = self.rows[name].get(column)
        value = value.item() if hasattr(value, "item") else value  # numpy scalars: plain numbers
        if value is None or isinstance(value, str) or (isinstance(value, float) and math.isnan(value)):
            raise Missing(f"{name}.{column}")
        return value

    def meets_floor(self, strategy: str) -> bool:
        low, high = self.floor.get("min_class_accuracy"), self.floor.get("max_fid")
        try:
            return ((low is None or self.cell(strategy, "class_accuracy") >= low)
                    and (high is None or self.cell(strategy, "fid") <= high))
        except Missing:
            return False


@dataclass(frozen=True)
class Expression:
    text: str
    tree: tuple

    def evaluate(self, rows: Rows) -> Any:
        """A number (a value) or a bool (a condition); Missing where the table lacks a cell."""
        return _evaluate(self.tree, rows)


def parse(text: str, columns: Collection[str] | None = None, condition: bool = False,
          each: bool = False) -> Expression:
    """A value (or, with `condition`, a comparison of two); ValueError naming what is wrong.
    `columns`: the columns a cell may name (None: any); `each`: whether `each.` may be used."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("an expression must be a non-empty string")
    parser = _Parser(_tokens(text), columns, each)
    tree = parser.condition() if condition else parser.value()
    if parser.peek() is not None:
        raise ValueError(f"{text!r}: unexpected {parser.peek()[1]!r}")
    return Expression(text, tree)


def _tokens(text: str) -> list[tuple[str, str]]:
    out, at = [], 0
    while text[at:].strip():
        match = _TOKEN.match(text, at)
        if not match:
            raise ValueError(f"{text!r}: cannot read {text[at:].strip()[:12]!r}")
        kind = match.lastgroup or "op"
        out.append(("name" if kind == "quoted" else kind, match.group(kind)))
        at = match.end()
    return out


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]], columns: Collection[str] | None, each: bool):
        self.tokens, self.at, self.columns, self.each = tokens, 0, columns, each

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self, kind: str, text: str | None = None) -> str:
        token = self.peek()
        if token is None or token[0] != kind or (text is not None and token[1] != text):
            wanted = repr(text) if text else f"a {kind}"
            found = f"found {token[1]!r}" if token else "found the end"
            raise ValueError(f"expected {wanted}, {found}")
        self.at += 1
        return token[1]

    def accept(self, text: str) -> bool:
        token = self.peek()
        if token is not None and token[0] == "op" and token[1] == text:
            self.at += 1
            return True
        return False

    def condition(self) -> tuple:
        left = self.value()
        token = self.peek()
        if token is None or token[1] not in _COMPARE:
            raise ValueError("a condition compares two values (<=, >=, <, >, ==, !=)")
        self.at += 1
        return ("cmp", token[1], left, self.value())

    def value(self) -> tuple:
        tree = self.term()
        while (token := self.peek()) is not None and token[0] == "op" and token[1] in ("+", "-"):
            self.at += 1
            tree = ("bin", token[1], tree, self.term())
        return tree

    def term(self) -> tuple:
        tree = self.factor()
        while (token := self.peek()) is not None and token[0] == "op" and token[1] in ("*", "/"):
            self.at += 1
            tree = ("bin", token[1], tree, self.factor())
        return tree

    def factor(self) -> tuple:
        if self.accept("-"):
            return ("neg", self.factor())
        if self.accept("("):
            tree = self.value()
            self.take("op", ")")
            return tree
        token = self.peek()
        if token is None:
            raise ValueError("expected a value at the end")
        if token[0] == "num":
            self.at += 1
            number = token[1]
            return ("num", float(number) if any(c in number for c in ".eE") else int(number))
        name = self.take("name")
        if self.accept("("):
            return self.call(name)
        self.take("op", ".")
        return ("cell", self.strategy(name), self.column())

    def call(self, name: str) -> tuple:
        if name in OVER:
            column = self.column()
            self.take("op", ",")
            self.take("op", "[")
            names = [self.strategy(self.take("name"))]
            while self.accept(","):
                names.append(self.strategy(self.take("name")))
            self.take("op", "]")
            floor = self.accept(",") and self.take("name", FLOOR_FLAG) == FLOOR_FLAG
            self.take("op", ")")
            return ("over", name, column, tuple(names), bool(floor))
        if name not in FUNCTIONS:
            raise ValueError(f"unknown function {name!r} (known: {', '.join(FUNCTIONS + OVER)})")
        args = [self.value()]
        while self.accept(","):
            args.append(self.value())
        self.take("op", ")")
        if (name == "abs") != (len(args) == 1):
            raise ValueError(f"{name}() takes {'one value' if name == 'abs' else 'two values or more'}")
        return ("call", name, tuple(args))

    def strategy(self, name: str) -> str:
        if name == EACH and not self.each:
            raise ValueError("`each` names the strategy an `each` pattern matched; this target has none")
        return name

    def column(self) -> str:
        name = self.take("name")
        if self.columns is not None and name not in self.columns:
            raise ValueError(f"unknown column {name!r} (columns: {', '.join(self.columns)})")
        return name


def _evaluate(tree: tuple, rows: Rows) -> Any:
    kind = tree[0]
    if kind == "num":
        return tree[1]
    if kind == "cell":
        return rows.cell(tree[1], tree[2])
    if kind == "neg":
        return -_evaluate(tree[1], rows)
    if kind == "bin":
        a, b = _evaluate(tree[2], rows), _evaluate(tree[3], rows)
        if tree[1] == "/":
            if b == 0:
                raise Missing("division by zero")
            return a / b
        return a + b if tree[1] == "+" else a - b if tree[1] == "-" else a * b
    if kind == "call":
        args = [_evaluate(a, rows) for a in tree[2]]
        return abs(args[0]) if tree[1] == "abs" else min(args) if tree[1] == "min" else max(args)
    if kind == "over":
        _, how, column, names, floor = tree
        taken = {}
        for name in names:
            if name in rows.rows and (not floor or rows.meets_floor(name)):
                try:
                    taken[name] = rows.cell(name, column)
                except Missing:
                    continue
        if not taken:
            raise Missing(f"{how}: none of {', '.join(names)}")
        best = (min if how == "min_of" else max)(taken, key=taken.__getitem__)
        rows.picked.append(best)
        return taken[best]
    return _COMPARE[tree[1]](_evaluate(tree[2], rows), _evaluate(tree[3], rows))
