"""A scenario of latent pipelines (issue 19): its workload's prompts (a list or a file, cycled over
the images, the same for the requests of a round), negative prompts and guidance scale reach the
requests; bad input is one line naming the field.  No root, no node started."""

from __future__ import annotations

from pathlib import Path

import pytest

from emulation.scenario import load_scenario
from emulation.workload import plan_workload

TOPOLOGY = '[topology]\nkind = "two_tier"\nnum_devices = 2\n'


def _latent(pipelines: dict[str, Path], workload: str, strategies: str = "") -> str:
    large, small = pipelines["large"], pipelines["small"]
    return (TOPOLOGY + f'[nodes.cloud]\nmodels = ["{large}"]\n[nodes.edge]\nmodels = ["{small}"]\n'
            f'[nodes.device]\nmodels = ["{small}"]\n'
            f'[strategies.split]\nkind = "fixed_split"\nsplit = [{{ model = "{large}", tier = "cloud", '
            f'share = 0.5 }}, {{ model = "{small}", tier = "edge", share = 0.5 }}]\n'
            f'[strategies.edge]\nkind = "edge_only"\nmodel = "{small}"\n{strategies}'
            f'[generation]\nsteps = 8\n[workload]\nrequests = 4\nimages_per_request = 2\n{workload}')


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "latent.toml"
    path.write_text(text)
    return path


def test_a_latent_scenario_s_requests_carry_its_prompts(tiny_pipelines, tmp_path):
    text = _latent(tiny_pipelines, 'prompts = ["a", "b", "c"]\nnegative_prompts = ["blurry"]\n'
                   'guidance_scale = 5\n')
    scenario = load_scenario(_write(tmp_path, text))
    assert scenario.workload.guidance_scale == 5.0
    planned = plan_workload(scenario.workload, ["d1", "d2"], scenario.strategy_names())
    assert [r.prompts for r in planned] == [("a", "b"), ("a", "b"), ("c", "a"), ("c", "a")]
    assert all(r.negative_prompts == ("blurry", "blurry") and r.guidance_scale == 5.0 for r in planned)
    for first, second in zip(planned[::2], planned[1::2], strict=True):  # a round: the same prompts
        assert (first.seed, first.prompts) == (second.seed, second.prompts)


def test_a_role_loads_the_latent_components_it_is_given(tiny_pipelines, tmp_path):
    text = _latent(tiny_pipelines, 'prompts = ["a"]\n').replace(
        "[nodes.edge]\n", '[nodes.edge]\nlatent_components = ["vae"]\n')
    scenario = load_scenario(_write(tmp_path, text))
    hosts = {"edge": ("edge", "tcp://127.0.0.1:5001", "tcp://127.0.0.1:5001"),
             "cloud": ("cloud", "tcp://127.0.0.1:5002", "tcp://127.0.0.1:5002"),
             "d1": ("device", "tcp://127.0.0.1:5003", "tcp://127.0.0.1:5003")}
    configs = scenario.node_configs(hosts, "edge", tmp_path / "run", {})
    assert configs["edge"].latent_components == ["vae"] and configs["cloud"].latent_components is None
    with pytest.raises(ValueError, match="nodes.edge.latent_components"):
        load_scenario(_write(tmp_path, text.replace('["vae"]', '["unet"]')))


def test_prompts_come_from_a_file_beside_the_scenario(tiny_pipelines, tmp_path):
    (tmp_path / "prompts.txt").write_text("a cat\n\n  a dog  \n")
    scenario = load_scenario(_write(tmp_path, _latent(tiny_pipelines, 'prompts_file = "prompts.txt"\n')))
    planned = plan_workload(scenario.workload, ["d1"], ["split"])
    assert planned[0].prompts == ("a cat", "a dog") and planned[0].guidance_scale == 7.5


@pytest.mark.parametrize(("workload", "message"), [
    ('prompts_file = "absent.txt"\n', "prompts_file {tmp}/absent.txt does not exist"),
    ('prompts_file = "empty.txt"\n', "prompts_file {tmp}/empty.txt holds no prompt"),
    ('prompts = ["a"]\nprompts_file = "empty.txt"\n', "give prompts or prompts_file, not both"),
    ('prompts = ["a"]\nguidance_scale = 0\n', "guidance_scale must be a positive number"),
    ('prompts = ["a"]\nguidance_scale = -1.5\n', "guidance_scale must be a positive number"),
    ('prompts = ["a"]\nguidance_scale = "high"\n', "guidance_scale must be a positive number"),
    ('prompts = ["a"]\nguidance_scale = nan\n', "guidance_scale must be a positive number"),
    ('prompts = []\n', "workload.prompts"),
    ("requests = 2\n", "workload.prompts: the hosts hold latent pipelines, which need prompts"),
    ('guidance_scale = 3.0\n', "guidance_scale is for prompts"),
])
def test_bad_prompt_settings_are_one_line_naming_the_field(tiny_pipelines, tmp_path, workload, message):
    (tmp_path / "empty.txt").write_text("\n \n")
    text = _latent(tiny_pipelines, workload).replace("requests = 4\n", "" if "requests" in workload else
                                                     "requests = 4\n")
    with pytest.raises(ValueError) as caught:
        load_scenario(_write(tmp_path, text))
    text = str(caught.value)
    assert "\n" not in text and message.format(tmp=tmp_path) in text, text
    assert "workload" in text


def test_prompts_for_pixel_models_and_mixed_plans_are_refused(tiny_pipelines, tmp_path):
    pixel = (TOPOLOGY + '[nodes.cloud]\nmodels = ["small"]\n[nodes.edge]\nmodels = ["small"]\n'
             '[strategies.a]\nkind = "cloud_only"\nmodel = "small"\n[workload]\nprompts = ["a cat"]\n')
    with pytest.raises(ValueError, match="workload.prompts: prompts are for latent pipelines, and the hosts "
                                         "hold pixel denoisers only"):
        load_scenario(_write(tmp_path, pixel))
    small = tiny_pipelines["small"]
    mixed = _latent(tiny_pipelines, 'prompts = ["a"]\n', '[strategies.mix]\nkind = "fixed_split"\nsplit = '
                    f'[{{ model = "small", tier = "cloud", share = 0.5 }}, {{ model = "{small}",'
                    ' tier = "edge", share = 0.5 }]\n').replace('models = ["', 'models = ["small", "', 1)
    with pytest.raises(ValueError, match="strategies.mix: a plan cannot mix pixel and latent models"):
        load_scenario(_write(tmp_path, mixed))


def test_a_latent_cascade_needs_its_table_s_row_and_a_digit_in_every_prompt(tmp_path):
    """The shipped scenario's cascade of the embedded pipelines loads; the same cascade with a prompt
    that names no digit (its gate would have nothing to check), or at a threshold its table lacks,
    is refused in one line naming the strategy."""
    repo = Path(__file__).resolve().parents[2]
    text = (repo / "scenarios" / "latent.toml").read_text()
    (tmp_path / "latent-prompts.txt").write_text((repo / "scenarios" / "latent-prompts.txt").read_text())
    scenario = load_scenario(_write(tmp_path, text))
    assert scenario.strategies["cascade"].escalate_model == "latent-large"
    (tmp_path / "latent-prompts.txt").write_text("a thin digit 3\na bold cat\n")
    with pytest.raises(ValueError, match=r"strategies.cascade: a cascade's gate checks the digit each prompt "
                                         r"names \('digit D'\), and workload prompt 2 \('a bold cat'\)"):
        load_scenario(_write(tmp_path, text))
    (tmp_path / "latent-prompts.txt").write_text("a thin digit 3\n")
    with pytest.raises(ValueError, match="strategies.cascade: the cascade table of ddim/20 steps has no row "
                                         "for latent-small -> latent-large at threshold 0.42"):
        load_scenario(_write(tmp_path, text.replace("threshold = 0.995", "threshold = 0.42")))


def test_a_floor_needs_a_quality_measured_at_the_workload_s_guidance(tmp_path):
    """The latent quality and cascade tables were measured at guidance 4 and 7.5: the shipped
    scenario's cascade has no row at another guidance, nor its elastic floor a measured plan, each
    refused in one line saying so."""
    repo = Path(__file__).resolve().parents[2]
    text = (repo / "scenarios" / "latent.toml").read_text()
    (tmp_path / "latent-prompts.txt").write_text((repo / "scenarios" / "latent-prompts.txt").read_text())
    other = text.replace("guidance_scale = 4.0", "guidance_scale = 6.0")
    with pytest.raises(ValueError, match=r"strategies.cascade: .* at threshold 0.995 and guidance 6"):
        load_scenario(_write(tmp_path, other))
    start, end = other.index("[strategies.cascade]"), other.index("[strategies.elastic]")
    refused = r"strategies.elastic: no latent plan .* at guidance 6 .* \(measured at guidance: 4, 7.5\)"
    with pytest.raises(ValueError, match=refused):
        load_scenario(_write(tmp_path, other[:start] + other[end:]))
