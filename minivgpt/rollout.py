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

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from .config import Config, parse_stages, stage_frames
from .diffusion import RectifiedFlow
from .model import VideoGPT
from .tokenizer import VideoTokenizer


def max_window(cfg: Config, frames_per_clip: int | None = None) -> int:
    """The largest rollout window for a model trained with ``cfg``, in clean clips of ``frames_per_clip``
    frames (default ``cfg.train.frames_per_clip``): ``T // F - 1`` for the longest video of T frames in its
    training stages, so the window plus the noisy clip spans at most the T frames training saw (for K x F
    stages, K - 1: the noisy clip then sits at position K - 1, the last one training used)."""
    t = cfg.train
    F = frames_per_clip or t.frames_per_clip
    longest = max(stage_frames(k, f) for k, f, _ in parse_stages(t.stages, t.clips, t.frames_per_clip, t.steps))
    return max(1, longest // F - 1)


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
    lengths: Sequence[int] | None = None,
    frames_per_clip: int | None = None,
    temperature: float = 1.0,
    cfg_t_min: float = 0.0,
    eta: float = 0.0,
    shift: float = 1.0,
) -> torch.Tensor:
    """Generate ``num_clips`` clips after a clean context.

    Args:
        model: a :class:`VideoGPT` (put it in eval mode).
        context: clean tokens ``(B, C, F, N, D)``, C >= 0 context clips (C = 0: unconditional start); or,
            with ``lengths``, frames ``(B, T, N, D)`` cut into clips of unequal length.
        num_clips: clips to generate.
        steps: Euler steps per clip.
        window: the most recent clean clips the model sees (>= 1); at most :func:`max_window` of the
            training config, so the noisy clip's position W was seen in training.
        use_cache: read an exact KV cache of the history (fast) or recompute it (reference).
        cfg_scale: classifier-free guidance against the prediction without history (and condition).
        cfg_t_min: guide only the Euler steps from ``t >= cfg_t_min`` (:meth:`RectifiedFlow.sample`).
        cond: optional class labels ``(B,)`` or embedding ``(B, W)``.
        generator: CPU generator for the starting noise of every clip (same seed -> same frames).
        lengths: frames of each context clip (they sum to T) for a context of unequal clips.
        frames_per_clip: frames F' of each generated clip; by default F (with ``lengths``, the length
            of the last context clip). Only with ``lengths`` may it differ from the context's clips.
        temperature: scale of every clip's starting noise (>= 0). 1 samples the model's distribution; 0
            starts every clip from the same point and follows the flow from there (a deterministic forecast).
        eta, shift: the sampler's share of noise redrawn at each step and its time grid
            (:meth:`RectifiedFlow.sample`; the redrawn noise comes from ``generator`` too). 0 and 1: Euler.
    Returns:
        ``(B, C + num_clips, F, N, D)``: the context followed by the generated clips; with ``lengths``,
        frames ``(B, T + num_clips * F', N, D)``.
    """
    if context.ndim != (4 if lengths is not None else 5):
        want = "frames (B, T, N, D) with lengths" if lengths is not None else "clean tokens (B, C, F, N, D)"
        raise ValueError(f"context must be {want}, got {tuple(context.shape)}")
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be >= 0 (1 samples, 0 is deterministic)")
    if window < 1 or num_clips < 0:
        raise ValueError(f"need window >= 1 and num_clips >= 0, got window={window}, num_clips={num_clips}")
    if lengths is None:  # equal clips: the same clip list, stacked back at the end
        clips = list(context.unbind(1))
        F_ctx = context.shape[2]
        if frames_per_clip not in (None, F_ctx):
            raise ValueError(f"frames_per_clip={frames_per_clip} differs from the context's F={F_ctx}: pass lengths")
    else:
        lengths = [int(f) for f in lengths]
        if sum(lengths) != context.shape[1] or any(f < 1 for f in lengths):
            raise ValueError(f"lengths={lengths} must be >= 1 each and sum to the T={context.shape[1]} frames")
        clips = list(context.split(lengths, dim=1))
        F_ctx = lengths[-1] if lengths else None
    flow = RectifiedFlow()
    B, N, D = context.shape[0], context.shape[-2], context.shape[-1]
    Fr = frames_per_clip or F_ctx
    if Fr is None:
        raise ValueError("an empty context with lengths=[] needs frames_per_clip")

    def window_of(cs: list[torch.Tensor]) -> tuple[torch.Tensor, tuple[int, ...]]:
        """The last ``window`` clips as frames ``(B, T_w, N, D)`` and their lengths."""
        cs = cs[-window:]
        return (torch.cat(cs, dim=1) if cs else context.new_zeros(B, 0, N, D)), tuple(c.shape[1] for c in cs)

    def prefill_window():
        """A KV cache of the window's clips: equal clips go the fast path, unequal ones with their lengths."""
        frames, lens = window_of(clips)
        return model.prefill(frames, cond, lengths=lens)

    # the unconditional branch drops the history and the class/text condition
    drop_all = torch.ones(B, dtype=torch.bool, device=context.device)
    cache = prefill_window() if use_cache and clips else None
    bar = tqdm(range(num_clips), desc="rollout", unit="clip", disable=not progress)
    for _ in bar:
        history, hist_lengths = window_of(clips)
        if use_cache:
            denoise = lambda x, t: model.denoise(x, t, cache, cond)  # noqa: E731, B023 (used in this iteration)
        else:
            denoise = lambda x, t: model.denoise_uncached(history, x, t, cond, lengths=hist_lengths)  # noqa: E731, B023
        uncond = lambda x, t: model.denoise(x, t, None, cond, drop=drop_all)  # noqa: E731
        noise = temperature * torch.randn((B, Fr, N, D), generator=generator).to(context.device, context.dtype)
        new = flow.sample(denoise, noise, steps, cfg_scale, uncond if cfg_scale != 1.0 else None, cfg_t_min=cfg_t_min,
                          eta=eta, shift=shift, generator=generator)
        clips.append(new)
        if use_cache:
            if len(clips) > window:  # the window slid: rebuild the cache from the window (exact)
                cache = prefill_window()
            else:
                cache = model.append(cache, new, cond)
    if lengths is None:
        return torch.stack(clips, dim=1) if clips else context
    return torch.cat(clips, dim=1) if clips else context


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
    temperature: float = 1.0,
    cfg_scale: float = 1.0,
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
        temperature=temperature,
        cfg_scale=cfg_scale,
    )
    return tokenizer.decode(out[:, context_clips:])
