"""Write the pictures of the README and docs/results.md to docs/figures/ from the library and from finished runs.

    make figures            (= python scripts/make_figures.py)

mask.png and sequence.png need nothing; training_curve.png and rollout.png need `make demo` (runs/demo);
horizon.png needs `make pretrain` (runs/pretrain); horizon_demo_x4.png needs the one-ball run at 4x the steps
(runs/demo_x4, DEMO_X4 below);
bench.png needs `make bench` (runs/bench.json); recipe.png and mnist_legibility.png read committed results
(docs/results). Missing inputs are reported, not invented.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from minivgpt import masks, recipe, sequence, viz  # noqa: E402
from minivgpt.notebook import ROOT  # noqa: E402

OUT = ROOT / "docs" / "figures"


def mask_figure() -> Path:
    K, F, N = 3, 2, 4
    layout = sequence.token_layout(K, F, N)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.6), gridspec_kw={"width_ratios": [1.35, 1]})
    viz.plot_mask(
        masks.hierarchical_mask(K, F, N),
        layout=layout,
        ax=axes[0],
        title=f"hierarchical mask, K={K} clips x F={F} frames x N={N} patches (row = query)",
    )
    ks = list(range(1, 17))
    axes[1].plot(ks, [masks.mask_density(k, 2, 16) for k in ks], "o-")
    axes[1].set(xlabel="clips K (F=2, N=16)", ylabel="fraction of pairs allowed", title="mask density against K")
    axes[1].grid(alpha=0.3)
    return _save(fig, "mask.png")


def sequence_figure() -> Path:
    K, F, N = 4, 2, 4
    layout = sequence.token_layout(K, F, N)
    t = torch.tensor([0.15, 0.8, 0.45, 0.3])
    fig, ax = plt.subplots(figsize=(12, 2.6))
    viz.plot_sequence_strip(
        layout, t=t, ax=ax, title="interleaved sequence: noisy clip k (lighter, its own t) then clean clip k"
    )
    return _save(fig, "sequence.png")


def curve_figure() -> Path | None:
    path = ROOT / "runs" / "demo" / "metrics.jsonl"
    if not _have(path, "training_curve.png", "make demo"):
        return None
    fig, ax = plt.subplots(figsize=(7, 3.5))
    viz.plot_curves(viz.load_jsonl(path), keys=("loss",), ax=ax, logy=True, title="make demo: training loss")
    return _save(fig, "training_curve.png")


def rollout_figure() -> Path | None:
    png = _copy_run_picture("demo", "rollout.png", "make demo")
    gif = ROOT / "runs" / "demo" / "rollout.gif"
    if png and gif.exists():
        shutil.copyfile(gif, OUT / "rollout.gif")
    return png


def horizon_figure() -> Path | None:
    """The forecast error and the ball's shape over the 8-frame horizon, from `make pretrain` (1-3 balls)."""
    return _copy_run_picture("pretrain", "horizon.png", "make pretrain")


# the demo's recipe on one ball at 4x the steps (docs/results.md, the row "one ball at 4x the steps")
DEMO_X4 = ("python -m minivgpt.demo head=linear batch_size=16 width=128 mlp_ratio=4 steps=6000 minutes=40 "
           "out=runs/demo_x4 threads=1")


def horizon_demo_x4_figure() -> Path | None:
    """The same picture for one ball at 4x the demo's steps (runs/demo_x4)."""
    return _copy_run_picture("demo_x4", "horizon_demo_x4.png", DEMO_X4, source="horizon.png")


def _copy_run_picture(run: str, figure: str, command: str, source: str | None = None) -> Path | None:
    """Copy ``runs/<run>/<source>`` (default: the figure's own name) to docs/figures/<figure>."""
    src = ROOT / "runs" / run / (source or figure)
    if not _have(src, figure, command):
        return None
    OUT.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, OUT / figure)
    return OUT / figure


def recipe_figure() -> Path | None:
    """The recipe table (`python -m minivgpt.recipe`, committed as docs/results/recipe_balls_cpu.json)."""
    src = ROOT / "docs" / "results" / "recipe_balls_cpu.json"
    if not _have(src, "recipe.png", "python -m minivgpt.recipe"):
        return None
    forecasts, samples = recipe.readings(json.loads(src.read_text())["rows"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    viz.plot_recipe(forecasts, "mse_vs_constant_velocity", target=0.8, ax=axes[0])
    viz.plot_recipe(samples, "mse_vs_constant_velocity", target=0.8, ax=axes[1], log=True)
    axes[0].set_title("8-frame forecast (5 steps, temperature 0): MSE / constant velocity", fontsize=9)
    axes[1].set_title("a sample (20 steps, temperature 1), log scale", fontsize=9)
    return _save(fig, "recipe.png")


# Moving MNIST readings whose legibility the figure draws: committed evaluate JSONs (docs/results) and labels
MNIST_LEGIBLE = {
    "mnist_cpu_simvp_nt8_eval.json": "SimVP-style baseline (seed 0)",
    "mnist_cpu_videogpt_latent_k2_t0_eval.json": "VideoGPT (latents, 4-frame videos): forecast from the origin",
    "mnist_cpu_videogpt_latent_k2_mean_eval.json": "the same network: mean forecast",
    "mnist_cpu_videogpt_latent_k2_eval.json": "the same network: one sample",
}


def mnist_legibility_figure() -> Path | None:
    """Digits read right per forecast frame on held-out Moving MNIST (`python -m minivgpt.evaluate` on the
    CPU-scale runs, committed as docs/results/mnist_cpu_*_eval.json): the models, the baselines and the true
    frames (the reader's ceiling)."""
    results = ROOT / "docs" / "results"
    reports = {label: json.loads((results / name).read_text()) for name, label in MNIST_LEGIBLE.items()
               if (results / name).exists()}
    reports = {label: r for label, r in reports.items() if "legibility_truth" in r}
    if not reports:
        print("skip mnist_legibility.png: no docs/results/mnist_cpu_*_eval.json with legibility "
              "(run `python -m minivgpt.evaluate RUN` on a moving_mnist_digits run with labels)")
        return None
    fig, ax = plt.subplots(figsize=(7, 3.8))
    first = next(iter(reports.values()))
    frames = range(1, len(first["rows"]["model"]["per_frame"]["legible"]) + 1)
    for label, r in reports.items():
        ax.plot(frames, r["rows"]["model"]["per_frame"]["legible"], marker="o", ms=3, label=label)
    for name, style in (("constant_velocity", "s--"), ("copy_last", "^--"), ("blank", ":")):
        ax.plot(frames, first["rows"][name]["per_frame"]["legible"], style, ms=3, color="grey",
                label=name.replace("_", " "))
    ax.plot(frames, first["legibility_truth"]["per_frame"]["legible"], "k--", label="true frames (ceiling)")
    ax.set(xlabel="future frame (10 given)", ylabel="digits read right", ylim=(0, 1),
           title=f"Moving MNIST, {first['videos']} held-out sequences: can the forecast digits be read?")
    ax.legend(fontsize=7, loc="center right")
    return _save(fig, "mnist_legibility.png")


def bench_figure() -> Path | None:
    path = ROOT / "runs" / "bench.json"
    if not _have(path, "bench.png", "make bench"):
        return None
    b = json.loads(path.read_text())
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    att = b["attention"]
    names = ["dense", "mask_aware"] + (["flex (fwd only)"] if att.get("flex_ms") else [])
    vals = [att["dense_ms"], att["mask_aware_ms"]] + ([att["flex_ms"]] if att.get("flex_ms") else [])
    axes[0].bar(names, vals, color=["#999", "#2a7", "#47c"][: len(vals)])
    axes[0].set(
        ylabel="ms", title=f"attention at L={att['seq_len']} (fwd+bwd)\nmask-aware {att['speedup']:.2f}x faster"
    )
    ro = b["rollout"]
    axes[1].bar(["recompute", "KV cache"], [ro["recompute_s"], ro["cache_s"]], color=["#999", "#2a7"])
    axes[1].set(ylabel="s", title=f"rollout, {ro['history_clips']}-clip history\ncache {ro['speedup']:.1f}x faster")
    tr = b["train"]
    axes[2].bar(
        ["useful FLOP/s", "matmul peak"],
        [tr["useful_flops_per_s"] / 1e9, tr["matmul_peak_flops_per_s"] / 1e9],
        color=["#2a7", "#999"],
    )
    axes[2].set(
        ylabel="GFLOP/s",
        title=f"training, {tr['tokens_per_s']:.0f} tokens/s\nMFU {100 * tr['mfu']:.0f}% of measured peak",
    )
    fig.suptitle(f"python -m minivgpt.bench on {b['device']}", fontsize=10)
    fig.tight_layout()
    return _save(fig, "bench.png")


def _have(src: Path, figure: str, command: str) -> bool:
    """Whether the source of ``figure`` exists; if not, say which command writes it (the figure is skipped)."""
    if not src.exists():
        print(f"skip {figure}: {src} is missing (run `{command}`)")
    return src.exists()


def _save(fig, name: str) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT / name, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return OUT / name


def main() -> int:
    figures = (mask_figure, sequence_figure, curve_figure, rollout_figure, horizon_figure, horizon_demo_x4_figure,
               recipe_figure, mnist_legibility_figure, bench_figure)
    written = [p for p in (make() for make in figures) if p]
    for p in written:
        print("wrote", p.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
