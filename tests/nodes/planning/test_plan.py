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
        ("large:10-10", "runs no denoising step"),
        ("large:0-10,large:10-10,small:10-50", "empty or reversed"),
        ("small:0-0,large:0-50", "beside a denoising stage of small"),
        ("large:0-50,small:50-50", "beside a denoising stage of small"),
        ("large:0-0,large:0-50;encode=each", "contradict"),
        ("large:0-50;encode=first", "malformed plan option"),
        ("large:0-30,small:30-20", "empty or reversed"),
    ],
)
def test_rejects_bad_plans_with_a_reason(text, message):
    with pytest.raises(ValueError, match=message):
        parse_plan(text, 50)


def test_zero_step_stages_place_encoding_and_decoding():
    text = "/m/L:0-0@d1,/m/L:0-20@cloud,/m/S:20-50@edge,/m/S:50-50@d1"
    plan = parse_plan(text, 50)
    assert str(plan) == text
    assert [s.steps for s in plan.stages] == [0, 20, 30, 0]
    assert [plan.encodes_at(i) for i in range(4)] == [True, False, False, False]
    assert [plan.decodes_at(i) for i in range(4)] == [False, False, False, True]
    assert plan.key == "/m/L:0-20,/m/S:20-50"  # where it encodes and decodes does not change the images
    assert plan.denoising == plan.stages[1:3]


def test_encode_each_has_every_denoising_host_encode():
    plan = parse_plan("/m/L:0-20@cloud,/m/S:20-50@edge;encode=each", 50)
    assert plan.encode_each and str(plan) == "/m/L:0-20@cloud,/m/S:20-50@edge;encode=each"
    assert [plan.encodes_at(i) for i in range(2)] == [True, True]
    assert plan.key == "/m/L:0-20,/m/S:20-50"
    assert not parse_plan("/m/L:0-20,/m/S:20-50", 50).encodes_at(1)
