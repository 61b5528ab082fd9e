"""Pictures and animations: frames, rollouts against truth, clips, the attention mask, the token sequence,
GIF/HTML animation and training curves.

Videos are tensors in [-1, 1]: a frame ``(C, H, W)``, a video ``(T, C, H, W)`` (a leading batch of 1 is
accepted where one video is expected), clips ``(K, F, C, H, W)``. 1-channel frames are drawn in grayscale.
Plotting functions draw into ``ax`` (a new figure when None) and return the Axes; ``save_gif`` returns the
path. The backend is left to the caller (tests use Agg; notebooks use inline).

Used by every notebook (notebooks/01-08) and by scripts/make_figures.py.
"""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap, to_rgb
from matplotlib.patches import Rectangle
from PIL import Image

_GAP_VALUE = 1.0  # white separators between tiles


def _numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().float().numpy()
    return np.asarray(x, dtype=np.float32)


def _one_video(video: torch.Tensor | np.ndarray, ndim: int = 4) -> np.ndarray:
    """Drop a leading batch dim of size 1 so the array has ``ndim`` dims."""
    v = _numpy(video)
    while v.ndim > ndim and v.shape[0] == 1:
        v = v[0]
    if v.ndim != ndim:
        raise ValueError(f"expected {ndim} dims, got shape {v.shape}")
    return v


def _new_ax(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def to_image(frame: torch.Tensor | np.ndarray) -> np.ndarray:
    """A frame in [-1, 1] as a float32 image in [0, 1] for ``imshow``.

    ``(C, H, W)`` -> ``(H, W, 3)`` for C = 3, ``(H, W)`` (grayscale) for C = 1 or a 2-D ``(H, W)`` input;
    other channel counts (e.g. latents) are shown as their channel mean in grayscale.
    """
    x = _numpy(frame)
    if x.ndim == 3:
        x = x.transpose(1, 2, 0) if x.shape[0] == 3 else x.mean(0)
    elif x.ndim != 2:
        raise ValueError(f"expected a frame (C, H, W) or (H, W), got shape {x.shape}")
    return np.clip((x + 1.0) / 2.0, 0.0, 1.0).astype(np.float32)


def _rgb(img: np.ndarray) -> np.ndarray:
    return np.repeat(img[..., None], 3, axis=-1) if img.ndim == 2 else img


def _tile(
    tiles: Sequence[Sequence[np.ndarray | None]], col_gaps: Sequence[int], row_gap: int
) -> tuple[np.ndarray, list[int], list[int]]:
    """Paste equal-size ``(h, w, 3)`` tiles (None = blank) into one image.

    Returns the image and the left x of every column and top y of every row.
    """
    first = next(t for row in tiles for t in row if t is not None)
    h, w = first.shape[:2]
    ncol = max(len(r) for r in tiles)
    xs = [0]
    for j in range(1, ncol):
        xs.append(xs[-1] + w + col_gaps[j - 1])
    ys = [i * (h + row_gap) for i in range(len(tiles))]
    img = np.full((ys[-1] + h, xs[-1] + w, 3), _GAP_VALUE, dtype=np.float32)
    for i, row in enumerate(tiles):
        for j, t in enumerate(row):
            if t is not None:
                img[ys[i] : ys[i] + h, xs[j] : xs[j] + w] = t
    return img, xs, ys


def _frame_indices(num_frames: int, max_frames: int) -> list[int]:
    if num_frames <= max_frames:
        return list(range(num_frames))
    return sorted({int(round(i)) for i in np.linspace(0, num_frames - 1, max_frames)})


def _show_tiled(ax: Axes, img: np.ndarray) -> None:
    ax.imshow(img, interpolation="nearest", vmin=0.0, vmax=1.0)
    for side in ax.spines.values():
        side.set_visible(False)


def show_strip(
    video: torch.Tensor | np.ndarray, title: str | None = None, ax: Axes | None = None, max_frames: int = 16
) -> Axes:
    """One row of frames of a video ``(T, C, H, W)``; at most ``max_frames`` evenly spaced frames, each
    labelled with its index."""
    return show_videos({"": video}, title=title, ax=ax, max_frames=max_frames)


def show_videos(
    rows: Mapping[str, torch.Tensor | np.ndarray],
    title: str | None = None,
    ax: Axes | None = None,
    max_frames: int = 16,
    context_frames: int | None = None,
    align: str = "left",
) -> Axes:
    """Several labelled rows of frames, e.g. ``{"truth": v, "model": p, "copy-last": c}``.

    Args:
        rows: name -> video ``(T, C, H, W)``; rows may differ in length.
        context_frames: draw a red line after this many frames (context | prediction).
        align: ``"left"`` or ``"right"``; with ``"right"`` shorter rows end with the longest one (a
            prediction of the last frames shown under the full true video).
    Column ticks give the frame index (of the longest row).
    """
    if align not in ("left", "right"):
        raise ValueError(f"align must be 'left' or 'right', got {align!r}")
    videos = {name: _one_video(v) for name, v in rows.items()}
    if not videos:
        raise ValueError("rows is empty")
    t_max = max(v.shape[0] for v in videos.values())
    cols = _frame_indices(t_max, max_frames)
    tiles = []
    for v in videos.values():
        offset = t_max - v.shape[0] if align == "right" else 0
        tiles.append([_rgb(to_image(v[t - offset])) if 0 <= t - offset < v.shape[0] else None for t in cols])
    gaps = [1 if b == a + 1 else 3 for a, b in zip(cols, cols[1:])]
    img, xs, ys = _tile(tiles, gaps, row_gap=2)
    h, w = next(t for r in tiles for t in r if t is not None).shape[:2]
    ax = _new_ax(ax, figsize=(min(1.0 * len(cols) + 0.8, 16), 1.1 * len(videos) + 0.4))
    _show_tiled(ax, img)
    ax.set_xticks([x + w / 2 - 0.5 for x in xs], [str(t) for t in cols], fontsize=7)
    ax.set_yticks([y + h / 2 - 0.5 for y in ys], list(videos), fontsize=9)
    ax.tick_params(length=0)
    if context_frames is not None:
        before = [j for j, t in enumerate(cols) if t < context_frames]
        if before and before[-1] + 1 < len(cols):
            j = before[-1]
            ax.axvline((xs[j] + w + xs[j + 1]) / 2 - 0.5, color="tab:red", lw=1.5)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_clips(
    clips: torch.Tensor | np.ndarray, title: str | None = None, ax: Axes | None = None, gap: int = 4
) -> Axes:
    """Frames of ``(K, F, C, H, W)`` clips in one row, grouped by clip: a ``gap``-pixel space between clips
    and a coloured border (the clip colour of :func:`plot_sequence_strip`) around each clip."""
    c = _one_video(clips, ndim=5)
    K, F = c.shape[:2]
    row = [_rgb(to_image(c[k, f])) for k in range(K) for f in range(F)]
    gaps = [gap if (i + 1) % F == 0 else 1 for i in range(K * F - 1)]
    img, xs, _ = _tile([row], gaps, row_gap=0)
    pad = 2
    img = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), constant_values=_GAP_VALUE)
    h, w = row[0].shape[:2]
    ax = _new_ax(ax, figsize=(min(0.9 * K * F + 0.5, 16), 1.5))
    _show_tiled(ax, img)
    centers = []
    for k in range(K):
        x0, x1 = xs[k * F] + pad, xs[k * F + F - 1] + w + pad
        ax.add_patch(
            Rectangle((x0 - 1.5, pad - 1.5), x1 - x0 + 2, h + 2, fill=False, lw=2, ec=_clip_color(k))
        )
        centers.append((x0 + x1) / 2 - 0.5)
    ax.set_xticks(centers, [f"clip {k}" for k in range(K)], fontsize=8)
    ax.set_yticks([])
    ax.tick_params(length=0)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


# ---------------------------------------------------------------------------------------------------------
# Mask and token sequence


def _clip_color(k: int) -> tuple[float, float, float]:
    return to_rgb(plt.get_cmap("tab10")(k % 10))


def _lighter(rgb: tuple[float, float, float], amount: float = 0.55) -> tuple[float, float, float]:
    return tuple(c + (1.0 - c) * amount for c in rgb)


def _segments(clip: np.ndarray, noisy: np.ndarray) -> list[tuple[int, int, int, bool]]:
    """Runs of constant (clip, is_noisy): ``(start, stop, clip, is_noisy)``."""
    change = np.flatnonzero((clip[1:] != clip[:-1]) | (noisy[1:] != noisy[:-1])) + 1
    bounds = [0, *change.tolist(), len(clip)]
    return [(a, b, int(clip[a]), bool(noisy[a])) for a, b in zip(bounds, bounds[1:])]


def _layout_arrays(layout, length: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    clip = layout.clip.detach().cpu().numpy()
    frame = layout.frame.detach().cpu().numpy()
    noisy = layout.is_noisy.detach().cpu().numpy().astype(bool)
    if length is not None:
        if len(clip) < length:
            raise ValueError(f"layout has {len(clip)} tokens but the mask has {length}")
        clip, frame, noisy = clip[:length], frame[:length], noisy[:length]
    return clip, frame, noisy


def _seg_label(k: int, noisy: bool) -> str:
    return f"{'n' if noisy else 'c'}{k}"


def plot_mask(
    mask: torch.Tensor | np.ndarray, layout=None, ax: Axes | None = None, title: str | None = None
) -> Axes:
    """Image of a bool attention mask ``(L, L)`` (row = query i, column = key j, filled = may attend).

    With ``layout`` (an object with ``clip``, ``frame``, ``is_noisy`` tensors of shape ``(L,)``, e.g.
    :class:`minivgpt.sequence.TokenLayout`), lines separate the noisy/clean copies of clips, thin lines the
    frames, and ticks read ``n0 c0 n1 ...`` (noisy/clean copy of clip k). A longer layout is cut to L
    (the mask without the last clean copy).
    """
    m = _numpy(mask).astype(bool)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"mask must be square (L, L), got shape {m.shape}")
    L = m.shape[0]
    ax = _new_ax(ax, figsize=(5, 5))
    ax.imshow(m, cmap=ListedColormap(["white", "tab:blue"]), vmin=0, vmax=1, interpolation="nearest")
    if layout is not None:
        clip, frame, noisy = _layout_arrays(layout, L)
        if L <= 1024:
            fb = np.flatnonzero(frame[1:] != frame[:-1]) + 0.5
            for b in fb:
                ax.axhline(b, color="0.6", lw=0.3)
                ax.axvline(b, color="0.6", lw=0.3)
        segs = _segments(clip, noisy)
        for a, _, _, _ in segs[1:]:
            ax.axhline(a - 0.5, color="black", lw=0.8)
            ax.axvline(a - 0.5, color="black", lw=0.8)
        centers = [(a + b) / 2 - 0.5 for a, b, _, _ in segs]
        labels = [_seg_label(k, n) for _, _, k, n in segs]
        fs = 8 if len(segs) <= 24 else 5
        ax.set_xticks(centers, labels, fontsize=fs)
        ax.set_yticks(centers, labels, fontsize=fs)
        ax.tick_params(length=0)
    ax.set_xlabel("key j")
    ax.set_ylabel("query i")
    ax.set_title(title or f"attention mask, L = {L}, {m.mean():.0%} allowed", fontsize=10)
    return ax


def plot_sequence_strip(
    layout,
    t: torch.Tensor | np.ndarray | Sequence[float] | None = None,
    ax: Axes | None = None,
    title: str | None = None,
) -> Axes:
    """The interleaved token sequence as a coloured strip: one colour per clip, noisy copies lighter and
    hatched, white lines between frames.

    Args:
        layout: object with ``clip``, ``frame``, ``is_noisy`` of shape ``(L,)`` (``TokenLayout``).
        t: optional noise level in [0, 1] drawn as bars in a second row: per token ``(L,)``, or per clip
            ``(K,)``, then shown on the noisy tokens only.
    """
    clip, frame, noisy = _layout_arrays(layout)
    L = len(clip)
    ax = _new_ax(ax, figsize=(10, 1.6 if t is None else 2.4))
    for a, b, k, n in _segments(clip, noisy):
        base = _clip_color(k)
        face = _lighter(base) if n else base
        ax.add_patch(
            Rectangle((a, 0), b - a, 1, facecolor=face, edgecolor=base, hatch="///" if n else None, lw=0)
        )
        if (b - a) / L > 0.03:
            ax.text((a + b) / 2, 0.5, _seg_label(k, n), ha="center", va="center", fontsize=8)
    fb = np.flatnonzero(frame[1:] != frame[:-1]) + 1
    if 0 < len(fb) <= 512:
        ax.vlines(fb, 0, 1, colors="white", lw=0.6)
    yticks, ylabels = [0.5], ["tokens"]
    if t is not None:
        tv = _numpy(torch.as_tensor(t)).reshape(-1)
        if len(tv) != L:
            if len(tv) <= clip.max():
                raise ValueError(f"t must have L={L} or K={clip.max() + 1} entries, got {len(tv)}")
            tv = np.where(noisy, tv[clip], np.nan)
        colors = [_clip_color(int(k)) for k in clip]
        ax.bar(np.arange(L) + 0.5, 0.9 * tv, width=1.0, bottom=-1.05, color=colors, lw=0)
        ax.axhline(-0.15, color="0.5", lw=0.5, ls="--")
        yticks, ylabels = [-0.6, 0.5], ["t", "tokens"]
    ax.set_xlim(0, L)
    ax.set_ylim(-1.1 if t is not None else 0, 1)
    ax.set_yticks(yticks, ylabels)
    ax.set_xlabel("token position")
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


# ---------------------------------------------------------------------------------------------------------
# Animation


def _video_frames(video: torch.Tensor | np.ndarray, scale: int) -> list[Image.Image]:
    """PIL frames of ``(T, C, H, W)``, or of ``(B, T, C, H, W)`` tiled as a near-square grid."""
    v = _numpy(video)
    if v.ndim == 4:
        v = v[None]
    if v.ndim != 5:
        raise ValueError(f"expected a video (T, C, H, W) or (B, T, C, H, W), got shape {v.shape}")
    B, T, C = v.shape[:3]
    ncol = int(np.ceil(np.sqrt(B)))
    frames = []
    for t in range(T):
        imgs = [to_image(v[b, t]) for b in range(B)]
        if B == 1:
            img = imgs[0]
        else:
            rows = [[_rgb(x) for x in imgs[i : i + ncol]] for i in range(0, B, ncol)]
            img, _, _ = _tile(rows, [1] * (ncol - 1), row_gap=1)
            img = img[..., 0] if imgs[0].ndim == 2 else img
        img = np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)  # nearest-neighbour upscaling
        frames.append(Image.fromarray(np.round(img * 255).astype(np.uint8)))
    return frames


def _gif_bytes(video: torch.Tensor | np.ndarray, fps: float, scale: int) -> bytes:
    frames = _video_frames(video, scale)
    buf = io.BytesIO()
    frames[0].save(
        buf, format="GIF", save_all=True, append_images=frames[1:], duration=round(1000 / fps), loop=0
    )
    return buf.getvalue()


def save_gif(
    video: torch.Tensor | np.ndarray, path: str | os.PathLike, fps: float = 4, scale: int = 4
) -> Path:
    """Write an animated GIF of ``(T, C, H, W)`` (or ``(B, T, C, H, W)`` as a grid) and return its path.

    Pixels are upscaled ``scale`` times (nearest neighbour). Written atomically
    (:func:`minivgpt.checkpoint.atomic_write`). Pillow merges consecutive identical frames into one.
    """
    from .checkpoint import atomic_write

    return atomic_write(path, _gif_bytes(video, fps, scale))


class HTMLString(str):
    """An HTML string that notebooks display as HTML (``_repr_html_``)."""

    def _repr_html_(self) -> str:
        return str(self)


def video_html(video: torch.Tensor | np.ndarray, fps: float = 4, scale: int = 4) -> HTMLString:
    """An ``<img>`` tag holding the GIF of :func:`save_gif` inline (base64); shown as an animation when it
    is the last expression of a notebook cell, or via ``IPython.display.HTML``."""
    data = base64.b64encode(_gif_bytes(video, fps, scale)).decode("ascii")
    return HTMLString(f'<img src="data:image/gif;base64,{data}" style="image-rendering: pixelated"/>')


# ---------------------------------------------------------------------------------------------------------
# Curves


def load_jsonl(path: str | os.PathLike) -> list[dict]:
    """Records of a JSONL metrics file (blank lines skipped)."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_curves(
    records: Sequence[Mapping] | str | os.PathLike,
    keys: Sequence[str] = ("loss",),
    ax: Axes | None = None,
    x: str = "step",
    logy: bool = False,
    title: str | None = None,
) -> Axes:
    """Plot ``keys`` of metric records (a list of dicts, or a JSONL path) against ``x`` (default "step";
    the record index where missing). Records without a key are skipped for that key."""
    if isinstance(records, (str, os.PathLike)):
        records = load_jsonl(records)
    ax = _new_ax(ax, figsize=(6, 3.5))
    for key in keys:
        pts = [
            (r.get(x, i), r[key])
            for i, r in enumerate(records)
            if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)
        ]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, label=key, lw=1.2)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(x)
    if ax.get_lines():
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_history_diagnostic(diag, ax: Axes | None = None, title: str | None = None) -> Axes:
    """Clean-prediction error against diffusion time t, with the history (solid) and without it (dashed),
    one color per clip index k >= 1 (clip 0 has no history), from a
    :class:`~minivgpt.diagnostics.HistoryDiagnostic` or its ``metrics.jsonl`` record. The title gives the
    history gain at t = 0 (error without history / error with it)."""
    from .diagnostics import HistoryDiagnostic

    d = diag if isinstance(diag, HistoryDiagnostic) else HistoryDiagnostic.from_record(diag)
    ax = _new_ax(ax, figsize=(5, 3.5))
    for k in range(1, d.err_with.shape[1]):
        color = _clip_color(k)
        ax.plot(d.t, _numpy(d.err_with[:, k]), "-o", color=color, ms=3, lw=1.2, label=f"clip {k}, with history")
        ax.plot(d.t, _numpy(d.err_without[:, k]), "--", color=color, lw=1.0, label=f"clip {k}, alone")
    ax.set_xlabel("diffusion time t (0 = pure noise)")
    ax.set_ylabel("MSE of the clean prediction")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    step = f" at step {d.step}" if d.step is not None else ""
    ax.set_title(title or f"history gain at t=0: {d.gain:.2f}x{step}", fontsize=10)
    return ax


def plot_history_gain(records: Sequence[Mapping] | str | os.PathLike, ax: Axes | None = None) -> Axes:
    """The history gain at t = 0 over training steps, from metric records or a ``metrics.jsonl`` path
    (the ``"type": "history"`` records that training writes with ``eval_every=``)."""
    if isinstance(records, (str, os.PathLike)):
        records = load_jsonl(records)
    pts = [(r["step"], r["history_gain"]) for r in records if r.get("type") == "history"]
    ax = _new_ax(ax, figsize=(5, 3.5))
    if pts:
        ax.plot(*zip(*pts), "-o", ms=3, lw=1.2)
    ax.axhline(1.0, color="0.5", lw=0.8, ls=":")  # 1 = the history is ignored
    ax.set_xlabel("step")
    ax.set_ylabel("history gain at t = 0")
    ax.grid(alpha=0.3)
    return ax


def plot_horizon(report: Mapping, axes: Sequence[Axes] | None = None) -> Sequence[Axes]:
    """Three panels over the forecast horizon: MSE per future frame, and the object's foreground area and
    peak over the truth's (:func:`minivgpt.metrics.object_shape`) with the demo's tolerance bands
    (25 % and 20 %), and a dashed line at the shape of the true clip redrawn by the network when the report
    has ``redrawn``. ``report``: the demo's ``metrics.json`` (keys ``per_frame_mse`` and ``shape``)."""
    import matplotlib.pyplot as plt

    if axes is None:
        axes = plt.subplots(1, 3, figsize=(13, 3.3))[1]
    rows = (("per_frame_mse", "MSE per future frame", None),
            ("area_ratio", "foreground area / truth's", 0.25), ("peak_ratio", "peak / truth's", 0.20))
    for ax, (key, title, band) in zip(axes, rows):
        source = report["per_frame_mse"] if key == "per_frame_mse" else {n: v[key] for n, v in report["shape"].items()}
        for name, ys in source.items():
            ax.plot(range(1, len(ys) + 1), ys, marker="o", ms=3, label=name.replace("_", " "))
        if band is not None:
            ax.axhspan(1 - band, 1 + band, color="0.9", zorder=0, label=f"within {band:.0%}")
            ax.axhline(1.0, color="0.5", lw=0.8)
            if "redrawn" in report:  # the network's drawing floor (diagnostics.redraw_shape)
                floor = float(np.mean(report["redrawn"][key]))
                ax.axhline(floor, color="k", lw=1, ls="--", label="true clip redrawn")
        ax.set(title=title, xlabel="future frame")
        ax.legend(fontsize=7)
    return axes


def plot_recipe(
    rows: Sequence[Mapping],
    key: str = "mse_vs_constant_velocity",
    target: float | None = 0.8,
    ax: Axes | None = None,
    log: bool = False,
) -> Axes:
    """A recipe table (:mod:`minivgpt.recipe`'s ``table.json`` rows) as a dot plot: one line per variant, a
    dot per seed and a bar at the mean of ``key``; the first variant (the reference) is shaded, on top.
    Dotted lines mark 1 (for a ratio: as good as the baseline) and ``target``; ``log`` for a log x axis
    (ratios that span several times)."""
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    ax = _new_ax(ax, figsize=(6, 0.35 * len(variants) + 1.2))
    for i, v in enumerate(variants):
        xs = [r[key] for r in rows if r["variant"] == v and key in r]
        ax.scatter(xs, [i] * len(xs), s=18, color="C0", zorder=3)
        if xs:
            ax.plot([np.mean(xs)] * 2, [i - 0.3, i + 0.3], color="k", lw=2, zorder=4)
    if variants:
        ax.axhspan(-0.5, 0.5, color="0.92", zorder=0)
    for x, ls in ((1.0, ":"), (target, "--")):
        if x is not None:
            ax.axvline(x, color="0.4", lw=0.8, ls=ls)
    ax.set_yticks(range(len(variants)), [v.replace("_", " ") for v in variants])
    if not ax.yaxis_inverted():  # (a shared y axis is inverted once)
        ax.invert_yaxis()
    if log:
        from matplotlib.ticker import NullFormatter, ScalarFormatter

        ax.set_xscale("log")
        lo, hi = ax.get_xlim()
        ax.set_xticks([v for v in (0.5, 0.7, 1, 1.5, 2, 3, 5, 7, 10, 20) if lo <= v <= hi])
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(key.replace("_", " "))
    ax.grid(axis="x", alpha=0.3)
    return ax
