"""Autoregressive rollout: denoise the next clip from the clean history, append it, repeat.

With ``use_cache=True`` the keys/values of the clean history are computed once (``prefill``) and every
Euler step of the next clip only runs the F*N noisy tokens through the network (``denoise``); the new
clip is then added to the cache (``append``). This is exact, not an approximation: clean tokens never
attend to noisy ones, so their keys/values do not change while a clip is being denoised.

Sliding window and positions: the model sees at most ``window`` most recent clean clips. Inside the
window, clips are numbered 0..W-1 and the clip being denoised is W. A model trained on K clips denoised
noisy clips at positions 0..K-1 only, so the window must be at most K - 1 (:func:`max_window`) for every
position to stay inside the range seen in training. When the history outgrows the window, the oldest clip leaves,
every remaining clip shifts down by one position, and the cache is rebuilt from the window
(``prefill``): the keys of clean clip j at deeper layers depend on every clean clip before it, so simply
dropping the oldest entries from the cache would not equal a recomputation. ``use_cache=False``
recomputes the whole window at every Euler step (the authors' public code) and gives the same frames.

Derived in notebooks/05 (§ rollout, § the KV cache); the paper's inference is docs/paper.md §4.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .config import Config, parse_stages
from .diffusion import RectifiedFlow
from .model import VideoGPT
from .tokenizer import VideoTokenizer


def max_window(cfg: Config) -> int:
    """The largest rollout window for a model trained with ``cfg``: K - 1 clean clips, K the longest clip count
    of its training stages (the noisy clip then sits at position K - 1, the last one training used)."""
    t = cfg.train
    return max(1, max(k for k, _, _ in parse_stages(t.stages, t.clips, t.frames_per_clip, t.steps)) - 1)


@torch.no_grad()
def rollout(
    model: VideoGPT,
    context: torch.Tensor,
    num_clips: int,
    steps: int = 20,
    window: int = 8,
    use_cache: bool = True,
    cfg_scale: float = 1.0,
    cond: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Generate ``num_clips`` clips after a clean context.

    Args:
        model: a :class:`VideoGPT` (put it in eval mode).
        context: clean tokens ``(B, C, F, N, D)``, C >= 0 context clips (C = 0: unconditional start).
        num_clips: clips to generate.
        steps: Euler steps per clip.
        window: the most recent clean clips the model sees (>= 1); at most :func:`max_window` of the
            training config, so the noisy clip's position W was seen in training.
        use_cache: read an exact KV cache of the history (fast) or recompute it (reference).
        cfg_scale: classifier-free guidance against the prediction without history (and condition).
        cond: optional class labels ``(B,)`` or embedding ``(B, W)``.
        generator: CPU generator for the starting noise of every clip (same seed -> same frames).
    Returns:
        ``(B, C + num_clips, F, N, D)``: the context followed by the generated clips.
    """
    if context.ndim != 5:
        raise ValueError(f"context must be clean tokens (B, C, F, N, D), got {tuple(context.shape)}")
    if window < 1 or num_clips < 0:
        raise ValueError(f"need window >= 1 and num_clips >= 0, got window={window}, num_clips={num_clips}")
    flow = RectifiedFlow()
    B, _, Fr, N, D = context.shape
    clips = list(context.unbind(1))
    # the unconditional branch drops the history and the class/text condition
    drop_all = torch.ones(B, dtype=torch.bool, device=context.device)
    cache = model.prefill(context[:, -window:], cond) if use_cache and context.shape[1] else None
    bar = tqdm(range(num_clips), desc="rollout", unit="clip", disable=not progress)
    for _ in bar:
        history = torch.stack(clips[-window:], dim=1) if clips else context[:, :0]
        if use_cache:
            denoise = lambda x, t: model.denoise(x, t, cache, cond)  # noqa: E731, B023 (used in this iteration)
        else:
            denoise = lambda x, t: model.denoise_uncached(history, x, t, cond)  # noqa: E731, B023
        uncond = lambda x, t: model.denoise(x, t, None, cond, drop=drop_all)  # noqa: E731
        noise = torch.randn((B, Fr, N, D), generator=generator).to(context.device, context.dtype)
        new = flow.sample(denoise, noise, steps, cfg_scale, uncond if cfg_scale != 1.0 else None)
        clips.append(new)
        if use_cache:
            if len(clips) > window:  # the window slid: rebuild the cache from the window (exact)
                cache = model.prefill(torch.stack(clips[-window:], dim=1), cond)
            else:
                cache = model.append(cache, new, cond)
    return torch.stack(clips, dim=1)


def forecast(
    model: VideoGPT,
    tokenizer: VideoTokenizer,
    videos: torch.Tensor,
    context_clips: int,
    predict_clips: int,
    frames: int,
    steps: int,
    seed: int = 0,
    window: int | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Roll out ``predict_clips`` clips after the first ``context_clips`` clips of ``videos (B, T, C, H, W)``;
    returns the predicted frames ``(B, predict_clips * F, C, H, W)``.

    ``window`` defaults to ``context_clips``; pass ``max_window(cfg)`` (K - 1 for K training clips) to let the
    model see as much history as it was trained on, never more."""
    ctx = tokenizer.encode(videos[:, : context_clips * frames], frames)
    window = window or context_clips
    out = rollout(
        model,
        ctx,
        predict_clips,
        steps=steps,
        window=window,
        generator=torch.Generator().manual_seed(seed),
        progress=progress,
    )
    return tokenizer.decode(out[:, context_clips:])
