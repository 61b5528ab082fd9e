"""Interleave noisy and clean clip tokens into one sequence, and take it apart again.

Token order (the contract of DESIGN.md): for clip k = 0..K-1 first the noisy copy of clip k
(frame-major, patch-minor), then its clean copy::

    [noisy_0, clean_0, noisy_1, clean_1, ..., noisy_{K-1}, clean_{K-1}]

so the sequence has L = 2 * K * F * N tokens.
"""

from __future__ import annotations

import torch
from einops import rearrange


def interleave(noisy: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Build the interleaved sequence.

    Args:
        noisy: ``(B, K, F, N, D)`` noisy tokens.
        clean: ``(B, K, F, N, D)`` clean tokens (same shape).
    Returns:
        ``(B, L, D)`` with L = 2*K*F*N, ordered noisy_0, clean_0, noisy_1, clean_1, ...
    """
    if noisy.shape != clean.shape or noisy.ndim != 5:
        raise ValueError(
            f"noisy and clean must both be (B, K, F, N, D) of the same shape, got {tuple(noisy.shape)} "
            f"and {tuple(clean.shape)}"
        )
    both = torch.stack([noisy, clean], dim=2)  # (B, K, 2, F, N, D)
    return rearrange(both, "b k s f n d -> b (k s f n) d")


def deinterleave(seq: torch.Tensor, num_clips: int, frames_per_clip: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`interleave`.

    Args:
        seq: ``(B, L, D)`` with L = 2*K*F*N.
    Returns:
        ``(noisy, clean)``, each ``(B, K, F, N, D)``.
    """
    B, L, D = seq.shape
    per = 2 * num_clips * frames_per_clip
    if L % per:
        raise ValueError(f"sequence length {L} is not 2*K*F*N for K={num_clips}, F={frames_per_clip}")
    both = rearrange(seq, "b (k s f n) d -> b k s f n d", k=num_clips, s=2, f=frames_per_clip)
    return both[:, :, 0], both[:, :, 1]
