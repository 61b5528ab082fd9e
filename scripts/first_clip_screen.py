"""Screen samplers on the first clip a class-conditional run draws from its label alone.

Class-to-video is decided in the first clip (docs/results.md §2): rolled out from a true first clip the
videos show their own class far more often than videos drawn from the label. This draws ``per`` first clips
for each of the 6 labels of the 1-3-ball data under every sampler given, and reads them from the pixels:
the share with the asked count in the first frame, the share moving the asked way (the sign of
``metrics.horizontal_drift`` from the first frame to the last), and how the horizontal motion correlates
with the asked direction (real first clips: about 0.4; a network that ignores the drift: 0). Real first
clips are read alike. It then asks the network what each half of the label is worth to it: the first
clip's denoising error with the drift flipped, or the count changed, over that with the right label
(``generation.condition_gain``; 1 = ignored). A run trained with the labels (``num_classes=6``), e.g.
``python -m minivgpt.demo preset=backbone num_classes=6 stages=1x2:8000 steps=8000 minutes=0 out=...``.

Samplers, comma-separated ``steps[:eta[:shift]]``: Euler steps, the share of noise redrawn at each step
(``eta``, 0 = the flow, 1 = ancestral) and the time grid's shift towards the noise (1 = even).
``clips=2`` draws two clips from the label (``generation.generate``: the second from the label and the
first), for a run of 1-frame clips (``stages=2x1:8000``), whose first two frames are then read like a
2-frame clip's.

    python scripts/first_clip_screen.py run=RUN [samplers=20,100,20:1,20:0:3] [seeds=0,1] [per=48] [clips=1]
"""

from __future__ import annotations

import sys
import time

import torch

from minivgpt import generation, metrics
from minivgpt.config import parse_options, parse_stages
from minivgpt.data import BouncingBalls, video_batch
from minivgpt.train import load_run

CLASSES = 6  # label = 2 * (balls - 1) + drifting_right (BouncingBalls with 1-3 balls)
FRAMES = 8  # the real videos' length (notebook 06's), over which their label's drift is defined


def read(clips: torch.Tensor, asked: torch.Tensor) -> dict[str, float]:
    """First clips ``(B, F, C, H, W)`` against asked labels ``(B,)``: shares with the right count (first frame)
    and the right direction, the correlation of the horizontal motion with it, and per asked count the objects
    drawn and the share right."""
    balls, right = asked // 2 + 1, asked % 2 == 1
    n = metrics.object_count(clips)[:, 0]
    dx = metrics.horizontal_drift(clips)
    moved = ~dx.isnan()
    count, drift = n == balls, (dx > 0) == right
    pair = torch.stack([dx[moved], right[moved].float()])
    corr = torch.corrcoef(pair)[0, 1].item() if pair.shape[1] > 2 and (pair.std(1) > 0).all() else float("nan")
    by = {b: (n[balls == b].float().mean().item(), count[balls == b].float().mean().item()) for b in (1, 2, 3)}
    return {"count": count.float().mean().item(), "drift": drift.float().mean().item(),
            "both": (count & drift).float().mean().item(), "corr": corr, "by": by}


def show(name: str, r: dict) -> None:
    by = "  ".join(f"{b}: {m:.2f} ({ok:.2f})" for b, (m, ok) in r["by"].items())
    print(f"{name:<16}{r['count']:>8.3f}{r['drift']:>8.3f}{r['both']:>8.3f}{r['corr']:>8.2f}   {by}", flush=True)


def main(argv: list[str]) -> None:
    opts = parse_options(argv, ("run", "samplers", "seeds", "per", "clips"), __doc__)
    if "run" not in opts:
        raise SystemExit("run= is required: a run trained with num_classes=6")
    torch.set_num_threads(1)
    model, tok, cfg = load_run(opts["run"])
    if model.cfg.num_classes != CLASSES:
        raise SystemExit(f"{opts['run']} has num_classes={model.cfg.num_classes}: train it with num_classes=6")
    per, seeds = int(opts.get("per", 48)), [int(s) for s in opts.get("seeds", "0,1").split(",")]
    samplers = []
    for spec in opts.get("samplers", "20,100,20:1,20:0:3").split(","):
        parts = spec.split(":")
        if not 1 <= len(parts) <= 3:
            raise SystemExit(f"sampler {spec!r}: write steps[:eta[:shift]], e.g. 20 or 20:1 or 20:0:3")
        steps, eta, shift = parts + ["0", "1"][len(parts) - 1 :]  # unset: eta 0 (the flow), shift 1 (an even grid)
        samplers.append((spec, int(steps), float(eta), float(shift)))
    t = cfg.train
    last = parse_stages(t.stages, t.clips, t.frames_per_clip, t.steps)[-1][1]  # the clips the run ended on
    F, clips = last if isinstance(last, int) else t.frames_per_clip, int(opts.get("clips", 1))
    if not 2 <= clips * F <= FRAMES:
        raise SystemExit(f"clips={clips} of {F} frames: read at least 2 frames and at most {FRAMES}")
    asked = torch.arange(CLASSES).repeat_interleave(per)
    n_real = 8 * len(asked)  # enough real videos for `per` of each label
    real = video_batch(BouncingBalls(n_real, FRAMES, cfg.data.image_size, 1, 3, seed=201), range(n_real))
    pick = torch.cat([torch.nonzero(real["label"] == c)[:per, 0] for c in range(CLASSES)])
    real_clips = real["video"][pick][:, : clips * F]
    print(f"{opts['run']} | {torch.backends.cpu.get_cpu_capability()} | {per} videos of {clips} x {F} frames per label"
          f" from the label alone, seeds {seeds}")
    print(f"{'':<16}{'count':>8}{'drift':>8}{'both':>8}{'corr':>8}   objects (right) for 1 / 2 / 3 asked balls")
    show("real (8 frames)", read(real_clips, real["label"][pick]))
    with torch.no_grad():
        for name, steps, eta, shift in samplers:
            t0, rows = time.perf_counter(), []
            for seed in seeds:
                x = generation.generate(model, asked, clips, F, steps=steps, seed=seed, eta=eta, shift=shift)
                rows.append(read(tok.decode(x), asked))
            mean = {k: sum(r[k] for r in rows) / len(rows) for k in ("count", "drift", "both", "corr")}
            show(f"{name} ({time.perf_counter() - t0:.0f} s)", {**mean, "by": rows[0]["by"]})
            print(f"{'':<16}count by seed: " + " / ".join(f"{r['count']:.3f}" for r in rows))
        x = tok.encode(real["video"][pick][:, :F].contiguous(), F)[:, 0]  # (B, F, N, D): real first clips
        lab = real["label"][pick]
        emb = model.class_emb
        for t in (0.0, 0.1, 0.2, 0.3, 0.5):  # a 1-frame first clip shows no motion: its drift reading is moot
            drift = generation.condition_gain(model, x, emb(lab), emb(lab ^ 1), t=t)
            count = generation.condition_gain(model, x, emb(lab), emb((lab + 2) % CLASSES), t=t)
            print(f"t = {t:.1f}: error with the drift flipped / right label {drift:.4f}"
                  f"{' (1 frame: no motion)' if F == 1 else ''}, with one ball more (3 -> 1) {count:.4f}")


if __name__ == "__main__":
    main(sys.argv[1:])
