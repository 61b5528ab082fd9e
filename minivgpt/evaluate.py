"""Evaluate a trained run on held-out sequences, in the convention of the video-prediction tables.

``python -m minivgpt.evaluate RUN data=... context=10 predict=10 samples=N`` (or :func:`evaluate_run`)
loads a run folder (a VideoGPT run of :mod:`minivgpt.train` or a SimVP run of :mod:`minivgpt.simvp`,
told apart by the checkpoint's ``kind``), forecasts ``predict`` frames after ``context`` true frames of
``videos`` held-out sequences, and scores them as OpenSTL's tables do (Tan et al. 2023):

- pixels in [0, 1];
- **MSE** and **MAE**: the squared / absolute error *summed* over a frame's pixels (and channels), then
  averaged over frames and sequences (so all-black against all-white 64x64 frames is 4096);
- **SSIM**: per frame, scikit-image's default (uniform 7x7 window, sample covariance, the border of 3
  pixels left out), data range 1, averaged over channels, frames and sequences;
- **PSNR**: per frame ``-10 log10(mean squared error)`` (floored at 1e-10: at most 100 dB), averaged.

Rows: for a VideoGPT run ``model`` (one sample), ``model_mean_of_n`` (the scores averaged over ``samples``
samples: the expected score of one sample), ``model_best_of_n`` (per sequence, the sample with the
lowest MSE: an oracle upper bound) and ``model_ensemble`` (the pixel mean of the samples as one forecast);
for a SimVP run the deterministic ``model``; and the baselines ``copy_last``, ``constant_velocity``
(:func:`minivgpt.metrics.constant_velocity`), ``constant_velocity_walls`` (the same with the digits
bouncing off the frame's edges, as they do) and ``blank`` (an empty black frame: on Moving MNIST it
beats copy-last, so a model has learned something only when it is well under it). A run on an
autoencoder's latents adds ``autoencoder``: the round trip of the true frames through it, what a perfect
forecast in its latent space would score (the run's ceiling). Every row also holds per-frame curves (the
score of future frame 1, 2, ...).

**Legibility** (``moving_mnist_digits`` data with its label file, at 64x64): can the digits still be read?
A digit reader (:mod:`minivgpt.legibility`, trained for about a minute on crops of training sequences
the first time, then read from its cache ``runs/digit_reader/<hash>``, named in the report as
``digit_reader``) reads each digit at its true place in every forecast frame; ``legible`` is the share read
as the right digit (per row and per frame). ``legibility_truth`` is the same reader on the true frames (the
ceiling: overlapping digits hide each other), a blank frame scores about 0.1. On other data the report says
why the digits were not read (``legibility_absent``).

Data: the run's own ``data=`` unless given; real data is scored on its validation split
(``split=val``: digits / sequences / clips never trained on; ``split=all`` for a file that is a test set
as a whole, e.g. ``moving_mnist:mnist_test_seq.npy`` after training on ``moving_mnist_digits``).
Generated sets are drawn from ``seed`` = the run's seed + 1000 (the demo's held-out rule).

Writes ``OUT.json`` (:func:`minivgpt.checkpoint.atomic_write`), ``OUT.png`` (rows: truth, model samples,
baselines) and ``OUT_curves.png``; ``OUT`` defaults to ``RUN/evaluate``.

Derived in notebooks/05 (§ evaluation by the standard protocol).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import checkpoint, legibility, metrics
from .config import AT_LEAST_1, NON_NEGATIVE, check_ranges, cli_help, dataclass_from_params, exit_on_help, parse_cli
from .data import SPLITS, make_dataset, video_batch
from .hardware import set_threads

METRICS = ("mse", "mae", "ssim", "psnr")
CONVENTION = (
    "OpenSTL: pixels in [0, 1]; MSE/MAE summed over a frame's pixels and channels, averaged over frames and "
    "sequences; SSIM per frame (uniform 7x7 window, sample covariance, 3-pixel border left out, data range 1); "
    "PSNR per frame -10 log10(pixel MSE), averaged"
)
HELD_OUT_SEED = 1000  # generated evaluation data is drawn from the run's seed + this
# the digit reader's training (legibility): about a minute on a CPU, once; then read from root/<hash>/reader.pt.
# A fixed instrument: its own seed, not the run's, so that every run (and every seed of one) is read alike.
READER = dict(sequences=512, steps=600, seed=0, root="runs/digit_reader")


# ----------------------------------------------------------------------------------------------------- scores
def ssim_skimage(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0, window: int = 7) -> torch.Tensor:
    """SSIM per frame as ``skimage.metrics.structural_similarity`` computes it by default (what OpenSTL
    calls): uniform ``window x window`` means, sample (N - 1) covariances, the map averaged over the pixels
    whose window lies inside the frame, then over channels. ``(..., C, H, W)`` -> ``(...)``."""
    if pred.shape != target.shape or pred.ndim < 3:
        raise ValueError(f"need two (..., C, H, W) tensors of one shape, got {tuple(pred.shape)} {tuple(target.shape)}")
    *lead, C, H, W = pred.shape
    if min(H, W) < window:
        raise ValueError(f"frames {H}x{W} are smaller than the SSIM window {window}")
    x = pred.double().reshape(-1, C, H, W)
    y = target.double().reshape(-1, C, H, W)
    mean = lambda v: F.avg_pool2d(v, window, stride=1)  # noqa: E731 (valid region only)
    n = window * window
    cov = n / (n - 1)
    mx, my = mean(x), mean(y)
    vx, vy = cov * (mean(x * x) - mx * mx), cov * (mean(y * y) - my * my)
    vxy = cov * (mean(x * y) - mx * my)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean(dim=(-3, -2, -1)).reshape(lead).float()


def frame_scores(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """OpenSTL's per-frame scores of videos in [-1, 1] (mapped to [0, 1]): ``(B, T, C, H, W)`` -> ``{"mse",
    "mae", "ssim", "psnr"}`` each ``(B, T)``; MSE and MAE are summed over the frame's pixels and channels."""
    if pred.shape != target.shape or pred.ndim != 5:
        raise ValueError(f"need two (B, T, C, H, W) videos of one shape, got {tuple(pred.shape)} {tuple(target.shape)}")
    p = (pred.double().clamp(-1, 1) + 1) / 2
    t = (target.double().clamp(-1, 1) + 1) / 2
    diff = p - t
    sq = diff.pow(2)
    return {
        "mse": sq.sum(dim=(-3, -2, -1)).float(),
        "mae": diff.abs().sum(dim=(-3, -2, -1)).float(),
        "ssim": ssim_skimage(p, t),
        "psnr": (-10 * torch.log10(sq.mean(dim=(-3, -2, -1)).clamp_min(1e-10))).float(),
    }


def summarize(scores: dict[str, torch.Tensor]) -> dict[str, Any]:
    """``{"mse": mean, ..., "per_frame": {"mse": [frame 1, frame 2, ...], ...}}`` from ``(B, T)`` scores."""
    row: dict[str, Any] = {k: float(v.mean()) for k, v in scores.items()}
    row["per_frame"] = {k: [round(float(x), 6) for x in v.mean(0)] for k, v in scores.items()}
    return row


def _cat(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


# ----------------------------------------------------------------------------------------------------- loading
class Forecaster:
    """A loaded run behind one call: ``forecaster(videos (B, T, C, H, W), sample) -> (B, predict, C, H, W)``."""

    kind: str
    stochastic: bool

    def __init__(
        self,
        run: str | os.PathLike,
        device: str,
        context: int,
        predict: int,
        steps: int | None,
        temperature: float = 1.0,
    ):
        ckpt = checkpoint.load_latest(run, map_location="cpu")
        if ckpt is None:
            raise checkpoint.CheckpointError(f"no checkpoint in {run} (expected last.pt): train first")
        self.kind = ckpt.get("kind", "videogpt")
        self.train_step = int(ckpt["step"])
        self.context, self.predict, self.device = context, predict, torch.device(device)
        if self.kind == "simvp":
            from .simvp import load_simvp

            self.model, cfg = load_simvp(run, device)
            if context != cfg.context:
                raise ValueError(f"the SimVP run {run} was trained with context={cfg.context}; evaluate it with it")
            self.data, self.image_size, self.seed = cfg.data, cfg.image_size, cfg.seed
            self.channels, self.stochastic, self.steps, self.data_kw = self.model.channels, False, 0, {}
        elif self.kind == "videogpt":
            from .rollout import max_window
            from .train import data_kwargs, load_run

            self.model, self.tokenizer, cfg = load_run(run, device)
            Fr = cfg.train.frames_per_clip
            if context % Fr or predict % Fr or context < Fr or predict < Fr:
                raise ValueError(
                    f"context={context} and predict={predict} must be positive multiples of the run's "
                    f"frames_per_clip={Fr} (it forecasts whole clips), e.g. context={max(Fr, context // Fr * Fr)} "
                    f"predict={max(Fr, predict // Fr * Fr)}"
                )
            self.frames, self.window = Fr, max_window(cfg)
            self.data, self.image_size, self.seed = cfg.data.data, cfg.data.image_size, cfg.train.seed
            self.steps = steps or cfg.diffusion.sample_steps
            self.channels, self.stochastic, self.temperature = self.tokenizer.channels, temperature > 0, temperature
            self.data_kw = data_kwargs(cfg.data)
        else:
            raise checkpoint.CheckpointError(f"{run}: unknown run kind {self.kind!r} (expected videogpt or simvp)")

    @torch.no_grad()
    def __call__(self, videos: torch.Tensor, sample: int, batch_index: int) -> torch.Tensor:
        videos = videos.to(self.device)
        if self.kind == "simvp":
            from .simvp import predict

            return predict(self.model, videos[:, : self.context], self.predict).cpu()
        from .rollout import forecast

        seed = self.seed + 1_000_003 * sample + batch_index
        pred = forecast(
            self.model, self.tokenizer, videos, self.context // self.frames, self.predict // self.frames,
            self.frames, self.steps, seed=seed, window=self.window, progress=False, temperature=self.temperature,
        )  # fmt: skip
        return pred.clamp(-1, 1).cpu()

    @torch.no_grad()
    def reconstruct(self, frames: torch.Tensor) -> torch.Tensor | None:
        """The run's autoencoder round trip of ``frames (B, T, C, H, W)`` (T a multiple of the clip length): what
        a perfect forecast in its latent space would show, so the ceiling of a latent run. ``None`` for a
        pixel run or SimVP, whose ceiling is the frames themselves."""
        if self.kind != "videogpt" or getattr(self.tokenizer.autoencoder, "kind", None) == "identity":
            return None
        tokens = self.tokenizer.encode(frames.to(self.device), self.frames)
        return self.tokenizer.decode(tokens).clamp(-1, 1).cpu()


# ----------------------------------------------------------------------------------------------------- evaluation
def _shown(path: Path) -> str:
    """``path`` as a report names it: relative to the working directory when inside it (``runs/...``), so a
    committed report does not carry one machine's absolute paths; otherwise absolute."""
    path, here = Path(path).resolve(), Path.cwd().resolve()
    return str(path.relative_to(here)) if path.is_relative_to(here) else str(path)


def evaluate_run(
    run: str | os.PathLike,
    data: str | None = None,
    context: int = 10,
    predict: int = 10,
    samples: int = 1,
    videos: int = 256,
    batch_size: int = 16,
    steps: int | None = None,
    temperature: float = 1.0,
    split: str = "val",
    seed: int | None = None,
    out: str | os.PathLike | None = None,
    device: str = "cpu",
    threads: int = 0,
    progress: bool = True,
    pictures: bool = True,
) -> dict[str, Any]:
    """Forecast ``predict`` frames after ``context`` true ones on ``videos`` held-out sequences and score the
    run and the baselines (see the module docstring). Returns the report that is written to ``OUT.json``.

    Args:
        run: a run folder (``last.pt``). data: a ``data=`` string (default: the run's). samples: forecasts per
        sequence (VideoGPT; a SimVP run is deterministic and makes one). steps: Euler steps per clip (default:
        the run's ``sample_steps``). temperature: of the starting noise (1 samples; 0, the flow from the
        origin, is one deterministic forecast, so ``samples`` is then 1). split: ``val`` (default), ``train``
        or ``all`` for real data. seed: of
        generated data (default: the run's seed + 1000). out: path stem of the outputs (default ``RUN/evaluate``).
    """
    sizes = dict(samples=samples, videos=videos, batch_size=batch_size, context=context, predict=predict)
    ranges = {**dict.fromkeys(sizes, AT_LEAST_1), "temperature": NON_NEGATIVE}
    check_ranges({**sizes, "temperature": temperature}, ranges)
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: choose one of {', '.join(SPLITS)}")
    set_threads(threads)
    t0 = time.perf_counter()
    model = Forecaster(run, device, context, predict, steps, temperature)
    spec = data or model.data
    data_seed = model.seed + HELD_OUT_SEED if seed is None else seed
    kw = model.data_kw if spec == model.data else {}
    dataset = make_dataset(spec, context + predict, model.image_size, videos, data_seed, split=split, **kw)
    n = min(videos, len(dataset))
    n_samples = samples if model.stochastic else 1
    reader, reader_path, no_reading = _digit_reader(spec, context + predict, dataset, progress)
    keys = (*METRICS, "legible") if reader is not None else METRICS
    truth_legible = []
    names = ["copy_last", "constant_velocity", "constant_velocity_walls", "blank"]
    parts: dict[str, list] = {k: [] for k in ["model", "model_mean_of_n", "model_best_of_n", "model_ensemble", *names]}
    first = None
    batches = range(0, n, batch_size)
    bar = tqdm(batches, desc=f"evaluate {model.kind}", unit="batch", disable=not progress)
    for b, start in enumerate(bar):
        batch = video_batch(dataset, range(start, min(start + batch_size, n)))
        video = batch["video"]
        if video.shape[2] != model.channels:
            raise ValueError(f"data={spec!r} has {video.shape[2]} channels, the run was trained on {model.channels}")
        ctx, truth = video[:, :context], video[:, context:]
        preds = torch.stack([model(video, s, b) for s in range(n_samples)])  # (S, B, predict, C, H, W)
        # the digits' true corners in the future frames, and their classes
        where = (reader, batch["corners"][:, :, context:], batch["digits"]) if reader is not None else None
        if reader is not None:
            truth_legible.append(legibility.legibility(reader, truth, where[1], where[2]))  # the reader's ceiling
        per = [_scores(p, truth, where) for p in preds]
        parts["model"].append(per[0])
        if model.stochastic:
            parts["model_mean_of_n"].append({k: torch.stack([p[k] for p in per]).mean(0) for k in keys})
            best = torch.stack([p["mse"].mean(1) for p in per]).argmin(0)  # (B,): the sample of lowest MSE
            parts["model_best_of_n"].append(
                {k: torch.stack([p[k] for p in per])[best, torch.arange(len(best))] for k in keys}
            )
            parts["model_ensemble"].append(_scores(preds.mean(0), truth, where))
        every = metrics.baselines(ctx, predict)
        baselines = {name: every[name] for name in names}
        for name, p in baselines.items():
            parts[name].append(_scores(p, truth, where))
        recon = model.reconstruct(truth)
        if recon is not None:  # a latent run's ceiling: its autoencoder's round trip of the true frames
            parts.setdefault("autoencoder", []).append(_scores(recon, truth, where))
        if first is None:
            first = {"video": video[0], "samples": preds[:3, 0], **{k: v[0] for k, v in baselines.items()}}
        bar.set_postfix(mse=f"{float(torch.cat([p['mse'] for p in parts['model']]).mean()):.1f}")
    bar.close()
    rows = {name: summarize(_cat(p)) for name, p in parts.items() if p}
    stem = Path(out) if out is not None else Path(run) / "evaluate"
    report = {
        "run": str(run),
        "kind": model.kind,
        "train_step": model.train_step,
        "data": spec,
        "split": split,
        "data_seed": data_seed,
        "context": context,
        "predict": predict,
        "samples": n_samples,
        "videos": n,
        "sample_steps": model.steps,
        "temperature": temperature if model.kind == "videogpt" else None,
        "convention": CONVENTION,
        "rows": rows,
        "mse_vs_blank": rows["model"]["mse"] / max(rows["blank"]["mse"], 1e-12),
        **({"legibility_truth": summarize({"legible": torch.cat(truth_legible)})} if truth_legible else {}),
        **({"digit_reader": _shown(reader_path)} if reader is not None else {"legibility_absent": no_reading}),
        "wall_s": round(time.perf_counter() - t0, 1),
        "files": {"json": str(stem.with_suffix(".json"))},
    }
    if pictures and first is not None:
        ceiling = report["legibility_truth"]["per_frame"]["legible"] if truth_legible else None
        report["files"]["png"], report["files"]["curves"] = _pictures(stem, first, rows, context, ceiling)
    checkpoint.atomic_write(stem.with_suffix(".json"), json.dumps(report, indent=2))
    return report


def _scores(pred: torch.Tensor, truth: torch.Tensor, where: tuple | None) -> dict[str, torch.Tensor]:
    """:func:`frame_scores`, plus ``legible`` (:func:`minivgpt.legibility.legibility`) given ``where`` =
    (reader, corners, digits)."""
    out = frame_scores(pred, truth)
    if where is not None:
        out["legible"] = legibility.legibility(where[0], pred, where[1], where[2])
    return out


def _digit_reader(spec: str, frames: int, dataset, progress: bool):
    """``(reader, path, None)``: the cached :class:`minivgpt.legibility.DigitReader` of the training split of
    ``spec`` when the evaluation data are Moving MNIST digits with labels at their canvas size; else
    ``(None, None, why not)``. The reader depends on the data alone, not on the run being read."""
    from .data import MovingMNISTDigits

    if not isinstance(dataset, MovingMNISTDigits):
        return None, None, (f"data={spec!r} is not moving_mnist_digits:DIR, the one dataset whose digits' "
                            "classes and places are known")
    if dataset.labels is None:
        return None, None, (f"{dataset.root} has no label file (IDX magic 0x00000801): the digits' classes "
                            "are unknown")
    if dataset.image_size != dataset.canvas:
        return None, None, (f"the run works at {dataset.image_size}x{dataset.image_size}; the digit reader "
                            f"reads digits on the {dataset.canvas}x{dataset.canvas} canvas")
    train_set = make_dataset(spec, frames, dataset.image_size, READER["sequences"], READER["seed"], split="train")
    reader, path = legibility.cached_digit_reader(
        train_set, READER["sequences"], READER["steps"], seed=READER["seed"], root=READER["root"], progress=progress
    )
    return reader, path, None


def _pictures(
    stem: Path, first: dict, rows: dict, context: int, truth_legible: list[float] | None = None
) -> tuple[str, str]:
    """``stem.png``: truth / model samples / baselines for the first sequence; ``stem_curves.png``: per-frame
    MSE and SSIM of every row (and the digits read right, with the true frames' as a dashed line)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import viz

    video = first["video"]
    ctx = video[:context]
    show = {"truth": video}
    for i, s in enumerate(first["samples"]):
        show[f"model {i + 1}" if len(first["samples"]) > 1 else "model"] = torch.cat([ctx, s])
    for name in ("copy_last", "constant_velocity", "blank"):
        show[name.replace("_", " ")] = torch.cat([ctx, first[name]])
    ax = viz.show_videos(show, context_frames=context, max_frames=min(len(video), 24),
                         title="held-out sequence: truth, forecasts and baselines (red line: end of context)")
    png = stem.with_suffix(".png")
    buf = io.BytesIO()
    ax.figure.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    checkpoint.atomic_write(png, buf.getvalue())
    plt.close(ax.figure)

    keys = ("mse", "ssim", "legible") if "legible" in rows["model"]["per_frame"] else ("mse", "ssim")
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.4))
    for name, row in rows.items():
        for a, key in zip(axes, keys):
            curve = row["per_frame"][key]
            a.plot(range(1, len(curve) + 1), curve, marker="o", ms=3, label=name)
    titles = ("MSE per frame (sum over pixels, [0, 1])", "SSIM per frame", "digits read right per frame")
    for a, title in zip(axes, titles):
        a.set_xlabel("future frame")
        a.set_title(title, fontsize=10)
    if truth_legible is not None:
        axes[2].plot(range(1, len(truth_legible) + 1), truth_legible, "k--", label="true frames (ceiling)")
    axes[-1].legend(fontsize=7)
    curves = stem.with_name(stem.name + "_curves.png")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    checkpoint.atomic_write(curves, buf.getvalue())
    plt.close(fig)
    return str(png), str(curves)


def format_table(report: dict) -> str:
    """The report's rows as a text table (MSE, MAE, SSIM, PSNR)."""
    lines = [
        f"{report['kind']} run {report['run']} (step {report['train_step']}) on {report['data']} "
        f"[{report['split']}], {report['videos']} sequences, {report['context']} -> {report['predict']} frames, "
        f"{report['samples']} sample(s); {report['wall_s']} s",
        f"{'':24s}" + "".join(f"{k.upper():>10s}" for k in METRICS)
        + ("  LEGIBLE" if "legibility_truth" in report else ""),
    ]
    for name, row in report["rows"].items():
        line = "".join(f"{row[k]:10.4f}" if k == "ssim" else f"{row[k]:10.2f}" for k in METRICS)
        lines.append(f"{name:24s}" + line + (f"{row['legible']:9.3f}" if "legible" in row else ""))
    lines.append(f"model MSE / blank MSE = {report['mse_vs_blank']:.3f}")
    if "legibility_truth" in report:
        lines.append(f"digits read right (legibility): the model {report['rows']['model']['legible']:.3f}, the true "
                     f"frames {report['legibility_truth']['legible']:.3f} (the reader's ceiling), a blank frame "
                     f"{report['rows']['blank']['legible']:.3f}")
    elif report.get("legibility_absent"):
        lines.append(f"digits not read (no legibility): {report['legibility_absent']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------- CLI
@dataclass
class EvalConfig:
    """The parameters of ``python -m minivgpt.evaluate RUN key=value ...`` (those of :func:`evaluate_run`)."""

    run: str = ""
    data: str = ""  # empty: the run's own dataset
    context: int = 10
    predict: int = 10
    samples: int = 1
    videos: int = 256
    batch_size: int = 16
    steps: int = 0  # Euler steps per clip; 0: the run's sample_steps
    temperature: float = 1.0  # of the starting noise: 1 samples, 0 is one deterministic forecast
    split: str = "val"
    seed: int = -1  # -1: the run's seed
    out: str = ""  # empty: RUN/evaluate
    device: str = "cpu"
    threads: int = 0
    progress: bool = True
    pictures: bool = True


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    groups = {"parameters (EvalConfig; RUN may also be given first)": EvalConfig()}
    exit_on_help(argv, lambda: cli_help(__doc__, groups))
    positional = [a for a in argv if "=" not in a]
    params = parse_cli([a for a in argv if "=" in a])
    if len(positional) > 1 or (positional and "run" in params):
        raise ValueError(f"give one run folder (python -m minivgpt.evaluate RUN key=value ...), got {positional}")
    if positional:
        params["run"] = positional[0]
    if "run" not in params:
        raise ValueError("usage: python -m minivgpt.evaluate RUN [data=...] [context=10] [predict=10] [samples=N]")
    cfg = dataclass_from_params(EvalConfig, params)
    unset = {"data": "", "steps": 0, "seed": -1, "out": ""}  # "use the run's own" -> None
    report = evaluate_run(**{k: (None if unset.get(k, object()) == v else v) for k, v in asdict(cfg).items()})
    print(format_table(report))
    print(f"wrote {', '.join(report['files'].values())}")
    return report


if __name__ == "__main__":
    main()
