"""Train variants of the demo's recipe at the same wall budget, several seeds each, and tabulate their
8-frame forecasts on held-out videos against the baselines (the tables of notebook 04 come from here).

    python scripts/compare_runs.py minutes=5 seeds=0,1 variants=pixel,latent [threads=1] [out=runs/compare]

Variants (each the demo's DEFAULTS plus a few keys; see VARIANTS): ``pixel`` (patch 8 on 32x32 pixels),
``latent`` (the cached frame autoencoder, ``autoencoder=auto``, 4x down, patch 2: the same 16 tokens per
frame). Writes ``OUT/<variant>_s<seed>/`` (the runs) and ``OUT/table.json``; prints mean and sd per variant.
The autoencoder is trained once per data and seed before the timed run starts (its cache is reused).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch

from minivgpt import demo
from minivgpt.checkpoint import atomic_write
from minivgpt.config import from_params, parse_cli
from minivgpt.hardware import set_threads
from minivgpt.train import resolve_autoencoder, train

VARIANTS = {
    "pixel": {},
    "latent": {"autoencoder": "auto", "patch_size": 2},
}


def run(variant: str, seed: int, minutes: float, threads: int, out: Path) -> dict:
    params = {**demo.DEFAULTS, **VARIANTS[variant], "seed": seed, "minutes": minutes, "steps": 100_000,
              "threads": threads, "progress": False, "out": str(out / f"{variant}_s{seed}"), "overwrite": True}
    cfg = from_params(params)
    frames = cfg.train.clips * cfg.train.frames_per_clip
    params["autoencoder"] = resolve_autoencoder(cfg, frames).data.autoencoder  # untimed: trained once, cached
    t0 = time.perf_counter()
    result = train(params)
    wall = time.perf_counter() - t0
    report, _, _ = demo.forecast_report(result.ema, result.tokenizer, result.config, **demo.EVAL)
    last = [r for r in result.records if "loss" in r][-1]
    return {
        "variant": variant, "seed": seed, "steps": last["step"], "train_s": round(wall, 1),
        "tokens_per_s": last["tokens_per_s"], "final_loss": last["loss"],
        "mse": report["model"]["mse"], "ssim": report["model"]["ssim"],
        "mse_vs_constant_velocity": report["targets"]["mse_vs_constant_velocity"],
        "mse_vs_copy_last": report["mse_ratio_vs_copy_last"],
        "area_ratio": report["shape"]["model"]["area_ratio"], "peak_ratio": report["shape"]["model"]["peak_ratio"],
        "baselines": {k: report[k]["mse"] for k in ("copy_last", "constant_velocity", "background")},
    }


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_cli(sys.argv[1:] if argv is None else argv)
    unknown = set(args) - {"minutes", "seeds", "variants", "threads", "out"}
    if unknown:
        raise ValueError(f"unknown parameters {sorted(unknown)}: minutes, seeds, variants, threads, out")
    minutes, threads = float(args.get("minutes", 5)), int(args.get("threads", 1))
    seeds = [int(s) for s in str(args.get("seeds", "0,1")).split(",")]
    variants = str(args.get("variants", "pixel,latent")).split(",")
    for v in variants:
        if v not in VARIANTS:
            raise ValueError(f"unknown variant {v!r}: choose from {sorted(VARIANTS)}")
    out = Path(args.get("out", "runs/compare"))
    set_threads(threads)  # also for the autoencoder, trained before the first timed run
    rows = [run(v, s, minutes, threads, out) for v in variants for s in seeds]
    table = {"rows": rows, "minutes": minutes, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
             "threads": threads, "horizon_frames": demo.EVAL["predict_clips"] * demo.DEFAULTS["frames_per_clip"]}
    atomic_write(out / "table.json", json.dumps(table, indent=2))
    keys = ("steps", "tokens_per_s", "final_loss", "mse", "ssim", "mse_vs_constant_velocity")
    print(f"{'variant':10s}" + "".join(f"{k:>26s}" for k in keys))
    for v in variants:
        rs = [r for r in rows if r["variant"] == v]
        cells = []
        for k in keys:
            xs = [r[k] for r in rs]
            sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
            cells.append(f"{statistics.mean(xs):.4g} ± {sd:.2g}")
        print(f"{v:10s}" + "".join(f"{c:>26s}" for c in cells))
    return rows


if __name__ == "__main__":
    main()
