"""Token order: interleave noisy and clean clip tokens into one sequence, and describe every position.

Derived in notebooks/02 (§3 interleaving, §5 positions, §6 the dropped last clean copy).

The training sequence, for clip k = 0..K-1 first the noisy copy of clip k (frame-major, patch-minor),
then its clean copy::

    [noisy_0, clean_0, noisy_1, clean_1, ..., noisy_{K-1}, clean_{K-1}]

so it has L = 2 * K * F * N tokens. A :class:`TokenLayout` names the clip, frame, absolute time, patch
and copy of every position; the other orders the model reads are written with the same helper:

- :func:`token_layout`: the training sequence above (optionally without the last clean copy);
- :func:`history_layout`: clean clips ``0..K-1`` only, the history that ``prefill`` caches;
- :func:`rollout_layout`: clean clips ``0..W-1`` then the noisy clip ``W``, the sequence of one rollout step.

Which positions may attend to which is the rule of :mod:`minivgpt.masks`, applied to these layouts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from einops import rearrange


# ----------------------------------------------------------------------------------------- tensors
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


# ----------------------------------------------------------------------------------------- layouts
@dataclass(frozen=True)
class TokenLayout:
    """Per-token ids of a sequence, each a LongTensor/BoolTensor of shape ``(L,)``.

    ``clip``: clip index k; ``frame``: frame index inside its clip; ``time``: absolute frame index
    (shared by the noisy and clean copy of a clip: their positions are the same); ``patch``: patch index
    inside its frame; ``is_noisy``: True for tokens of a noisy copy.
    """

    clip: torch.Tensor
    frame: torch.Tensor
    time: torch.Tensor
    patch: torch.Tensor
    is_noisy: torch.Tensor

    def __len__(self) -> int:
        return int(self.clip.numel())

    def to(self, device: torch.device | str) -> TokenLayout:
        return TokenLayout(*(getattr(self, f).to(device) for f in ("clip", "frame", "time", "patch", "is_noisy")))

    def __getitem__(self, index: slice) -> TokenLayout:
        """The layout of a slice of the sequence, e.g. ``layout[-F * N:]`` for its last clip copy."""
        if not isinstance(index, slice):
            raise TypeError(f"index a TokenLayout with a slice (e.g. layout[-F * N:]), got {type(index).__name__}")
        return TokenLayout(*(getattr(self, f)[index] for f in ("clip", "frame", "time", "patch", "is_noisy")))


def clip_lengths(num_clips: int, frames_per_clip: int | Sequence[int]) -> list[int]:
    """Frames of each of ``num_clips`` clips: ``[F] * K`` for an int, or the list itself, checked.

    Raises ``ValueError`` unless there is at least one clip, the list has ``num_clips`` entries and every
    clip has at least one frame.
    """
    if isinstance(frames_per_clip, int):
        lengths = [frames_per_clip] * num_clips
    else:
        lengths = [int(f) for f in frames_per_clip]
        if len(lengths) != num_clips:
            raise ValueError(f"frames_per_clip has {len(lengths)} entries but num_clips={num_clips}")
    if num_clips < 1 or any(f < 1 for f in lengths):
        raise ValueError(f"need num_clips >= 1 and every clip >= 1 frame, got K={num_clips}, F={frames_per_clip}")
    return lengths


def layout_from_segments(
    segments: Sequence[tuple[int, bool]], lengths: Sequence[int], tokens_per_frame: int
) -> TokenLayout:
    """Layout of an arbitrary list of clip copies.

    Args:
        segments: ``(clip index, is_noisy)`` in sequence order, e.g. ``[(0, True), (0, False), (1, True)]``.
        lengths: frames of every clip (indexed by clip), so absolute frame times can be computed.
        tokens_per_frame: N.
    """
    if tokens_per_frame < 1:
        raise ValueError(f"tokens_per_frame={tokens_per_frame} must be >= 1")
    for k, _ in segments:
        if not 0 <= k < len(lengths):
            raise ValueError(f"segment of clip {k} but lengths gives {len(lengths)} clips")
    starts = [0]
    for f in lengths:
        starts.append(starts[-1] + f)
    cols: dict[str, list[torch.Tensor]] = {k: [] for k in ("clip", "frame", "time", "patch", "is_noisy")}
    for k, noisy in segments:
        F = lengths[k]
        frame = torch.arange(F).repeat_interleave(tokens_per_frame)
        n = frame.numel()
        cols["clip"].append(torch.full((n,), k))
        cols["frame"].append(frame)
        cols["time"].append(frame + starts[k])
        cols["patch"].append(torch.arange(tokens_per_frame).repeat(F))
        cols["is_noisy"].append(torch.full((n,), bool(noisy)))
    return TokenLayout(**{k: torch.cat(v) for k, v in cols.items()})


def token_layout(
    num_clips: int, frames_per_clip: int | Sequence[int], tokens_per_frame: int, drop_last_clean: bool = False
) -> TokenLayout:
    """Layout of the training sequence ``[noisy_0, clean_0, ..., noisy_{K-1}, clean_{K-1}]``.

    ``frames_per_clip`` may be a list for clips of unequal length (random cuts). With
    ``drop_last_clean`` the final clean copy (which nothing reads) is left out, as in the authors' code.
    """
    lengths = clip_lengths(num_clips, frames_per_clip)
    segments = [(k, noisy) for k in range(num_clips) for noisy in (True, False)]
    if drop_last_clean:
        segments = segments[:-1]
    return layout_from_segments(segments, lengths, tokens_per_frame)


def history_layout(num_clips: int, frames_per_clip: int | Sequence[int], tokens_per_frame: int) -> TokenLayout:
    """Layout of clean clips ``[clean_0, ..., clean_{K-1}]`` alone: the history that ``prefill`` caches.

    Under the mask rule these tokens are frame-causal among themselves, and they read exactly what the
    clean copies of the training sequence read (clean tokens never attend to noisy ones).
    """
    lengths = clip_lengths(num_clips, frames_per_clip)
    return layout_from_segments([(k, False) for k in range(num_clips)], lengths, tokens_per_frame)


def rollout_layout(num_history: int, frames_per_clip: int | Sequence[int], tokens_per_frame: int) -> TokenLayout:
    """Layout used when generating: clean clips ``0..W-1`` followed by the noisy clip ``W``.

    ``frames_per_clip`` counts W + 1 clips when it is a list. The noisy copies of history clips are not
    needed at rollout: no clean token and no later noisy clip reads them.
    """
    lengths = clip_lengths(num_history + 1, frames_per_clip)
    segments = [(k, False) for k in range(num_history)] + [(num_history, True)]
    return layout_from_segments(segments, lengths, tokens_per_frame)
