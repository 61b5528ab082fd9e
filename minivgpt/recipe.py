"""The recipe, measured: train variants of the demo's recipe at the same wall budget, several seeds each,
and tabulate their 8-frame forecasts on held-out videos against the baselines (the tables of notebook 04,
§9 and §10, come from here).

    python -m minivgpt.recipe minutes=5 seeds=0,1 variants=pixel,latent [threads=1] [out=runs/compare]
    python -m minivgpt.recipe minutes=4 seeds=0,1 variants=recipe threads=1 out=runs/recipe
    python -m minivgpt.recipe seeds=0,1 variants=pixel out=runs/recipe score_only=true euler=1,10,50

Variants (each :data:`BASE`, the demo's DEFAULTS with the linear output head, batch 16, width 128 and MLP ratio
4 the table was first measured with, plus the keys in VARIANTS): ``pixel`` (patch 8 on 32x32 pixels), ``latent``
(the cached frame autoencoder, ``autoencoder=auto``, 4x down, patch 2: the same 16 tokens per frame), and the
recipe rows (``variants=recipe`` is all of RECIPE): the velocity-weighted loss, EDM preconditioning, logit-normal t, no
history noise, progressive training with random cuts, width, depth, EMA decay, 12-frame and 4-frame
training videos, and ``mlp_head`` (a nonlinear output head: the demo's default since it was measured at the
demo's budget). Every run is scored twice: its forecast (row
``<variant>``: the demo's, temperature 0) and a sample (row ``<variant>_sample``: temperature 1, 20 Euler steps). The
``pixel`` runs are also sampled with 1, 10 and 50 Euler steps at temperature 1 (rows ``euler1``,
``euler10``, ``euler50``: the same networks; one step returns the model's mean forecast). ``score_only=true``
re-scores the runs already in OUT without training. Writes ``OUT/<variant>_s<seed>/`` (the runs) and ``OUT/table.json``
(after every run, so a long table can be read while it grows); prints mean and sd per variant.
The autoencoder is trained once per data and seed before the timed run starts (its cache is reused).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import demo, metrics
from .checkpoint import atomic_write
from .config import (
    AT_LEAST_1,
    POSITIVE,
    check_ranges,
    cli_help,
    dataclass_from_params,
    exit_on_help,
    from_params,
    parse_cli,
)
from .hardware import set_threads
from .rollout import forecast, max_window
from .train import load_run, resolve_autoencoder, train
from .viz import load_jsonl

# the recipe as its table was measured: the linear head (DiT's; mlp_head is the demo's default since 2026-11-27),
# batch 16 and width 128 with an MLP ratio of 4 (the demo's batch is 8 and its network 96 wide with ratio 2 since
# 2026-11-29); train_variant sets the steps (each row ends by the clock)
BASE = {**demo.DEFAULTS, **demo.BACKBONE_NET}  # make pretrain's network and batch
VARIANTS = {
    "pixel": {},
    "latent": {"autoencoder": "auto", "patch_size": 2},
    "v_loss": {"loss_weight": "velocity"},
    "edm": {"precond": "edm"},  # mean and spread measured on the training data
    "edm_mu0": {"precond": "edm", "sigma_data": 0.5},  # EDM's own assumption: centred data (mean 0)
    "edm_v_loss": {"precond": "edm", "loss_weight": "velocity"},
    "logit_normal": {"t_sampling": "logit_normal"},
    "no_history_noise": {"history_noise": 1.0},
    "progressive_cuts": {"stages": "2x2:150,8/1-4:*"},  # 4-frame videos, then 8 frames cut into 1-4-frame clips
    "width192": {"width": 192},
    "depth6": {"depth": 6},
    "ema0.999": {"ema_decay": 0.999},
    "clips6": {"clips": 6},  # 12-frame training videos: the rollout's window (K - 1 = 5) then keeps the context
    "clips2": {"clips": 2},  # 4-frame training videos: 2.3x fewer tokens a sample, one clean clip of history
    "mlp_head": {"head": "mlp"},  # Linear-GELU-Linear: patches no longer confined to a W-dim subspace
}
RECIPE = ["pixel", "v_loss", "edm", "edm_v_loss", "edm_mu0", "logit_normal", "no_history_noise", "progressive_cuts",
          "width192", "depth6", "ema0.999", "clips6", "clips2", "mlp_head"]
KEYS = ("steps", "final_loss", "mse", "ssim", "mse_vs_constant_velocity", "mse_vs_blank")
EVAL_VIDEOS = 64  # held-out videos a row is scored on, as the table was measured (the demo's EVAL has 256)
EULER = (1, 10, 50)  # extra sampling steps for the `pixel` runs at temperature 1 (the sample row has 20; 1 = the mean)


def train_variant(variant: str, seed: int, minutes: float, threads: int, out: Path) -> dict:
    """Train one row's run for ``minutes`` (untimed: the cached autoencoder); returns what it did."""
    params = {**BASE, **VARIANTS[variant], "seed": seed, "minutes": minutes, "steps": 100_000,
              "threads": threads, "progress": False, "out": str(out / f"{variant}_s{seed}"), "overwrite": True}
    cfg = from_params(params)
    frames = cfg.train.clips * cfg.train.frames_per_clip
    params["autoencoder"] = resolve_autoencoder(cfg, frames).data.autoencoder  # untimed: trained once, cached
    t0 = time.perf_counter()
    result = train(params)
    return {"train_s": round(time.perf_counter() - t0, 1), **run_info(result.records)}


def run_info(records: list[dict]) -> dict:
    """Steps done, tokens/s and the final training loss of a run's metric records."""
    last = [r for r in records if "loss" in r][-1]
    done = max(r.get("step", 0) for r in records)  # the last logged step or the budget's stop
    return {"steps": done, "tokens_per_s": last["tokens_per_s"], "final_loss": last["loss"]}


def score(variant: str, seed: int, out: Path, euler: tuple[int, ...], info: dict) -> list[dict]:
    """Score the run ``OUT/<variant>_s<seed>`` like ``make demo`` (its forecast: :data:`demo.EVAL`'s steps at
    temperature 0; the row ``<variant>_sample`` is its sample at temperature 1; the `pixel` runs also at every
    Euler step count in ``euler``, temperature 1): one row per sampler setting."""
    model, tokenizer, cfg = load_run(out / f"{variant}_s{seed}")
    rows = []
    # the table's own protocol: 64 held-out videos (the demo scores 256 since 2026-11-29; the first 64 are these)
    ev = {**{k: demo.EVAL[k] for k in ("context_clips", "predict_clips")}, "eval_videos": EVAL_VIDEOS}
    report, videos, _ = demo.forecast_report(model, tokenizer, cfg, **ev, sample_steps=demo.EVAL["sample_steps"],
                                             temperature=demo.EVAL["temperature"])
    reports = [(variant, report, "model"), (f"{variant}_sample", report, "model_sample")]
    F, n_ctx = cfg.train.frames_per_clip, ev["context_clips"] * cfg.train.frames_per_clip
    ctx, future = videos[:, :n_ctx], videos[:, n_ctx:]
    for n in euler if variant == "pixel" else ():  # only the sample with n steps: the baselines are the report's
        pred = forecast(model, tokenizer, videos, ev["context_clips"], ev["predict_clips"], F, n, cfg.train.seed,
                        max_window(cfg), progress=False)  # as forecast_report's sample: seed, window, temperature 1
        euler_report = {**report, "model": metrics.evaluate_forecast(pred, future, context=ctx),
                        "shape": {"model": metrics.object_shape(pred, future, ctx)},
                        "sampler": {"model": {"steps": n, "temperature": 1.0}}}
        reports.append((f"euler{n}", euler_report, "model"))
    for name, rep, key in reports:
        rows.append({
            "variant": name, "seed": seed, **info, "sample_steps": rep["sampler"][key]["steps"],
            "temperature": rep["sampler"][key]["temperature"],
            "mse": rep[key]["mse"], "ssim": rep[key]["ssim"],
            "mse_vs_constant_velocity": rep[key]["mse"] / rep["constant_velocity"]["mse"],
            "ssim_constant_velocity": rep["constant_velocity"]["ssim"],
            "mse_vs_copy_last": rep[key]["mse"] / rep["copy_last"]["mse"],
            "mse_vs_blank": rep[key]["mse"] / rep["blank"]["mse"],
            "mean_mse_vs_constant_velocity": rep["model_mean"]["mse"] / rep["constant_velocity"]["mse"],
            "mean_ssim": rep["model_mean"]["ssim"],
            "area_ratio": rep["shape"][key]["area_ratio"],
            "peak_ratio": rep["shape"][key]["peak_ratio"],
            "baselines": {k: rep[k]["mse"] for k in ("copy_last", "constant_velocity", "background", "blank")},
            "params": VARIANTS[variant],
        })
    return rows


def readings(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """A table's rows split by how the network was read: the forecasts (rows named for their variant) and the
    samples (``<variant>_sample``, renamed to the variant so both plot on the same lines); the Euler rows of
    the `pixel` runs are in neither."""
    forecasts = [r for r in rows if r["variant"] in VARIANTS]
    samples = [{**r, "variant": r["variant"].removesuffix("_sample")} for r in rows if r["variant"].endswith("_sample")]
    return forecasts, samples


def summarize(rows: list[dict], keys: tuple[str, ...] = KEYS) -> dict[str, dict[str, tuple[float, float, int]]]:
    """Mean, sample standard deviation (0 for one seed) and count of every key, per variant, in the order
    the variants first appear: ``{variant: {key: (mean, sd, n)}}``. Rows lacking a key are left out of it."""
    out: dict[str, dict[str, tuple[float, float, int]]] = {}
    for v in dict.fromkeys(r["variant"] for r in rows):
        rs = [r for r in rows if r["variant"] == v]
        out[v] = {}
        for k in keys:
            xs = [float(r[k]) for r in rs if k in r]
            if xs:
                out[v][k] = (statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0, len(xs))
    return out


@dataclass
class RecipeConfig:
    minutes: float = 4.0  # training budget of every run (the runs are compared at equal wall time)
    seeds: str = "0,1"
    variants: str = "recipe"  # names of VARIANTS, comma-separated; "recipe" stands for all of RECIPE
    threads: int = 1  # CPU threads per run (run tables side by side with one thread each)
    out: str = "runs/recipe"
    euler: str = ",".join(map(str, EULER))  # extra Euler step counts the `pixel` runs are scored with
    score_only: bool = False  # re-score the runs already in `out` (e.g. with other `euler`) without training


def main(argv: list[str] | None = None) -> list[dict]:
    """``python -m minivgpt.recipe key=value ...`` (the fields of :class:`RecipeConfig`): train and score
    every variant and seed, writing ``OUT/table.json`` after each; returns the rows."""
    argv = sys.argv[1:] if argv is None else argv
    exit_on_help(argv, lambda: cli_help(__doc__, {"parameters (RecipeConfig)": RecipeConfig()}))
    cfg = dataclass_from_params(RecipeConfig, parse_cli(argv))
    check_ranges(asdict(cfg), {"minutes": POSITIVE, "threads": AT_LEAST_1})
    euler = tuple(int(n) for n in cfg.euler.split(",") if n)
    seeds = [int(s) for s in cfg.seeds.split(",")]
    variants = cfg.variants.replace("recipe", ",".join(RECIPE)).split(",")
    for v in variants:
        if v not in VARIANTS:
            raise ValueError(f"unknown variant {v!r}: choose from {', '.join(VARIANTS)} or recipe")
    out, minutes, threads, score_only = Path(cfg.out), cfg.minutes, cfg.threads, cfg.score_only
    set_threads(threads)  # also for the autoencoder, trained before the first timed run
    table_json = out / "table.json"
    saved = json.loads(table_json.read_text()) if score_only and table_json.exists() else {}
    old, minutes = saved.get("rows", []), saved.get("minutes", minutes)
    rows: list[dict] = []
    for v in variants:
        for s in seeds:
            if score_only:  # the run is there: re-score it (e.g. at other Euler steps), keep its training figures
                info = next((r for r in old if r["variant"] == v and r["seed"] == s), None)
                keep = ("steps", "tokens_per_s", "final_loss", "train_s")
                info = {k: info[k] for k in keep} if info else run_info(load_jsonl(out / f"{v}_s{s}" / "metrics.jsonl"))
            else:
                info = train_variant(v, s, minutes, threads, out)
            new = score(v, s, out, euler, info)
            done = {(r["variant"], r["seed"]) for r in new}
            old = [r for r in old if (r["variant"], r["seed"]) not in done]
            rows += new
            trained = {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": threads, "seeds": seeds}
            if score_only:  # the training figures are the saved table's; so are its other notes (command, ...)
                trained = {**trained, **{k: v for k, v in saved.items() if k not in ("rows", "minutes")}}
            table = {**trained, "rows": old + rows, "minutes": minutes,
                     "horizon_frames": demo.EVAL["predict_clips"] * demo.DEFAULTS["frames_per_clip"]}
            atomic_write(out / "table.json", json.dumps(table, indent=2))
    rows = old + rows
    print(f"{'variant':18s}" + "".join(f"{k:>26s}" for k in KEYS))
    for v, stats in summarize(rows).items():
        cells = [stats.get(k, (float("nan"), 0.0, 0)) for k in KEYS]
        print(f"{v:18s}" + "".join(f"{m:.4g} ± {sd:.2g}".rjust(26) for m, sd, _ in cells))
    return rows


if __name__ == "__main__":
    main()
