import pytest

from nodes.planning.plan import Stage, parse_plan


def test_parses_models_ranges_and_hosts():
    plan = parse_plan("large:0-30@cloud,small:30-50", 50)
    assert plan.stages == (Stage("large", 0, 30, "cloud"), Stage("small", 30, 50, None))
    assert plan.total_steps == 50
    assert str(plan) == "large:0-30@cloud,small:30-50"


def test_model_may_be_a_path():
    plan = parse_plan("/models/my-unet:0-10", 10)
    assert plan.stages[0].model == "/models/my-unet"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty plan"),
        ("large", "malformed plan stage"),
        ("large:0-30;small:30-50", "malformed"),
        ("large:a-30", "malformed"),
        ("large:0-30,small:31-50", "do not tile"),
        ("large:5-50", "do not tile"),
        ("large:0-30,small:30-40", "end at 40"),
        ("large:10-10", "empty or reversed"),
        ("large:0-30,small:30-20", "empty or reversed"),
    ],
)
def test_rejects_bad_plans_with_a_reason(text, message):
    with pytest.raises(ValueError, match=message):
        parse_plan(text, 50)
