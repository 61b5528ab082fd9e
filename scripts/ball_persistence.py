"""Does the pretrained backbone keep its balls and their drift as it rolls out? (notebook 06, section 6)

Two measurements on `make pretrain`'s backbone (runs/pretrain), no fine-tuning:

1. objects per frame (`metrics.object_count`) of real videos of 1-3 balls, of videos generated from nothing
   and of rollouts from the true first clip (one sample each), and how often the frames of each clip show the
   same number of objects (a clip drawn coherently);
2. rolling out from the *true* first clip of held-out videos (the forecast from the origin, temperature 0,
   and one sample, temperature 1): how often the generated video drifts sideways the way the real one does
   (`metrics.horizontal_drift`), by how far the real balls move sideways.

    python scripts/ball_persistence.py [run=runs/pretrain] [videos=256] [steps=20] [seed=0]
"""

from __future__ import annotations

import sys

import torch
from einops import rearrange

from minivgpt import generation, metrics
from minivgpt.config import parse_options
from minivgpt.data import BouncingBalls, video_batch
from minivgpt.train import load_run


def main(argv: list[str]) -> None:
    opts = parse_options(argv, ("run", "videos", "steps", "seed"), __doc__)
    n, steps, seed = int(opts.get("videos", 256)), int(opts.get("steps", 20)), int(opts.get("seed", 0))
    torch.set_num_threads(1)
    run = opts.get("run", "runs/pretrain")
    model, tok, cfg = load_run(run)  # a run without a checkpoint is an error, not a quietly trained stand-in
    print(f"loaded the run in {run} | {torch.backends.cpu.get_cpu_capability()}")
    F = cfg.train.frames_per_clip
    real_b = video_batch(BouncingBalls(n, 4 * F, cfg.data.image_size, 1, 3, seed=seed + 201), range(n))
    real, balls = real_b["video"], real_b["label"] // 2 + 1  # label = 2 (balls - 1) + drifting_right

    def per_frame(counts: torch.Tensor) -> str:
        """Objects per frame ``(B, T)`` -> their mean over videos, frame by frame."""
        return " ".join(f"{c:.2f}" for c in counts.float().mean(0).tolist())

    def coherent(counts: torch.Tensor) -> str:
        """Per clip: the share of videos whose frames all show the same number of objects."""
        counts = rearrange(counts, "b (k f) -> b k f", f=F)  # (B, K, F)
        same = (counts == counts[..., :1]).all(-1).float().mean(0)  # (K,)
        return " ".join(f"{c:.2f}" for c in same.tolist())

    made = tok.decode(generation.generate(model, None, 4, F, batch=n, steps=steps, seed=seed))
    first = tok.encode(real[:, :F].contiguous(), F)  # (B, 1, F, N, D): the true first clip
    # one sample (temperature 1) from the true first clip; its drift is read below
    rolled = tok.decode(generation.generate(model, None, 3, F, context=first, steps=steps, seed=seed))
    shown = (("real videos", real), ("backbone, from nothing", made), ("backbone, from the true clip 1", rolled))
    counts = {name: metrics.object_count(video) for name, video in shown}  # (B, T) each, counted once
    print(f"objects per frame (mean of {n} videos, frames 1..{4 * F})")
    for name, c in counts.items():
        print(f"  {name:<34}{per_frame(c)}")
    print(f"frames showing the video's own number of balls (share of videos, frames 1..{4 * F})")
    for name in ("real videos", "backbone, from the true clip 1"):
        print(f"  {name:<34}{per_frame(counts[name] == balls[:, None])}")
    print(f"clips whose {F} frames show the same number of objects (share of videos, clips 1..4)")
    for name, c in counts.items():
        print(f"  {name:<34}{coherent(c)}")

    truth = metrics.horizontal_drift(real)  # (B,) pixels; its sign is the label's drift (0.99 agreement)
    bins = ((0, 2), (2, 4), (4, 1000))
    in_bin = [(truth.abs() >= lo) & (truth.abs() < hi) for lo, hi in bins]  # (B,) bool per bin of |real drift|
    print(f"drift kept from the true first clip ({n} videos; |real drift| in pixels: share of videos)")
    print(f"  {'':<34}{'all':>8}" + "".join(f"{f'[{lo}, {hi})':>12}" for lo, hi in bins))
    print(f"  {'share of videos':<34}{1.0:>8.2f}" + "".join(f"{m.float().mean().item():>12.2f}" for m in in_bin))
    forecast = tok.decode(generation.generate(model, None, 3, F, context=first, steps=steps, seed=seed, temperature=0))
    for name, video in (("forecast (temperature 0)", forecast), ("sample (temperature 1)", rolled)):
        drift = metrics.horizontal_drift(video)
        kept = ((drift > 0) == (truth > 0)) & ~drift.isnan()
        row = "".join(f"{kept[m].float().mean().item():>12.2f}" for m in in_bin)
        print(f"  {name:<34}{kept.float().mean().item():>8.2f}" + row)


if __name__ == "__main__":
    main(sys.argv[1:])
