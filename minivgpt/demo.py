"""``make demo``: train a small VideoGPT on synthetic bouncing balls, roll it out on held-out videos and
compare it with the copy-last and linear-extrapolation baselines.

Writes ``runs/demo/{last.pt, metrics.jsonl, metrics.json, rollout.gif, rollout.png}`` and prints a table.
``python -m minivgpt.demo key=value ...`` takes the training parameters of :mod:`minivgpt.train` plus
``context_clips``, ``predict_clips``, ``eval_videos``, ``sample_steps``.
"""

from __future__ import annotations

import json
import sys
import time

import torch

from . import metrics
from .config import parse_cli
from .notebook import runs_dir
from .rollout import forecast
from .train import build_dataset, train

DEFAULTS = dict(
    data="bouncing_balls",
    image_size=32,
    max_balls=1,
    patch_size=8,
    width=128,
    depth=4,
    heads=4,
    clips=4,
    frames_per_clip=2,
    batch_size=32,
    steps=1500,
    lr=1e-3,
    warmup=50,
    ema_decay=0.995,
    ckpt_every=100,
    log_every=20,
    threads=0,
    amp="bf16",
)
EVAL = dict(context_clips=2, predict_clips=2, eval_videos=64, sample_steps=20)


def main(argv: list[str] | None = None) -> dict:
    params = parse_cli(sys.argv[1:] if argv is None else argv)
    ev = {k: int(params.pop(k, v)) for k, v in EVAL.items()}
    cfg = {**DEFAULTS, "out": str(runs_dir("demo")), **params}
    t0 = time.perf_counter()
    result = train(cfg)
    model, tok, c = result.ema, result.tokenizer, result.config
    F = c.train.frames_per_clip
    T = (ev["context_clips"] + ev["predict_clips"]) * F
    held_out = build_dataset(c, T, seed=c.train.seed + 1000, num_samples=ev["eval_videos"])
    videos = torch.stack([held_out[i]["video"] for i in range(len(held_out))])
    n_ctx = ev["context_clips"] * F
    pred = forecast(model, tok, videos, ev["context_clips"], ev["predict_clips"], F, ev["sample_steps"], c.train.seed)
    scores = metrics.evaluate_all(pred, videos[:, :n_ctx], videos[:, n_ctx:])
    out = result.out
    report = {
        "horizon_frames": pred.shape[1],
        "wall_s": round(time.perf_counter() - t0, 1),
        **scores,
        "mse_ratio_vs_copy_last": scores["model"]["mse"] / scores["copy_last"]["mse"],
        "train_steps": c.train.steps,
        "eval_videos": len(videos),
    }
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
    _write_pictures(out, videos, pred, n_ctx)
    _print_table(report)
    return report


def _write_pictures(out, videos, pred, n_ctx) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import viz

    k = min(4, len(videos))
    truth, ctx = videos[:k], videos[:k, :n_ctx]
    full_pred = torch.cat([ctx, pred[:k]], dim=1)
    viz.save_gif(torch.cat([truth, full_pred], dim=-1), out / "rollout.gif", fps=4, scale=4)
    rows = {"truth": truth[0], "model": full_pred[0], "copy-last": torch.cat([ctx[0], ctx[0, -1:].expand_as(pred[0])])}
    ax = viz.show_videos(rows, context_frames=n_ctx, title="rollout on a held-out video (red line: end of context)")
    ax.figure.savefig(out / "rollout.png", dpi=120, bbox_inches="tight")
    plt.close("all")


def _print_table(report: dict) -> None:
    keys = ["mse", "psnr", "ssim", "motion_iou"]
    print(
        f"\nForecast of {report['horizon_frames']} frames on {report['eval_videos']} held-out videos "
        f"(wall {report['wall_s']} s):"
    )
    print(f"{'':12s}" + "".join(f"{k:>12s}" for k in keys))
    for name in ("model", "copy_last", "linear", "background"):
        print(f"{name:12s}" + "".join(f"{report[name][k]:12.4f}" for k in keys))
    print(
        f"model MSE / copy-last MSE = {report['mse_ratio_vs_copy_last']:.3f}; "
        f"model MSE / static-background MSE = {report['model']['mse'] / report['background']['mse']:.3f}"
    )


if __name__ == "__main__":
    main()
