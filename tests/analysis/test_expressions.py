"""The targets' expression language: what it computes from a table's cells, when a value is
missing rather than false, and that anything outside the grammar is a one-line error (no eval)."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.expressions import Missing, Rows, parse

ROWS = {"cloud_only": {"latency_mean_s": 0.8, "latency_p95_s": 1.4, "fid": 1.458, "class_accuracy": 0.956,
                       "failed": np.int64(3)},
        "device_only": {"latency_mean_s": 0.3, "latency_p95_s": 0.4, "fid": 2.947, "class_accuracy": 0.832},
        "edge_only": {"latency_mean_s": 0.9, "latency_p95_s": 1.2, "fid": 1.5, "class_accuracy": 0.95},
        "elastic": {"latency_mean_s": 0.4, "latency_p95_s": 0.5, "fid": float("nan"), "failed": 1},
        "cascade-0.9": {"escalation_rate": 0.25}}
FLOOR = {"min_class_accuracy": 0.946, "max_fid": 1.53}


def value(text: str, each: str | None = None, condition: bool = False) -> object:
    return parse(text, condition=condition, each=each is not None).evaluate(Rows(ROWS, FLOOR, each=each))


@pytest.mark.parametrize(("text", "expected"), [
    ("cloud_only.latency_mean_s / elastic.latency_mean_s", 2.0),
    ("1 - elastic.latency_p95_s / cloud_only.latency_p95_s", 1 - 0.5 / 1.4),
    ("cloud_only.latency_mean_s - elastic.latency_mean_s", 0.8 - 0.4),
    ("2 + 3 * 4 - 6 / 3", 12.0),
    ("(2 + 3) * -4", -20),
    ("abs(device_only.class_accuracy - cloud_only.class_accuracy)", abs(0.832 - 0.956)),
    ("min(cloud_only.fid, device_only.fid, 1.2)", 1.2),
    ("max(cloud_only.fid, 2)", 2),
    ("1e-2 + .5", 0.51),
    ("1 - `cascade-0.9`.escalation_rate", 0.75),
])
def test_values_are_computed_from_cells(text, expected):
    assert value(text) == pytest.approx(expected)


def test_integer_cells_stay_integers():
    assert value("cloud_only.failed - elastic.failed") == 2 and isinstance(value("cloud_only.failed"), int)


def test_conditions_compare_two_values():
    assert value("abs(edge_only.class_accuracy - cloud_only.class_accuracy) <= 0.01", condition=True) is True
    assert value("cloud_only.fid > 1.05 * edge_only.fid", condition=True) is False
    assert value("each.escalation_rate == 0.25", each="cascade-0.9", condition=True) is True


def test_min_of_takes_the_least_among_those_meeting_the_floor_and_says_which():
    rows = Rows(ROWS, FLOOR)
    tree = parse("min_of(latency_p95_s, [cloud_only, edge_only, device_only, fixed_split], meets_floor)")
    assert tree.evaluate(rows) == 1.2 and rows.picked == ["edge_only"]  # device_only: under the floor
    rows = Rows(ROWS, FLOOR)
    assert parse("min_of(latency_p95_s, [cloud_only, device_only])").evaluate(rows) == 0.4
    assert rows.picked == ["device_only"]
    assert parse("max_of(latency_p95_s, [cloud_only, device_only])").evaluate(Rows(ROWS)) == 1.4
    assert parse("min_of(fid, [device_only], meets_floor)").evaluate(Rows(ROWS)) == 2.947  # no floor given


@pytest.mark.parametrize("text", [
    "oracle.latency_mean_s",  # a strategy not in the table
    "elastic.fid",  # an empty cell
    "elastic.class_accuracy",  # a cell the row lacks
    "cloud_only.fid / (elastic.failed - 1)",  # division by zero
    "min_of(latency_p95_s, [device_only, oracle], meets_floor)",  # none left
])
def test_what_the_table_lacks_is_missing_not_false(text):
    with pytest.raises(Missing):
        value(text)


@pytest.mark.parametrize(("text", "needle"), [
    ("elastic.latency_mean", "unknown column 'latency_mean'"),
    ("sqrt(elastic.fid)", "unknown function 'sqrt'"),
    ("__import__('os').system('true')", "cannot read"),
    ("elastic.fid +", "expected a value at the end"),
    ("elastic.fid elastic.fid", "unexpected 'elastic'"),
    ("elastic", "expected '.'"),
    ("abs(elastic.fid, 2)", "abs() takes one value"),
    ("min(elastic.fid)", "min() takes two values or more"),
    ("min_of(fid, [elastic], floor)", "expected 'meets_floor'"),
    ("each.fid", "`each` names the strategy"),
    ("", "non-empty string"),
])
def test_anything_else_is_a_one_line_error(text, needle):
    with pytest.raises(ValueError, match=None) as caught:
        parse(text, columns=["latency_mean_s", "fid"])
    assert needle in str(caught.value) and "\n" not in str(caught.value)


def test_a_value_is_not_a_condition_and_a_condition_needs_a_comparison():
    with pytest.raises(ValueError, match="compares two values"):
        parse("elastic.fid", condition=True)
    with pytest.raises(ValueError, match="unexpected '<='"):
        parse("elastic.fid <= 1")
