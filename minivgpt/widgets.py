"""Interactive explorers (ipywidgets) built on the library: the attention mask and rollouts.

- :func:`mask_explorer` — sliders for K clips, F frames per clip, N patches per frame and a query token;
  shows the ``(L, L)`` hierarchical mask with the query's row highlighted, the token sequence with what
  that query may attend to, and a sentence saying it.
- :func:`rollout_viewer` — one frame slider (and a play button) scrubbing several videos side by side.

What they draw is computed by plain functions that work without a browser or a kernel, so they can be
tested and reused in static figures: :func:`attended_by` (the mask row of one query and its description),
:func:`draw_query` (the figure), :func:`frame_png` (one frame as PNG bytes). The widgets render into
``ipywidgets.Image`` values (PNG bytes) rather than an ``Output`` area, so changing a slider
programmatically updates them in any Python process.
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import ipywidgets as W
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from . import viz
from .masks import hierarchical_mask
from .sequence import TokenLayout, token_layout

__all__ = [
    "MaskExplorer",
    "RolloutViewer",
    "attended_by",
    "describe_row",
    "describe_token",
    "draw_query",
    "figure_png",
    "frame_png",
    "mask_explorer",
    "plot_attended_strip",
    "query_mask",
    "rollout_viewer",
]


# ----------------------------------------------------------------------------------------- pure parts
def query_mask(
    num_clips: int, frames_per_clip: int, tokens_per_frame: int, drop_last_clean: bool = False
) -> tuple[torch.Tensor, TokenLayout]:
    """The mask ``(L, L)`` and layout of the training sequence, with or without the last clean copy.

    Dropping the last clean copy is ``hierarchical_mask(...)[:L - F*N, :L - F*N]``
    (docs/design.md, "Token order and mask").
    """
    mask = hierarchical_mask(num_clips, frames_per_clip, tokens_per_frame)
    layout = token_layout(num_clips, frames_per_clip, tokens_per_frame, drop_last_clean)
    L = len(layout)
    return mask[:L, :L], layout


def describe_token(layout: TokenLayout, i: int) -> str:
    """``"noisy clip 2, frame 0, patch 1"`` for token ``i`` of ``layout``."""
    kind = "noisy" if bool(layout.is_noisy[i]) else "clean"
    return f"{kind} clip {int(layout.clip[i])}, frame {int(layout.frame[i])}, patch {int(layout.patch[i])}"


def _span(values: list[int]) -> str:
    """``[0, 1, 2]`` -> ``"0-2"``, ``[3]`` -> ``"3"`` (values are consecutive)."""
    return str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"


def _runs(values: list[int]) -> list[list[int]]:
    """Split sorted ints into runs of consecutive values."""
    out: list[list[int]] = []
    for v in values:
        if out and v == out[-1][-1] + 1:
            out[-1].append(v)
        else:
            out.append([v])
    return out


def describe_row(row: torch.Tensor, layout: TokenLayout) -> str:
    """Say which keys a mask row allows, grouped by clip copy: ``"clean clips 0-1 (all frames) and noisy
    clip 2 (all frames)"``.

    The text is read off the row itself (not the rule), so it describes any bool row over ``layout``.
    A clip copy is "all frames" when every one of its tokens is allowed; otherwise the frames with at
    least one allowed token are listed (``"clean clip 2 (frames 0-1)"``, ``"... (frame 0, some patches)"``).
    """
    row = torch.as_tensor(row, dtype=torch.bool).cpu()
    if row.shape != (len(layout),):
        raise ValueError(f"row must have shape ({len(layout)},) to match the layout, got {tuple(row.shape)}")
    clip, frame, noisy = layout.clip, layout.frame, layout.is_noisy
    # per clip copy (in sequence order): "all", a frame list, or nothing
    entries: list[tuple[bool, int, str | None]] = []  # (is_noisy, clip, None = all frames | "frames ...")
    seen: list[tuple[int, bool]] = []
    for k, n in zip(clip.tolist(), noisy.tolist()):
        if not seen or seen[-1] != (k, n):
            seen.append((k, n))
    for k, n in seen:
        sel = (clip == k) & (noisy == n)
        allowed = row[sel]
        if not allowed.any():
            continue
        if allowed.all():
            entries.append((n, k, None))
            continue
        frames = sorted(set(frame[sel][allowed].tolist()))
        partial = any(not row[sel & (frame == f)].all() for f in frames)
        label = f"frame{'s' if len(frames) > 1 else ''} " + ", ".join(_span(r) for r in _runs(frames))
        entries.append((n, k, label + (", some patches" if partial else "")))
    if not entries:
        return "nothing"
    # merge consecutive clips of the same copy kind that are fully allowed: "clean clips 0-2 (all frames)"
    parts: list[str] = []
    i = 0
    while i < len(entries):
        n, k, label = entries[i]
        kind = "noisy" if n else "clean"
        if label is None:
            ks = [k]
            j = i + 1
            while j < len(entries) and entries[j] == (n, ks[-1] + 1, None):
                ks.append(entries[j][1])
                j += 1
            plural = "s" if len(ks) > 1 else ""
            parts.append(f"{kind} clip{plural} {_span(ks)} (all frames)")
            i = j
        else:
            parts.append(f"{kind} clip {k} ({label})")
            i += 1
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def attended_by(
    query: int, num_clips: int, frames_per_clip: int, tokens_per_frame: int, drop_last_clean: bool = False
) -> tuple[torch.Tensor, str]:
    """The mask row of token ``query`` and a sentence saying what it attends to.

    Returns ``(row, text)``: ``row`` is the bool ``(L,)`` row ``hierarchical_mask(K, F, N)[query]`` (cut to
    L - F*N keys with ``drop_last_clean``), and ``text`` reads e.g. ``"noisy clip 2, frame 0, patch 1
    attends to: clean clips 0-1 (all frames) and noisy clip 2 (all frames)"``.
    """
    mask, layout = query_mask(num_clips, frames_per_clip, tokens_per_frame, drop_last_clean)
    L = len(layout)
    if not 0 <= query < L:
        raise IndexError(
            f"query={query} is outside the sequence of L={L} tokens "
            f"(K={num_clips}, F={frames_per_clip}, N={tokens_per_frame}, drop_last_clean={drop_last_clean})"
        )
    row = mask[query]
    text = f"{describe_token(layout, query)} attends to: {describe_row(row, layout)}"
    if int(layout.clip[query]) == 0 and bool(layout.is_noisy[query]):
        text += " (no history: the unconditional case)"
    return row, text


def plot_attended_strip(row: torch.Tensor, layout: TokenLayout, query: int | None = None, ax=None):
    """:func:`viz.plot_sequence_strip` with the keys a query may *not* attend to faded out, and the query
    token marked with a red triangle. Returns the Axes."""
    ax = viz.plot_sequence_strip(layout, ax=ax)
    row = torch.as_tensor(row, dtype=torch.bool).cpu().numpy()
    L = len(row)
    blocked = ~row
    edges = np.flatnonzero(np.diff(np.concatenate([[0], blocked.astype(np.int8), [0]])))
    for a, b in zip(edges[::2], edges[1::2]):
        ax.add_patch(Rectangle((a, 0), b - a, 1, facecolor="white", alpha=0.8, lw=0, zorder=3))
    if query is not None:
        ax.plot([query + 0.5], [1.0], marker="v", color="tab:red", ms=9, clip_on=False, zorder=4)
        ax.plot([query + 0.5], [0.0], marker="^", color="tab:red", ms=9, clip_on=False, zorder=4)
    ax.set_xlim(0, L)
    return ax


def draw_query(
    query: int,
    num_clips: int,
    frames_per_clip: int,
    tokens_per_frame: int,
    drop_last_clean: bool = False,
    fig: Figure | None = None,
) -> Figure:
    """The mask with the query's row outlined in red (top) and the sequence strip with what the query
    attends to (bottom). Draws into ``fig`` (a new, pyplot-free ``Figure`` when None) and returns it."""
    row, text = attended_by(query, num_clips, frames_per_clip, tokens_per_frame, drop_last_clean)
    mask, layout = query_mask(num_clips, frames_per_clip, tokens_per_frame, drop_last_clean)
    L = len(layout)
    if fig is None:
        fig = Figure(figsize=(6.4, 7.6))
    gs = fig.add_gridspec(2, 1, height_ratios=[5, 1.1], hspace=0.35)
    ax = fig.add_subplot(gs[0])
    viz.plot_mask(mask, layout, ax=ax, title=f"L = {L} tokens, {mask.float().mean():.0%} of pairs allowed")
    ax.add_patch(Rectangle((-0.5, query - 0.5), L, 1, fill=False, ec="tab:red", lw=1.6, zorder=5))
    ax.plot([-0.5], [query], marker=">", color="tab:red", ms=8, clip_on=False, zorder=5)
    strip = fig.add_subplot(gs[1])
    plot_attended_strip(row, layout, query, ax=strip)
    title = f"query {query}: {describe_token(layout, query)}  ({int(row.sum())} of {L} keys)"
    strip.set_title(title, fontsize=9)
    return fig


def figure_png(fig: Figure, dpi: int = 90) -> bytes:
    """PNG bytes of a matplotlib figure (works with any backend, no display needed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def frame_png(video: torch.Tensor, t: int, scale: int = 4) -> bytes:
    """PNG bytes of frame ``t`` of a video ``(T, C, H, W)`` in [-1, 1], upscaled ``scale`` times
    (nearest neighbour). ``t`` past the end shows the last frame."""
    if video.ndim != 4:
        raise ValueError(f"expected a video (T, C, H, W), got shape {tuple(video.shape)}")
    t = max(0, min(int(t), video.shape[0] - 1))
    img = viz.to_image(video[t])
    img = np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)
    buf = io.BytesIO()
    Image.fromarray(np.round(img * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------------------- widgets
class MaskExplorer(W.VBox):
    """The widget returned by :func:`mask_explorer`; ``update()`` redraws (called on every change).

    Attributes: ``clips``, ``frames``, ``tokens``, ``query`` (IntSliders), ``drop`` (Checkbox),
    ``text`` (HTML with the description) and ``image`` (Image with the figure as PNG).
    """

    def __init__(self, max_clips: int = 6, max_frames: int = 4, max_tokens: int = 9, dpi: int = 80):
        style = {"description_width": "150px"}
        lay = W.Layout(width="480px")
        opts = {"continuous_update": False, "style": style, "layout": lay}
        self.clips = W.IntSlider(min(3, max_clips), 1, max_clips, description="K clips", **opts)
        self.frames = W.IntSlider(min(2, max_frames), 1, max_frames, description="F frames / clip", **opts)
        self.tokens = W.IntSlider(min(4, max_tokens), 1, max_tokens, description="N patches / frame", **opts)
        self.query = W.IntSlider(0, 0, 1, description="query token i", **opts)
        self.drop = W.Checkbox(False, description="drop the last clean copy", indent=False)
        self.text = W.HTML()
        self.image = W.Image(format="png")
        self.dpi = dpi
        self.last_text = ""
        self._resizing = False
        super().__init__([self.clips, self.frames, self.tokens, self.query, self.drop, self.text, self.image])
        self._sync_query_range()
        self.query.value = 2 * self.frames.value * self.tokens.value + 1 if self.clips.value > 1 else 0
        for w in (self.clips, self.frames, self.tokens, self.drop):
            w.observe(self._on_shape, names="value")
        self.query.observe(lambda _: None if self._resizing else self.update(), names="value")
        self.update()

    def seq_len(self) -> int:
        K, F, N = self.clips.value, self.frames.value, self.tokens.value
        return 2 * K * F * N - (F * N if self.drop.value else 0)

    def _sync_query_range(self) -> None:
        L = self.seq_len()
        if self.query.value > L - 1:
            self.query.value = L - 1
        self.query.max = L - 1

    def _on_shape(self, _change=None) -> None:
        self._resizing = True  # one redraw per change, not one for the clamped query as well
        try:
            self._sync_query_range()
        finally:
            self._resizing = False
        self.update()

    def update(self) -> None:
        K, F, N, drop = self.clips.value, self.frames.value, self.tokens.value, self.drop.value
        q = min(self.query.value, self.seq_len() - 1)
        row, text = attended_by(q, K, F, N, drop)
        self.last_text = text
        self.text.value = f"<b>{text}</b> &mdash; {int(row.sum())} of {row.numel()} keys"
        self.image.value = figure_png(draw_query(q, K, F, N, drop), dpi=self.dpi)


def mask_explorer(max_clips: int = 6, max_frames: int = 4, max_tokens: int = 9) -> MaskExplorer:
    """An interactive view of the hierarchical mask: sliders for K, F, N and a query token index, and a
    toggle for dropping the last clean copy. Shows the ``(L, L)`` mask with the query's row highlighted,
    the sequence strip with what the query attends to, and the description of :func:`attended_by`.
    Returns the widget (a ``VBox``); display it as the last expression of a notebook cell."""
    return MaskExplorer(max_clips, max_frames, max_tokens)


class RolloutViewer(W.VBox):
    """The widget returned by :func:`rollout_viewer`: ``slider`` (frame index), ``play``, one ``Image``
    per video in ``images`` and a ``label``; ``show(t)`` draws frame t of every video."""

    def __init__(self, videos: Mapping[str, torch.Tensor], scale: int = 4, context_frames: int | None = None):
        if not videos:
            raise ValueError("videos is empty: pass {name: video (T, C, H, W)}")
        self.videos = {}
        for name, v in videos.items():
            v = torch.as_tensor(v).detach().cpu().float()
            while v.ndim > 4 and v.shape[0] == 1:
                v = v[0]
            if v.ndim != 4:
                raise ValueError(f"video {name!r} must be (T, C, H, W), got shape {tuple(v.shape)}")
            self.videos[name] = v
        self.scale = scale
        self.context_frames = context_frames
        self.num_frames = max(v.shape[0] for v in self.videos.values())
        self.slider = W.IntSlider(0, 0, self.num_frames - 1, description="frame")
        self.play = W.Play(value=0, min=0, max=self.num_frames - 1, interval=300, description="play")
        W.jslink((self.play, "value"), (self.slider, "value"))
        self.label = W.HTML()
        self.images = {name: W.Image(format="png") for name in self.videos}
        cols = [W.VBox([W.HTML(f"<b>{name}</b>"), img]) for name, img in self.images.items()]
        super().__init__([W.HBox([self.play, self.slider, self.label]), W.HBox(cols)])
        self.slider.observe(lambda ch: self.show(ch["new"]), names="value")
        self.show(0)

    def show(self, t: int) -> None:
        for name, v in self.videos.items():
            self.images[name].value = frame_png(v, t, self.scale)
        what = ""
        if self.context_frames is not None:
            what = " (context)" if t < self.context_frames else " (predicted)"
        held = [n for n, v in self.videos.items() if t >= v.shape[0]]
        note = f"; last frame held: {', '.join(held)}" if held else ""
        self.label.value = f"frame {t} / {self.num_frames - 1}{what}{note}"


def rollout_viewer(
    videos: Mapping[str, torch.Tensor], scale: int = 4, context_frames: int | None = None
) -> RolloutViewer:
    """Scrub through several videos ``{name: (T, C, H, W)}`` in [-1, 1] side by side with one frame slider
    (and a play button). ``context_frames`` labels frames before it "context", after it "predicted".
    Videos may differ in length (a shorter one holds its last frame). Returns the widget (a ``VBox``)."""
    return RolloutViewer(videos, scale, context_frames)
