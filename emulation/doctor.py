"""`edgestage doctor`: what this machine can do for the testbed."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from typing import Any


def _mininet_version() -> str | None:
    try:
        from mininet.net import VERSION
    except ImportError:
        return None
    return str(VERSION)


def _tool_version(command: list[str]) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0] if text else None


def _emulation_facts() -> dict[str, Any]:
    facts: dict[str, Any] = {}
    try:
        from emulation.impairment import choose_backend, kernel_has_netem

        facts["sch_netem"] = kernel_has_netem()
        facts["impairment_backend"] = choose_backend("auto")
    except (ImportError, OSError, ValueError, PermissionError) as exc:
        facts["sch_netem"] = None
        facts["impairment_backend"] = f"unknown ({exc.__class__.__name__}: {exc})"
    try:
        from emulation.cgroups import cgroup_version

        facts["cgroup"] = cgroup_version()
    except (ImportError, OSError) as exc:
        facts["cgroup"] = f"unknown ({exc.__class__.__name__})"
    return facts


def doctor_report() -> dict[str, Any]:
    import diffusers
    import torch

    from nodes.diffusion.model_zoo import default_models

    return {
        "root": os.geteuid() == 0,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "mininet": _mininet_version(),
        **_emulation_facts(),
        "iperf3": _tool_version(["iperf3", "--version"]),
        "tcpdump": _tool_version(["tcpdump", "--version"]),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "diffusers": diffusers.__version__,
        "models": default_models(),
    }


def format_report(report: dict[str, Any]) -> str:
    lines = []
    for key, value in report.items():
        if key == "models":
            continue
        shown = ("unknown" if key == "sch_netem" else "not found") if value is None else value
        lines.append(f"{key:<20} {shown}")
    lines.append("models:" if report["models"] else "models:             none found")
    for model in report["models"]:
        lines.append(
            f"  {model['name']:<12} {model['weights_bytes'] / 1e6:8.2f} MB  "
            f"sha256 {model['sha256'][:16]}…  {model['path']}"
        )
    return "\n".join(lines)
