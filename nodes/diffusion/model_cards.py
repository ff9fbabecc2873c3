"""Model cards (README.md in each model directory), rendered from the facts recorded beside it:
training.json (edgestage train), bench.json (edgestage bench models --record) and quality.json
(edgestage quality --plans ... --record)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nodes.diffusion.model_zoo import sha256_of, weights_file


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def record(model_dir: Path, kind: str, facts: dict[str, Any]) -> None:
    """Store `facts` as `<kind>.json` beside the weights and re-render the card."""
    (model_dir / f"{kind}.json").write_text(json.dumps(facts, indent=2) + "\n")
    render_card(model_dir)


def _table(facts: dict[str, Any], skip: tuple[str, ...] = ()) -> list[str]:
    lines = ["| field | value |", "| --- | --- |"]
    for key, value in facts.items():
        if key not in skip:
            shown = f"{value:.4g}" if isinstance(value, float) else value
            lines.append(f"| {key} | {shown} |")
    return lines


def render_card(model_dir: Path) -> str:
    training = _load(model_dir / "training.json")
    if training is None:
        raise ValueError(f"{model_dir} has no training.json: train it with `edgestage train`")
    name = training["name"]
    recipe = training["recipe"]
    lines = [
        f"# edgestage `{name}`",
        "",
        "Embedded default model of edgestage, trained on this project's fixed digits split. "
        "Diffusers `save_pretrained` format (config.json + safetensors).",
        "",
        "## Training",
        f"- Command: `{training['command']}` (deterministic: seed {recipe['seed']}, "
        f"{training['threads']} torch threads)",
        f"- Parameters: {training['parameters']:,}",
        f"- Steps: {recipe['steps']}, batch {recipe['batch_size']}, AdamW lr {recipe['learning_rate']} "
        f"(warm-up + cosine), EMA decay {recipe['ema_decay']}",
        f"- Wall time: {training['wall_time_s']} s on {training['machine']['processor']} "
        f"({training['machine']['platform']}, torch {training['machine']['torch']})",
        f"- Data: {training['data']['source']}; {training['data']['split']} "
        f"({training['data']['train_images']} train / {training['data']['test_images']} test images)",
        f"- Weights: `{weights_file(model_dir).name}`, sha256 `{sha256_of(weights_file(model_dir))}`",
    ]
    for key in ("final_loss", "test_accuracy"):
        if key in training:
            lines.append(f"- {key.replace('_', ' ').capitalize()}: {training[key]:.4f}")
    quality = _load(model_dir / "quality.json")
    if quality:
        lines += ["", "## Quality (single-model plan)", f"Command: `{quality.pop('command')}`", ""]
        lines += _table(quality)
    bench = _load(model_dir / "bench.json")
    if bench:
        lines += ["", "## Cost", f"Command: `{bench.pop('command')}`", ""]
        lines += _table(bench)
    text = "\n".join(lines) + "\n"
    (model_dir / "README.md").write_text(text)
    return text
