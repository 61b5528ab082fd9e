"""Clips and patch tokens: the "visual words" of next clip diffusion.

Shapes used throughout the library:

- video   ``(B, T, C, H, W)``                    T = K * F frames
- clips   ``(B, K, F, C, H, W)``                 K clips of F frames
- tokens  ``(B, K, F, N, D)``                    N = (H/p) * (W/p) patches per frame, D = C * p * p

Every function here is an exact, lossless reshape (einops), so ``clips_to_video(video_to_clips(v, F))``
and ``unpatchify(patchify(x, p), p, H, W)`` give back their input bit for bit.

Derived in notebooks/01 (§ clips and patch tokens).
"""

from __future__ import annotations

import torch
from einops import rearrange


def _check_ndim(x: torch.Tensor, ndim: int, name: str, shape: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {shape}, got {type(x).__name__}")
    if x.ndim != ndim:
        raise ValueError(f"{name} must have shape {shape} ({ndim} dims), got {tuple(x.shape)}")


def video_to_clips(video: torch.Tensor, frames_per_clip: int) -> torch.Tensor:
    """Cut a video into consecutive clips of ``frames_per_clip`` frames.

    Args:
        video: ``(B, T, C, H, W)``.
        frames_per_clip: F; must divide T.
    Returns:
        ``(B, K, F, C, H, W)`` with K = T // F.
    """
    _check_ndim(video, 5, "video", "(B, T, C, H, W)")
    T = video.shape[1]
    if frames_per_clip < 1 or T % frames_per_clip:
        raise ValueError(
            f"frames_per_clip={frames_per_clip} does not divide the video length T={T}; "
            f"pick F in {[f for f in range(1, T + 1) if T % f == 0]} or crop the video to a multiple of F"
        )
    return rearrange(video, "b (k f) c h w -> b k f c h w", f=frames_per_clip)


def clips_to_video(clips: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`video_to_clips`: ``(B, K, F, C, H, W)`` -> ``(B, K*F, C, H, W)``."""
    _check_ndim(clips, 6, "clips", "(B, K, F, C, H, W)")
    return rearrange(clips, "b k f c h w -> b (k f) c h w")


def patchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut every frame into non-overlapping ``p x p`` patches, flattened to tokens.

    Args:
        x: ``(..., C, H, W)``, e.g. clips ``(B, K, F, C, H, W)`` or latents ``(B, K, F, c, h, w)``.
        patch_size: p; must divide H and W.
    Returns:
        ``(..., N, C*p*p)`` with N = (H/p)(W/p), patches in raster order (row-major), each token
        ordered (C, p_row, p_col).
    """
    if not isinstance(x, torch.Tensor) or x.ndim < 3:
        raise ValueError(f"patchify expects a tensor (..., C, H, W), got {getattr(x, 'shape', type(x))}")
    H, W = x.shape[-2:]
    p = patch_size
    if p < 1 or H % p or W % p:
        raise ValueError(f"patch_size={p} must divide the frame size H={H}, W={W}")
    return rearrange(x, "... c (gh p1) (gw p2) -> ... (gh gw) (c p1 p2)", p1=p, p2=p)


def unpatchify(tokens: torch.Tensor, patch_size: int, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``(..., N, C*p*p)`` -> ``(..., C, H, W)``."""
    p = patch_size
    if p < 1 or height % p or width % p:
        raise ValueError(f"patch_size={p} must divide the frame size H={height}, W={width}")
    gh, gw = height // p, width // p
    if tokens.ndim < 2 or tokens.shape[-2] != gh * gw or tokens.shape[-1] % (p * p):
        raise ValueError(
            f"tokens of shape {tuple(tokens.shape)} do not fit {height}x{width} frames with patch {p}: "
            f"expected (..., {gh * gw}, C*{p * p})"
        )
    return rearrange(tokens, "... (gh gw) (c p1 p2) -> ... c (gh p1) (gw p2)", gh=gh, gw=gw, p1=p, p2=p)


def patch_grid(height: int, width: int, patch_size: int) -> tuple[int, int]:
    """Number of patch rows and columns of a ``height x width`` frame."""
    if height % patch_size or width % patch_size:
        raise ValueError(f"patch_size={patch_size} must divide the frame size H={height}, W={width}")
    return height // patch_size, width // patch_size
