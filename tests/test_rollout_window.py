"""Rollout never puts a clip at a position the model did not see in training (window <= K - 1)."""

import pytest
import torch
from tiny import TINY

from minivgpt.config import from_params
from minivgpt.model import VideoGPT
from minivgpt.rollout import max_window, rollout


def _positions_used(window: int, K: int = 3, num_clips: int = 5) -> int:
    """Largest clip index in any layout the model runs on during a rollout of ``num_clips`` clips."""
    cfg = from_params({**TINY, "clips": K})
    torch.manual_seed(0)
    model = VideoGPT(cfg.model, in_dim=12, grid=(2, 2)).eval()
    seen = []
    real = model.run

    def spy(tokens, layout, *a, **kw):
        seen.append(int(layout.clip.max()))
        return real(tokens, layout, *a, **kw)

    model.run = spy
    ctx = torch.randn(1, 1, cfg.train.frames_per_clip, 4, 12)
    rollout(model, ctx, num_clips, steps=2, window=window, generator=torch.Generator().manual_seed(0))
    return max(seen)


@pytest.mark.parametrize("K", [2, 3, 4])
def test_max_window_is_clips_minus_one(K):
    assert max_window(from_params({"clips": K})) == K - 1
    assert max_window(from_params({"clips": 2, "stages": f"1x1:5,{K}x2:*", "steps": 10})) == K - 1


def test_max_window_of_random_cuts_counts_frames():
    # 16 frames cut at random into clips of 1-4 frames; rolled out in clips of 2 frames: 7 clean + 1 noisy = 16
    cfg = from_params({"frames_per_clip": 2, "stages": "16x1:5,16/1-4:*", "steps": 10})
    assert max_window(cfg) == 7 and max_window(cfg, frames_per_clip=4) == 3


def test_rollout_stays_inside_training_positions():
    K = 3
    # training: noisy clips sit at clip positions 0..K-1
    assert _positions_used(max_window(from_params({"clips": K})), K) == K - 1
    # the old default (window = K) puts the noisy clip at position K, never trained: the check above can fail
    assert _positions_used(K, K) == K
