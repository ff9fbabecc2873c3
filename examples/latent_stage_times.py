"""What each stage of the SD 1.5 scale model costs on this machine's CPU: text encoding, one
denoising step of each UNet and one decoding (median of repeats; nodes/diffusion/latent_bench.py),
with the bytes each boundary carries. Builds the scale model into a temporary folder. Usage:

    .venv/bin/python examples/latent_stage_times.py [--repeats 7] [--n 1] [--guidance 7.5]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from nodes.diffusion.latent_bench import stage_times
from nodes.diffusion.latent_folders import crossing_bytes
from nodes.diffusion.latent_scale_model import SD15, write_pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--n", type=int, default=1)
    parser.add_argument("--guidance", type=float, default=7.5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        rows = {}
        for unet in SD15.unets:
            folder = write_pipeline(Path(root) / f"sd15-{unet}", SD15, unet)
            rows[unet] = stage_times(folder, repeats=args.repeats, n=args.n, guidance_scale=args.guidance)
        sizes = {dtype: crossing_bytes(folder, n=args.n, dtype=dtype, guidance=args.guidance > 1,
                                       solver_history=2) for dtype in ("float32", "float16")}
    print(json.dumps({"load_average": os.getloadavg(), "stage_times": rows, "crossing_bytes": sizes},
                     indent=2))


if __name__ == "__main__":
    main()
