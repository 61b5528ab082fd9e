"""Evaluation metrics for generated video (pixel values in [-1, 1] unless said otherwise).

Videos are ``(B, T, C, H, W)`` or ``(T, C, H, W)``; frame metrics accept any leading dims ``(..., C, H, W)``.

- Frame metrics: :func:`mse`, :func:`psnr`, :func:`ssim`; ``reduction="none"`` gives one value per
  frame, shape ``pred.shape[:-3]`` (``(B, T)`` for a batch of videos), to plot error against horizon.
- Physics-IQ-style motion metrics (Motamed et al. 2025, "Do generative video models understand physical
  principles?"): :func:`motion_masks`, :func:`spatial_iou`, :func:`spatiotemporal_iou`,
  :func:`weighted_spatial_iou`, :func:`motion_mse`, bundled by :func:`motion_metrics`.
- Forecasting baselines: :func:`copy_last`, :func:`linear_extrapolation`, :func:`static_background`,
  :func:`constant_velocity` (object level; ``walls=True`` bounces the objects off the frame's edges with
  :func:`reflect`), all of them by :func:`baselines`; :func:`evaluate_forecast`, :func:`evaluate_all`.
- How far a score moves with the held-out sample: :func:`ratio_interval` (a paired bootstrap).
- Retrieval: :func:`recall_at_k`, :func:`retrieval_recalls`.
- :func:`frechet_distance` between two feature sets (features of a small classifier trained here;
  this is not FVD).
- Objects on a flat background: :func:`foreground`, :func:`foreground_area`, :func:`object_count`,
  :func:`horizontal_drift`.
- Segmentation of bool masks ``(M, H, W)``: :func:`region_iou` (J), :func:`boundary_f` (F).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange

Reduction = Literal["mean", "none"]


def _check_pair(pred: torch.Tensor, target: torch.Tensor, min_dim: int = 3) -> None:
    if pred.shape != target.shape:
        raise ValueError(
            f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape"
        )
    if pred.ndim < min_dim:
        raise ValueError(f"expected at least {min_dim} dims (..., C, H, W), got shape {tuple(pred.shape)}")


def _check_reduction(reduction: str) -> None:
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def _as_batch(video: torch.Tensor) -> torch.Tensor:
    """``(T, C, H, W)`` -> ``(1, T, C, H, W)``; ``(B, T, C, H, W)`` unchanged."""
    if video.ndim == 4:
        return video.unsqueeze(0)
    if video.ndim == 5:
        return video
    raise ValueError(f"expected a video (B, T, C, H, W) or (T, C, H, W), got shape {tuple(video.shape)}")


# ---------------------------------------------------------------------------------------------------------
# Frame metrics


def mse(pred: torch.Tensor, target: torch.Tensor, reduction: Reduction = "mean") -> torch.Tensor:
    """Mean squared error.

    Args:
        pred, target: ``(..., C, H, W)``, same shape.
        reduction: ``"mean"``: a scalar over all elements; ``"none"``: per frame, shape ``pred.shape[:-3]``.
    """
    _check_pair(pred, target, min_dim=1 if reduction == "mean" else 3)
    _check_reduction(reduction)
    sq = (pred.float() - target.float()).pow(2)
    return sq.mean() if reduction == "mean" else sq.mean(dim=(-3, -2, -1))


def psnr(
    pred: torch.Tensor, target: torch.Tensor, data_range: float = 2.0, reduction: Reduction = "mean"
) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, ``10 log10(range^2 / MSE)``; data_range is 2 for [-1, 1] videos.

    ``reduction="mean"`` uses the MSE over all elements (a scalar; this is not the mean of per-frame
    PSNRs); ``"none"`` gives per-frame PSNR of shape ``pred.shape[:-3]``. MSE is floored at 1e-12.
    """
    return psnr_from_mse(mse(pred, target, reduction=reduction).clamp_min(1e-12), data_range)


def psnr_from_mse(err: torch.Tensor | float, data_range: float = 2.0) -> torch.Tensor | float:
    """``10 log10(data_range^2 / err)`` in dB, for a tensor or a float MSE (``inf`` for a float 0).

    The one PSNR formula of the project: :func:`psnr`, the autoencoder's logs and its held-out score use it.
    """
    if isinstance(err, torch.Tensor):
        return 20.0 * math.log10(data_range) - 10.0 * torch.log10(err)
    return math.inf if err == 0 else 20.0 * math.log10(data_range) - 10.0 * math.log10(err)


def gaussian_1d(window: int = 11, sigma: float = 1.5, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Normalised 1-D gaussian ``(window,)`` centred on the middle tap."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd integer, got {window}")
    x = torch.arange(window, dtype=dtype) - (window - 1) / 2
    g = torch.exp(-(x / sigma).pow(2) / 2)
    return g / g.sum()


def gaussian_window(window: int = 11, sigma: float = 1.5, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Normalised 2-D gaussian window ``(window, window)``, the outer product of :func:`gaussian_1d`."""
    g = gaussian_1d(window, sigma, dtype)
    return g[:, None] * g[None, :]


def ssim_map(
    pred: torch.Tensor,
    target: torch.Tensor,
    data_range: float = 2.0,
    window: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    padding: Literal["reflect", "valid"] = "reflect",
) -> torch.Tensor:
    """Local SSIM of Wang et al. (2004), per channel, shape ``(..., C, H', W')``.

    Local means, variances and covariance are gaussian-weighted (two 1-D ``conv2d`` passes per channel, the
    separable form of the 2-D window: 2 w instead of w^2 multiplies a pixel);
    ``SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))`` with
    ``C1 = (k1 R)^2``, ``C2 = (k2 R)^2``. ``padding="reflect"``: the frame is reflection-padded by
    ``window // 2`` so ``H' = H`` (as torchmetrics >= 1.x); ``"valid"``: no padding, ``H' = H - window + 1``
    (as Wang et al.'s MATLAB code and scikit-image).
    """
    _check_pair(pred, target)
    if padding not in ("reflect", "valid"):
        raise ValueError(f"padding must be 'reflect' or 'valid', got {padding!r}")
    *lead, C, H, W = pred.shape
    pad = window // 2
    if padding == "valid" and min(H, W) < window:
        raise ValueError(f"frames {H}x{W} are smaller than the SSIM window {window}; pass a smaller window")
    if padding == "reflect" and min(H, W) <= pad:
        raise ValueError(f"frames {H}x{W} are too small to reflect-pad by {pad}; pass a smaller window")
    x = pred.float().reshape(-1, C, H, W)
    y = target.float().reshape(-1, C, H, W)
    if padding == "reflect":
        x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        y = F.pad(y, (pad, pad, pad, pad), mode="reflect")
    g = gaussian_1d(window, sigma).to(x.device)  # the 2-D window is g g^T: a row pass, then a column pass
    n = x.shape[0]
    # every (image, channel) plane is a channel of one image: a depthwise conv, far faster than a batch of
    # single-channel images on CPUs (10x measured on AVX2)
    stats = rearrange(torch.cat([x, y, x * x, y * y, x * y]), "b c h w -> 1 (b c) h w")
    planes = stats.shape[1]
    stats = F.conv2d(stats, g.view(1, 1, 1, window).expand(planes, 1, 1, window), groups=planes)
    stats = F.conv2d(stats, g.view(1, 1, window, 1).expand(planes, 1, window, 1), groups=planes)
    stats = rearrange(stats, "1 (b c) h w -> b c h w", c=C).split(n)
    mu_x, mu_y = stats[0], stats[1]
    var_x = (stats[2] - mu_x.pow(2)).clamp_min(0)
    var_y = (stats[3] - mu_y.pow(2)).clamp_min(0)
    cov = stats[4] - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x.pow(2) + mu_y.pow(2) + c1) * (var_x + var_y + c2))
    return s.reshape(*lead, C, *s.shape[-2:])


def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    data_range: float = 2.0,
    window: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    padding: Literal["reflect", "valid"] = "reflect",
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Structural similarity over frames (see :func:`ssim_map`), averaged over channels and pixels.

    Args:
        pred, target: ``(..., C, H, W)``, e.g. ``(B, T, C, H, W)``.
        reduction: ``"mean"``: a scalar (mean over frames); ``"none"``: per frame, shape ``pred.shape[:-3]``.

    The defaults (gaussian window 11, sigma 1.5, reflect padding) match
    ``torchmetrics.functional.structural_similarity_index_measure(..., data_range=2.0)`` per frame.
    """
    _check_reduction(reduction)
    per_frame = ssim_map(pred, target, data_range, window, sigma, k1, k2, padding).mean(dim=(-3, -2, -1))
    return per_frame.mean() if reduction == "mean" else per_frame


# ---------------------------------------------------------------------------------------------------------
# Physics-IQ-style motion metrics


def motion_masks(video: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """Where each frame changed: ``|x[t+1] - x[t]|`` (max over channels) ``> threshold``.

    Args:
        video: ``(B, T, C, H, W)`` (or ``(T, C, H, W)``), T >= 2, values in [-1, 1] (the threshold is in
            these units: 0.1 is 5 % of the range).
    Returns:
        BoolTensor ``(B, T-1, H, W)`` (``(T-1, H, W)`` for an unbatched video).
    """
    if video.ndim not in (4, 5):
        raise ValueError(f"expected a video (B, T, C, H, W) or (T, C, H, W), got shape {tuple(video.shape)}")
    if video.shape[-4] < 2:
        raise ValueError(f"motion needs at least 2 frames, got T={video.shape[-4]}")
    diff = (video[..., 1:, :, :, :].float() - video[..., :-1, :, :, :].float()).abs()
    return diff.amax(dim=-3) > threshold


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of bool masks ``(B, ...)`` per batch element, ``(B,)``; two empty masks give 1."""
    a, b = a.flatten(1), b.flatten(1)
    inter = (a & b).sum(1).float()
    union = (a | b).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def _pair_masks(
    pred: torch.Tensor, target: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    _check_pair(pred, target)
    return motion_masks(_as_batch(pred), threshold), motion_masks(_as_batch(target), threshold)


def spatial_iou(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """IoU of *where* anything moved: the union over time of the motion masks, ``(B, H, W)``.

    Args: videos ``(B, T, C, H, W)`` or ``(T, C, H, W)``. Returns a scalar, the mean over the batch.
    Convention: if neither video moves at all, the IoU is 1 (both agree that nothing moves).
    """
    mp, mt = _pair_masks(pred, target, threshold)
    return _iou(mp.any(1), mt.any(1)).mean()


def spatiotemporal_iou(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """IoU of *where and when* things moved: the per-frame motion masks over ``(T-1, H, W)``.

    Args: videos ``(B, T, C, H, W)`` or ``(T, C, H, W)``. Returns a scalar, the mean over the batch.
    Convention: two empty masks give IoU 1.
    """
    mp, mt = _pair_masks(pred, target, threshold)
    return _iou(mp, mt).mean()


def weighted_spatial_iou(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """IoU of *how much* each pixel moved: ``sum(min(p, q)) / sum(max(p, q))`` over ``(H, W)``.

    ``p``, ``q`` are the motion-frequency maps: the fraction of the T-1 frame steps in which a pixel moved.
    Args: videos ``(B, T, C, H, W)`` or ``(T, C, H, W)``. Returns a scalar, the mean over the batch.
    Convention: if neither video moves, 1.
    """
    mp, mt = _pair_masks(pred, target, threshold)
    p, q = mp.float().mean(1).flatten(1), mt.float().mean(1).flatten(1)
    num, den = torch.minimum(p, q).sum(1), torch.maximum(p, q).sum(1)
    return torch.where(den > 0, num / den.clamp_min(1e-12), torch.ones_like(den)).mean()


def motion_mse(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """MSE restricted to pixels where either video moved at some time (union of the spatial masks).

    The error is averaged over all frames and channels at those ``(h, w)`` locations, per video, then over
    the batch. Args: videos ``(B, T, C, H, W)`` or ``(T, C, H, W)``. Returns a scalar.
    Convention: a video pair in which nothing moves contributes 0.
    """
    mp, mt = _pair_masks(pred, target, threshold)
    region = (mp.any(1) | mt.any(1)).float()  # (B, H, W)
    sq = (_as_batch(pred).float() - _as_batch(target).float()).pow(2).mean(dim=(1, 2))  # (B, H, W)
    n = region.flatten(1).sum(1)
    per_video = (sq * region).flatten(1).sum(1) / n.clamp_min(1)
    return torch.where(n > 0, per_video, torch.zeros_like(per_video)).mean()


def motion_metrics(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.1) -> dict[str, float]:
    """All motion metrics as floats: ``spatial_iou``, ``spatiotemporal_iou``, ``weighted_spatial_iou``,
    ``motion_mse``. Args: videos ``(B, T, C, H, W)`` or ``(T, C, H, W)``, T >= 2."""
    fns = {
        "spatial_iou": spatial_iou,
        "spatiotemporal_iou": spatiotemporal_iou,
        "weighted_spatial_iou": weighted_spatial_iou,
        "motion_mse": motion_mse,
    }
    return {name: float(fn(pred, target, threshold)) for name, fn in fns.items()}


# ---------------------------------------------------------------------------------------------------------
# Forecasting baselines and the evaluation used by the demo table


def copy_last(context: torch.Tensor, horizon: int) -> torch.Tensor:
    """Repeat the last context frame: ``(B, T, C, H, W)`` -> ``(B, horizon, C, H, W)`` (also unbatched)."""
    last = context[..., -1:, :, :, :]
    return last.expand(*last.shape[:-4], horizon, *last.shape[-3:]).clone()


def linear_extrapolation(context: torch.Tensor, horizon: int) -> torch.Tensor:
    """Pixel-wise linear extrapolation from the last two frames, clamped to [-1, 1].

    ``x[T-1+h] = x[T-1] + h (x[T-1] - x[T-2])`` for ``h = 1..horizon``. With a single context frame the
    velocity is zero (copy-last). ``(B, T, C, H, W)`` -> ``(B, horizon, C, H, W)`` (also unbatched).
    """
    last = context[..., -1:, :, :, :]
    if context.shape[-4] < 2:
        return copy_last(context, horizon)
    velocity = last - context[..., -2:-1, :, :, :]
    h = torch.arange(1, horizon + 1, device=context.device, dtype=context.dtype).view(horizon, 1, 1, 1)
    return (last + h * velocity).clamp(-1.0, 1.0)


def static_background(context: torch.Tensor, horizon: int) -> torch.Tensor:
    """The per-pixel median of the context frames, repeated: a "nothing moves, objects vanish" baseline.

    On scenes of small moving objects over a still background it is close to the empty background, which
    a forecast must beat to show that it places the objects, not only that it avoids the double penalty
    a wrongly placed copy pays. ``(B, T, C, H, W)`` -> ``(B, horizon, C, H, W)`` (also unbatched).
    """
    med = context.contiguous().median(dim=-4, keepdim=True).values  # (a stride-0 dim gives a wrong median)
    return med.expand(*med.shape[:-4], horizon, *med.shape[-3:]).clone()


def connected_components(mask: torch.Tensor) -> torch.Tensor:
    """8-connected components of boolean images ``(..., H, W)``, labelled 1..n per image (0 = background).

    Label propagation: every foreground pixel starts with its own id and repeatedly takes the largest id in
    its 3x3 neighbourhood (a max-pool restricted to the foreground) until nothing changes; the ids are then
    renumbered 1..n per image in raster order of their largest pixel. Returns int64 ``(..., H, W)``.
    """
    if mask.ndim < 2:
        raise ValueError(f"expected boolean images (..., H, W), got shape {tuple(mask.shape)}")
    *lead, H, W = mask.shape
    fg = mask.reshape(-1, 1, H, W).bool()
    # float64 holds every id exactly (float32 would stop at 2^24 pixels)
    ids = torch.arange(1, H * W + 1, dtype=torch.float64, device=mask.device).view(1, 1, H, W)
    labels = torch.where(fg, ids, torch.zeros((), dtype=torch.float64, device=mask.device))
    while True:
        grown = torch.where(fg, F.max_pool2d(labels, 3, stride=1, padding=1), labels)
        if torch.equal(grown, labels):
            break
        labels = grown
    labels = labels.long().flatten(1)
    out = torch.zeros_like(labels)
    for i, row in enumerate(labels):  # renumber 1..n per image
        ids_i, inverse = torch.unique(row, return_inverse=True)
        out[i] = inverse if ids_i[0] == 0 else inverse + 1
    return out.reshape(*lead, H, W)


def reflect(position: torch.Tensor, limit: float) -> torch.Tensor:
    """Fold positions into ``[0, limit]`` as a point moving between two mirrors would be: ``limit + 1`` maps to
    ``limit - 1``, ``-2`` to ``2``, ``2 limit + 1`` to ``1`` (any shape; ``limit <= 0`` gives 0)."""
    if limit <= 0:
        return torch.zeros_like(position)
    folded = torch.remainder(position, 2 * limit)
    return torch.where(folded > limit, 2 * limit - folded, folded)


def constant_velocity(
    context: torch.Tensor, horizon: int, threshold: float = 0.1, walls: bool = False
) -> torch.Tensor:
    """Object-level constant velocity: every moving object keeps its last displacement, over the background.

    1. Background: the per-pixel median of the context frames (as :func:`static_background`); foreground:
       pixels whose largest channel differs from it by more than ``threshold`` (in [-1, 1] units).
    2. Objects: the 8-connected components (:func:`connected_components`) of the foreground of each of the
       last two context frames.
    3. Each object of the last frame is matched to the object of the frame before with the nearest centroid;
       its displacement ``d`` is the difference of the two centroids (0 when the frame before has none).
    4. Future frame ``h = 1..horizon`` is the background with each object's pixels of the last frame pasted
       at ``round(h * d)`` (later objects over earlier ones); pixels that leave the frame disappear.
       With ``walls=True`` the frame's edges are walls instead: the object's bounding box bounces off them
       elastically (its offset ``h * d`` folded by :func:`reflect`; the pixels are moved, not mirrored), so
       an object never leaves. Over the demo's 8 frames it has 0.90x the plain one's error on one bouncing
       ball and 0.99x on 1-3 balls; on Moving MNIST 1.07x, since its generator bounces a 28 x 28 box larger
       than a digit's visible pixels, so the visible box bounces late.

    A static video (no foreground) gives the background, i.e. copy-last. With one context frame the
    velocity is zero. ``(B, T, C, H, W)`` -> ``(B, horizon, C, H, W)`` (also unbatched).
    """
    if not torch.is_floating_point(context):
        raise TypeError(f"context must be a floating-point video in [-1, 1], got dtype {context.dtype}")
    if context.ndim not in (4, 5):
        raise ValueError(f"expected a video (B, T, C, H, W) or (T, C, H, W), got shape {tuple(context.shape)}")
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    video = _as_batch(context)
    B, T, C, H, W = video.shape
    # contiguous: torch's median over an expanded (stride-0) dim returns garbage
    background = video.contiguous().median(dim=1).values  # (B, C, H, W)
    out = background.unsqueeze(1).repeat(1, horizon, 1, 1, 1)  # (B, horizon, C, H, W)
    pairs = video[:, -2:] if T >= 2 else video[:, -1:]
    fg = (pairs - background.unsqueeze(1)).abs().amax(dim=2) > threshold  # (B, 2 or 1, H, W)
    labels = connected_components(fg)
    yy, xx = torch.meshgrid(torch.arange(H, device=video.device), torch.arange(W, device=video.device), indexing="ij")
    steps = torch.arange(1, horizon + 1, device=video.device, dtype=torch.float64)
    for b in range(B):
        last = labels[b, -1]
        n_last = int(last.max())
        if n_last == 0:
            continue
        prev_centroids = _centroids(labels[b, 0], yy, xx) if T >= 2 else _centroids(torch.zeros_like(last), yy, xx)
        frame = video[b, -1].permute(1, 2, 0)  # (H, W, C)
        target = out[b].permute(0, 2, 3, 1)  # (horizon, H, W, C), a view of out
        for k, c in enumerate(_centroids(last, yy, xx)):
            if len(prev_centroids):
                d = c - prev_centroids[(prev_centroids - c).pow(2).sum(1).argmin()]
            else:
                d = torch.zeros_like(c)
            ys, xs = (last == k + 1).nonzero(as_tuple=True)
            offset = steps[:, None] * d  # (horizon, 2): (y, x) of the object's move at each future frame
            if walls:  # bounce the bounding box (its corner at (y0, x0)) between the frame's edges
                y0, x0 = ys.min(), xs.min()
                span_y, span_x = int(ys.max() - y0) + 1, int(xs.max() - x0) + 1
                offset = torch.stack(
                    [reflect(y0 + offset[:, 0], H - span_y) - y0, reflect(x0 + offset[:, 1], W - span_x) - x0], 1
                )
            shift = torch.round(offset).long()  # (horizon, 2)
            ny, nx = ys[None] + shift[:, :1], xs[None] + shift[:, 1:]  # (horizon, n)
            keep = (ny >= 0) & (ny < H) & (nx >= 0) & (nx < W)
            hh = torch.arange(horizon, device=video.device)[:, None].expand_as(ny)
            target[hh[keep], ny[keep], nx[keep]] = frame[ys, xs].repeat(horizon, 1)[keep.flatten()]
    return out if context.ndim == 5 else out[0]


def object_shape(
    pred: torch.Tensor, target: torch.Tensor, context: torch.Tensor, threshold: float = 0.1
) -> dict[str, list[float]]:
    """Does the object keep its shape? Per predicted frame, its foreground area and peak against the truth's.

    The background is the per-pixel median of the context (as in :func:`constant_velocity`); a pixel is
    foreground where its largest channel differs from it by more than ``threshold``. Per frame and video:
    ``area`` = foreground pixels, ``peak`` = the largest difference from the background. A ball that blurs
    grows in area and loses peak; one that fades loses both. Videos whose true frame has no foreground are
    left out of that frame's mean.

    Args:
        pred, target: ``(B, horizon, C, H, W)`` in [-1, 1]; context: ``(B, T, C, H, W)``.
    Returns:
        ``{"area_ratio", "peak_ratio"}``: per future frame, the mean over videos of pred / truth.
    """
    _check_pair(pred, target, min_dim=5)
    if context.ndim != 5 or context.shape[0] != pred.shape[0] or context.shape[2:] != pred.shape[2:]:
        raise ValueError(f"context must be (B, T, C, H, W) like pred {tuple(pred.shape)}, got {tuple(context.shape)}")
    background = context.contiguous().median(dim=1).values.unsqueeze(1)  # (B, 1, C, H, W)

    def area_peak(video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        diff = (video - background).abs().amax(dim=2)  # (B, horizon, H, W)
        return (diff > threshold).flatten(2).sum(-1).double(), diff.flatten(2).amax(-1).double()

    (pa, pp), (ta, tp) = area_peak(pred), area_peak(target)
    seen = ta > 0  # (B, horizon)
    count = seen.sum(0).clamp(min=1)
    ratio = lambda p, t: (torch.where(seen, p / t.clamp(min=1e-12), 0).sum(0) / count).tolist()  # noqa: E731
    return {"area_ratio": ratio(pa, ta), "peak_ratio": ratio(pp, tp)}


def foreground(video: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """Foreground of small objects on a flat background: ``(B, T, H, W)`` bool.

    The background is each video's median colour over all its frames and pixels (so an object that moves
    less than its own size is not taken for background, as it would be by a per-pixel median); a pixel is
    foreground where its largest channel differs from it by more than ``threshold``.

    Args:
        video: ``(B, T, C, H, W)`` in [-1, 1].
    """
    if not torch.is_floating_point(video):
        raise TypeError(f"video must be a floating-point video in [-1, 1], got dtype {video.dtype}")
    if video.ndim != 5:
        raise ValueError(f"expected videos (B, T, C, H, W), got shape {tuple(video.shape)}")
    background = rearrange(video, "b t c h w -> b c (t h w)").median(dim=-1).values  # (B, C)
    return (video - background[:, None, :, None, None]).abs().amax(dim=2) > threshold


def foreground_area(video: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """How much object there is: foreground pixels per frame (:func:`foreground`), ``(B, T)`` float.

    For generated videos against real ones of the same class: a model that draws too many or too few
    objects, or blurs them, shows it here (an empty frame has area 0).

    Args:
        video: ``(B, T, C, H, W)`` in [-1, 1].
    """
    return foreground(video, threshold).flatten(2).sum(-1).float()


def object_count(video: torch.Tensor, min_pixels: int = 4, threshold: float = 0.1) -> torch.Tensor:
    """How many objects each frame shows: 8-connected :func:`foreground` components of at least
    ``min_pixels`` pixels (so stray specks are not counted), ``(B, T)`` int64.

    Objects that touch count as one (as in real videos of colliding balls). For generated videos: a model
    that loses or invents objects as it rolls out shows it here, frame by frame.

    Args:
        video: ``(B, T, C, H, W)`` in [-1, 1].
    """
    if min_pixels < 1:
        raise ValueError(f"min_pixels={min_pixels} must be >= 1")
    ids = connected_components(foreground(video, threshold)).flatten(2)  # (B, T, H*W), 0 = background
    sizes = torch.zeros(*ids.shape[:2], int(ids.max()) + 1, dtype=torch.long, device=ids.device)
    sizes.scatter_add_(2, ids, torch.ones_like(ids))  # (B, T, 1 + components): pixels per id
    return (sizes[..., 1:] >= min_pixels).sum(-1)


def horizontal_drift(video: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """How far the scene moves sideways: the foreground's mean column in the last frame minus the first's.

    A judge of direction that needs no trained network, for small objects on a flat background (balls,
    digits): the foreground is :func:`foreground` (the video's median colour as background), and its mean
    column is taken in the first and the last frame. Positive = drifting right: the pixel reading of
    :meth:`minivgpt.data.BouncingBalls.label_of` (mean x of the ball centres, last frame against first).

    Args:
        video: ``(B, T, C, H, W)`` in [-1, 1], T >= 2.
    Returns:
        ``(B,)`` float, in pixels; NaN where the first or the last frame has no foreground.
    """
    if video.ndim != 5 or video.shape[1] < 2:
        raise ValueError(f"expected videos (B, T, C, H, W) with T >= 2, got shape {tuple(video.shape)}")
    fg = foreground(video, threshold)[:, [0, -1]].double()  # (B, 2, H, W): the first and the last frame
    cols = torch.arange(video.shape[-1], dtype=torch.float64, device=video.device)
    mass = fg.sum(dim=(-2, -1))  # (B, 2)
    mean_col = (fg * cols).sum(dim=(-2, -1)) / mass  # NaN where a frame has no foreground
    return (mean_col[:, 1] - mean_col[:, 0]).float()


def _centroids(labels: torch.Tensor, yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
    """``(n, 2)`` float64 (y, x) centroids of the components 1..n of one label image ``(H, W)``."""
    n = int(labels.max())
    flat = labels.flatten()
    zeros = torch.zeros(n + 1, dtype=torch.float64, device=labels.device)
    counts = zeros.index_add(0, flat, torch.ones_like(flat, dtype=torch.float64))
    sy = zeros.index_add(0, flat, yy.flatten().double())
    sx = zeros.index_add(0, flat, xx.flatten().double())
    return torch.stack([sy, sx], 1)[1:] / counts[1:, None]


def evaluate_forecast(
    pred: torch.Tensor, target: torch.Tensor, context: torch.Tensor | None = None, threshold: float = 0.1
) -> dict[str, float]:
    """``{"mse", "psnr", "ssim", "motion_iou"}`` of predicted frames against the true ones, as floats.

    Args:
        pred, target: ``(B, horizon, C, H, W)`` (or unbatched).
        context: optional ``(B, T, C, H, W)``; its last frame is put before both videos for the motion
            metric, so motion into the first predicted frame counts (needed when ``horizon == 1``).
    ``motion_iou`` is :func:`spatial_iou`.
    """
    _check_pair(pred, target)
    mp, mt = pred, target
    if context is not None:
        last = context[..., -1:, :, :, :].to(pred.dtype)
        mp, mt = torch.cat([last, pred], dim=-4), torch.cat([last, target], dim=-4)
    return {
        "mse": float(mse(pred, target)),
        "psnr": float(psnr(pred, target)),
        "ssim": float(ssim(pred, target)),
        "motion_iou": float(spatial_iou(mp, mt, threshold)),
    }


def baselines(context: torch.Tensor, horizon: int) -> dict[str, torch.Tensor]:
    """Every forecasting baseline of ``context (B, T, C, H, W)`` (or unbatched) over ``horizon`` frames:
    ``{"copy_last", "linear", "background", "constant_velocity", "constant_velocity_walls", "blank"}`` ->
    ``(B, horizon, C, H, W)`` (``constant_velocity_walls``: objects bounce off the frame's edges, see
    :func:`constant_velocity`; ``blank``: every pixel -1, the empty black frame; it wins when objects are
    likely to move away)."""
    return {
        "copy_last": copy_last(context, horizon),
        "linear": linear_extrapolation(context, horizon),
        "background": static_background(context, horizon),
        "constant_velocity": constant_velocity(context, horizon),
        "constant_velocity_walls": constant_velocity(context, horizon, walls=True),
        "blank": context.new_full((*context.shape[:-4], horizon, *context.shape[-3:]), -1.0),
    }


def evaluate_all(pred: torch.Tensor, context: torch.Tensor, target: torch.Tensor) -> dict:
    """Score a forecast and the baselines on the same held-out frames.

    ``pred``/``target`` ``(B, H, C, h, w)``, ``context`` ``(B, T_ctx, C, h, w)``; returns
    ``{"model", **baselines}`` (:func:`baselines`) -> :func:`evaluate_forecast` dicts.
    """
    rows = {"model": pred, **baselines(context, target.shape[1])}
    return {name: evaluate_forecast(p, target, context=context) for name, p in rows.items()}


def ratio_interval(
    num: torch.Tensor, den: torch.Tensor, level: float = 0.9, draws: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """How far ``num.sum() / den.sum()`` moves with the sample: a paired percentile bootstrap.

    Args:
        num, den: ``(B,)`` paired per-sample scores, e.g. the per-video MSE of a model and of a baseline
            on the same B held-out videos (``mse(pred, target, reduction="none").mean(1)``).
        level: the central share of the resampled ratios to return (0.9: the 5th to the 95th percentile).
        draws: resamples of B videos drawn with replacement (the same videos for ``num`` and ``den``).
        seed: the resampling's seed, so a report is repeatable.
    Returns:
        ``(low, high)``: the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resampled ratio.
        It says how much another set of B videos from the same distribution could move the ratio; it
        says nothing about another training run.
    """
    if num.dim() != 1 or num.shape != den.shape:
        raise ValueError(f"num and den must be paired 1-D scores (B,), got {tuple(num.shape)} and {tuple(den.shape)}")
    if len(num) < 2:
        raise ValueError(f"a bootstrap needs at least 2 samples, got {len(num)}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), e.g. 0.9, got {level}")
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    if not float(den.sum()) > 0:
        raise ValueError("den must have a positive sum (the baseline's error)")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(num), (draws, len(num)), generator=g)
    ratios = num.double()[idx].sum(1) / den.double()[idx].sum(1)
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    low, high = torch.quantile(ratios, q).tolist()
    return low, high


# ---------------------------------------------------------------------------------------------------------
# Retrieval

def recall_at_k(similarity: torch.Tensor, k: int) -> torch.Tensor:
    """Fraction of queries whose correct item is among the top k; query i's correct item is item i.

    Args:
        similarity: ``(Nq, Nd)``, Nq <= Nd, higher = more similar.
    Ties are counted against the query (rank = number of other items with similarity >= the correct
    one), so a constant similarity matrix does not score as perfect. Returns a scalar tensor.
    """
    if similarity.ndim != 2 or similarity.shape[0] > similarity.shape[1]:
        raise ValueError(f"similarity must be (Nq, Nd) with Nq <= Nd, got {tuple(similarity.shape)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    nq = similarity.shape[0]
    idx = torch.arange(nq, device=similarity.device)
    correct = similarity[idx, idx].unsqueeze(1)
    rank = (similarity >= correct).sum(1) - 1  # other items at least as similar
    return (rank < k).float().mean()


def retrieval_recalls(similarity: torch.Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """``{"R@1": ..., "R@5": ..., "R@10": ...}`` from a ``(Nq, Nd)`` similarity matrix (see recall_at_k)."""
    return {f"R@{k}": float(recall_at_k(similarity, k)) for k in ks}


# ---------------------------------------------------------------------------------------------------------
# Frechet distance


def _sym_sqrt(m: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix via its eigendecomposition."""
    w, v = torch.linalg.eigh((m + m.T) / 2)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> torch.Tensor:
    """Fréchet distance between Gaussians fitted to two feature sets.

    ``||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^{1/2})`` with unbiased covariances, computed in
    float64; ``tr (S_a S_b)^{1/2} = sum sqrt(eig(S_a^{1/2} S_b S_a^{1/2}))`` (a symmetric PSD matrix, so
    the eigenvalues are real and the square root is stable).

    This is a Fréchet distance on features of the small video classifier trained in this project on the
    synthetic data; it is NOT FVD (which uses an I3D network trained on Kinetics), and its values are not
    comparable with published FVD numbers.

    Args:
        feats_a: ``(N, D)``, feats_b: ``(M, D)``, N, M >= 2.
    Returns:
        A float64 scalar tensor.
    """
    if feats_a.ndim != 2 or feats_b.ndim != 2 or feats_a.shape[1] != feats_b.shape[1]:
        raise ValueError(
            f"need (N, D) and (M, D) features, got {tuple(feats_a.shape)} and {tuple(feats_b.shape)}"
        )
    if feats_a.shape[0] < 2 or feats_b.shape[0] < 2:
        raise ValueError("need at least 2 samples in each set to estimate a covariance")
    a, b = feats_a.double(), feats_b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    d = a.shape[1]
    cov_a, cov_b = torch.cov(a.T).reshape(d, d), torch.cov(b.T).reshape(d, d)  # unbiased (N - 1)
    root_a = _sym_sqrt(cov_a)
    middle = root_a @ cov_b @ root_a
    eig = torch.linalg.eigvalsh((middle + middle.T) / 2)
    tr_sqrt = eig.clamp_min(0).sqrt().sum()
    return (mu_a - mu_b).pow(2).sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * tr_sqrt

# ---------------------------------------------------------------------------------------------------------
# Segmentation (DAVIS-style J and F; derived in notebooks/07, §5)


def region_iou(pred: torch.Tensor, target: torch.Tensor) -> float:
    """J: mean over frames of |pred ∩ target| / |pred ∪ target|, bool masks ``(M, H, W)`` (empty ∪ -> 1)."""
    _check_pair(pred, target)
    p, t = pred.bool().flatten(1), target.bool().flatten(1)
    inter, union = (p & t).sum(1).float(), (p | t).sum(1).float()
    return float(torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union)).mean())


def mask_boundary(mask: torch.Tensor) -> torch.Tensor:
    """Boundary pixels of bool masks ``(M, H, W)``: foreground with a neighbour outside (or on the border)."""
    m = mask.bool().float()[:, None]
    eroded = -F.max_pool2d(-F.pad(m, (1, 1, 1, 1), value=0.0), 3, stride=1)
    return (m.bool() & ~eroded.bool())[:, 0]


def boundary_f(pred: torch.Tensor, target: torch.Tensor, tolerance: int = 1) -> float:
    """F: boundary F-measure (DAVIS style) for bool masks ``(M, H, W)``, averaged over frames.

    A predicted boundary pixel is correct if a true boundary pixel lies within ``tolerance`` pixels
    (Chebyshev distance), and vice versa for recall; F = 2PR / (P + R). Frames where both boundaries are
    empty score 1; where only one is, 0.
    """
    _check_pair(pred, target)
    bp, bt = mask_boundary(pred), mask_boundary(target)
    k = 2 * tolerance + 1

    def dilate(b: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(b.float()[:, None], k, stride=1, padding=tolerance)[:, 0].bool()

    np_, nt = bp.flatten(1).sum(1).float(), bt.flatten(1).sum(1).float()
    prec = (bp & dilate(bt)).flatten(1).sum(1) / np_.clamp_min(1)
    rec = (bt & dilate(bp)).flatten(1).sum(1) / nt.clamp_min(1)
    f = 2 * prec * rec / (prec + rec).clamp_min(1e-12)
    f = torch.where(
        (np_ == 0) & (nt == 0),
        torch.ones_like(f),
        torch.where((np_ == 0) | (nt == 0), torch.zeros_like(f), f),
    )
    return float(f.mean())
