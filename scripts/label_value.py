"""What is a label worth to the best possible denoiser of a first clip, from pure noise?

At t = 0 (pure noise) the best clean estimate of a clip is the mean clip of its condition: E[x | label].
Without the label it is the mean clip of all the data. The ratio of the two squared errors is what knowing
the label can buy at that noise level, for any network. Notebook 06 (section 6) and docs/results.md compare it
with `generation.condition_gain` of the fine-tuned network.

The means come from one half of the videos and the errors from the other: noisy means make this estimate
a little low (the in-sample estimate, printed too, is a little high).

    python scripts/label_value.py [videos=6000] [seed=3]
"""

from __future__ import annotations

import sys

import torch

from minivgpt.config import parse_options
from minivgpt.data import BouncingBalls


def grouped_error(x: torch.Tensor, groups: torch.Tensor, fit: slice, score: slice) -> float:
    """Mean squared error (summed over a clip) of each scored clip against its group's mean over ``fit``."""
    err = torch.zeros((), dtype=torch.float64)
    for g in groups.unique():
        mean = x[fit][groups[fit] == g].mean(0)
        err += ((x[score][groups[score] == g] - mean) ** 2).sum()
    return err.item() / len(x[score])


def main(argv: list[str]) -> None:
    opts = parse_options(argv, ("videos", "seed"), __doc__)
    n, seed = int(opts.get("videos", 6000)), int(opts.get("seed", 3))
    torch.set_num_threads(1)
    data = BouncingBalls(n, 8, 32, min_balls=1, max_balls=3, seed=seed)  # notebook 06's videos
    samples = [data[i] for i in range(n)]
    x = torch.stack([s["video"][:2] for s in samples]).flatten(1).double()  # first clips (2 frames)
    label = torch.tensor([int(s["label"]) for s in samples])
    none, count = torch.zeros_like(label), label // 2  # label = 2 * (balls - 1) + drift_right
    half = n // 2
    for name, fit, score in (("held out", slice(0, half), slice(half, n)), ("in sample", slice(0, n), slice(0, n))):
        e_none, e_count, e_both = (grouped_error(x, g, fit, score) for g in (none, count, label))
        print(f"{name:9s}: count is worth {100 * (e_none / e_count - 1):.2f} %, "
              f"the drift on top of it {100 * (e_count / e_both - 1):.2f} % of the error at t = 0")


if __name__ == "__main__":
    main(sys.argv[1:])
