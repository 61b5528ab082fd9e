"""The hierarchical attention mask of next clip diffusion: the rule, as a bool mask and as a FlexAttention mask.

Derived in notebooks/03 (§1 the mask for a small sequence, §4 the rule in a few lines, §5 its invariants).
The positions it is applied to (clip, frame and copy of every token) are the layouts of
:mod:`minivgpt.sequence`.

Rule (True where query i may attend to key j):

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

import torch

from .sequence import TokenLayout, token_layout


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

    Pass ``layout`` to build it for another layout (e.g. :func:`~minivgpt.sequence.rollout_layout`);
    otherwise the training layout ``token_layout(num_clips, frames_per_clip, tokens_per_frame, drop_last_clean)``
    is used.
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
