"""The hierarchical attention mask of next clip diffusion, its token layout, and its FlexAttention form.

Rule (True where query i may attend to key j), DESIGN.md:

- clean (clip a, frame f) -> clean (clip b, frame g): b < a, or b == a and g <= f  (frame-causal)
- noisy (clip a)          -> clean (clip b):          b < a                         (clean history only)
- noisy (clip a)          -> noisy (clip b):          b == a                        (bidirectional in clip)
- clean                   -> noisy:                   never

Patches of one frame always see each other (they share clip and frame, so every case above admits them).
Because clean tokens never read noisy ones, the keys/values of the clean history do not depend on any
noisy input and can be cached exactly at rollout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


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


def _as_lengths(num_clips: int, frames_per_clip: int | Sequence[int]) -> list[int]:
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
    lengths = _as_lengths(num_clips, frames_per_clip)
    segments = [(k, noisy) for k in range(num_clips) for noisy in (True, False)]
    if drop_last_clean:
        segments = segments[:-1]
    return layout_from_segments(segments, lengths, tokens_per_frame)


def rollout_layout(num_history: int, frames_per_clip: int | Sequence[int], tokens_per_frame: int) -> TokenLayout:
    """Layout used when generating: clean clips ``0..W-1`` followed by the noisy clip ``W``.

    The noisy copies of history clips are not needed at rollout: no clean token and no later noisy
    clip reads them.
    """
    lengths = _as_lengths(num_history + 1, frames_per_clip)
    segments = [(k, False) for k in range(num_history)] + [(num_history, True)]
    return layout_from_segments(segments, lengths, tokens_per_frame)


def allowed(q_clip, q_frame, q_noisy, k_clip, k_frame, k_noisy):
    """The mask rule on broadcastable id tensors (works for bool masks and FlexAttention ``mask_mod``)."""
    clean_clean = ~q_noisy & ~k_noisy & ((k_clip < q_clip) | ((k_clip == q_clip) & (k_frame <= q_frame)))
    noisy_clean = q_noisy & ~k_noisy & (k_clip < q_clip)
    noisy_noisy = q_noisy & k_noisy & (k_clip == q_clip)
    return clean_clean | noisy_clean | noisy_noisy


def mask_from_layout(layout: TokenLayout) -> torch.Tensor:
    """Bool mask ``(L, L)`` of the rule for any layout; True where query i may attend to key j."""
    c, f, n = layout.clip, layout.frame, layout.is_noisy
    return allowed(c[:, None], f[:, None], n[:, None], c[None, :], f[None, :], n[None, :])


def hierarchical_mask(num_clips: int, frames_per_clip: int | Sequence[int], tokens_per_frame: int) -> torch.Tensor:
    """The full-layout mask, ``torch.BoolTensor`` of shape ``(L, L)``, L = 2*K*F*N.

    Dropping the last clean copy is ``mask[:L - F*N, :L - F*N]``.
    """
    return mask_from_layout(token_layout(num_clips, frames_per_clip, tokens_per_frame))


def mask_density(num_clips: int, frames_per_clip: int, tokens_per_frame: int) -> float:
    """Fraction of (query, key) pairs the mask allows."""
    return hierarchical_mask(num_clips, frames_per_clip, tokens_per_frame).float().mean().item()


def block_mask(
    num_clips: int,
    frames_per_clip: int | Sequence[int],
    tokens_per_frame: int,
    drop_last_clean: bool = False,
    device: str | torch.device = "cpu",
    layout: TokenLayout | None = None,
    block_size: int = 128,
):
    """The same rule as a FlexAttention ``BlockMask`` (blocks that are fully masked are skipped).

    Pass ``layout`` to build it for another layout (e.g. :func:`rollout_layout`); otherwise the training
    layout of ``token_layout(num_clips, frames_per_clip, tokens_per_frame, drop_last_clean)`` is used.
    """
    from torch.nn.attention.flex_attention import create_block_mask

    if layout is None:
        layout = token_layout(num_clips, frames_per_clip, tokens_per_frame, drop_last_clean)
    lay = layout.to(device)
    c, f, n = lay.clip, lay.frame, lay.is_noisy

    def mask_mod(b, h, q_idx, kv_idx):
        return allowed(c[q_idx], f[q_idx], n[q_idx], c[kv_idx], f[kv_idx], n[kv_idx])

    L = len(lay)
    return create_block_mask(mask_mod, None, None, L, L, device=device, BLOCK_SIZE=block_size)
