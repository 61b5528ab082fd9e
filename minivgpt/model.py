"""VideoGPT: a pre-norm transformer over the interleaved noisy/clean clip sequence.

Derived in notebooks/04 (§2 configuration and model; the generation API and its cache in notebooks/05, §4).

Read top to bottom: positions (3-D RoPE), timestep embedding, attention, block, then the model with its
training ``forward`` and the generation API ``prefill / denoise / append`` that reads an exact KV cache.

- Tokens: a linear map of patch tokens plus a learned "noisy/clean copy" embedding.
- Conditioning: every clip copy (a *segment* of F*N tokens) gets a vector ``c = emb(t) + emb(condition)``
  that modulates every block (adaLN-Zero, as in DiT). Noisy copies carry their diffusion time t, clean
  copies their (light) history noise level; a class label or a text embedding is added to every
  segment, so the whole sequence sees it. A boolean ``drop (B,)`` replaces it by the null condition
  per sample (condition dropout for classifier-free guidance, done here as DiT's ``token_drop``).
- Positions: rotary embeddings over three axes (absolute frame index, patch row, patch column). The
  noisy and the clean copy of a clip share positions; only relative offsets matter to attention.
- Order: the token layouts of :mod:`minivgpt.sequence` (training, history, rollout step).
- Attention: the hierarchical mask of :mod:`minivgpt.masks` on those layouts, run by a backend of
  :mod:`minivgpt.attention` (dense SDPA, FlexAttention, or the mask-aware CPU path).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from .attention import MaskedAttention
from .config import ModelConfig
from .masks import mask_from_layout
from .sequence import TokenLayout, history_layout, interleave, rollout_layout, token_layout

Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------------------- positions
class Rope3D(nn.Module):
    """Rotary position embedding over (frame time, patch row, patch column).

    The head dimension is split in three parts (time gets half, rows and columns a quarter each).
    """

    def __init__(self, head_dim: int, theta: float = 100.0):
        super().__init__()
        if head_dim % 8:
            raise ValueError(f"head_dim={head_dim} must be a multiple of 8 for 3-D RoPE (width / heads)")
        d_sp = head_dim // 4
        dims = (head_dim - 2 * d_sp, d_sp, d_sp)
        for name, d in zip(("time", "row", "col"), dims):
            self.register_buffer(f"inv_{name}", 1.0 / theta ** (torch.arange(0, d, 2).float() / d), persistent=False)

    def forward(self, time: torch.Tensor, row: torch.Tensor, col: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions ``(L,)`` each -> ``(cos, sin)`` of shape ``(L, head_dim / 2)``."""
        ang = torch.cat(
            [time[:, None] * self.inv_time, row[:, None] * self.inv_row, col[:, None] * self.inv_col], dim=-1
        )
        return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x (B, H, L, hd)`` by angles whose cos/sin are ``(L, hd/2)`` (half-split convention)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of diffusion times ``t (...,)`` in [0, 1] -> ``(..., dim)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device).float() / half)
    ang = 1000.0 * t.float()[..., None] * freqs
    return torch.cat([ang.cos(), ang.sin()], dim=-1)


# ----------------------------------------------------------------------------------------- layers
def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.q_norm = nn.RMSNorm(width // heads)
        self.k_norm = nn.RMSNorm(width // heads)
        self.proj = nn.Linear(width, width)

    def forward(self, x, cos, sin, attend: Attend, past: tuple[torch.Tensor, torch.Tensor] | None = None):
        """``x (B, L, W)`` -> ``(out (B, L, W), (k, v))``; keys/values ``(B, H, L, hd)`` after RoPE.

        ``past`` holds cached keys/values that are prepended (the clean history at rollout).
        """
        q, k, v = rearrange(self.qkv(x), "b l (three h d) -> three b h l d", three=3, h=self.heads)
        # qk-norm and RoPE in fp32 (under bf16 autocast too), then back to the dtype of v for attention
        q = apply_rope(self.q_norm(q.float()), cos, sin).to(v.dtype)
        k = apply_rope(self.k_norm(k.float()), cos, sin).to(v.dtype)
        kv = (k, v)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        out = attend(q, k, v)
        return self.proj(rearrange(out, "b h l d -> b l (h d)")), kv


class Block(nn.Module):
    """Pre-norm transformer block with adaLN-Zero modulation from the per-segment condition."""

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.ada = nn.Linear(width, 6 * width)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def forward(self, x, c, cos, sin, attend: Attend, past=None):
        """``x (B, S, T, W)``: S segments (clip copies) of T tokens; ``c (B, S, W)`` conditions each segment.

        The modulation broadcasts over the T tokens of a segment instead of being gathered per token.
        """
        sh1, sc1, g1, sh2, sc2, g2 = self.ada(c)[:, :, None].chunk(6, dim=-1)
        h, kv = self.attn(modulate(self.norm1(x), sh1, sc1).flatten(1, 2), cos, sin, attend, past)
        x = x + g1 * h.view_as(x)
        x = x + g2 * self.mlp(modulate(self.norm2(x), sh2, sc2))
        return x, kv


# ----------------------------------------------------------------------------------------- KV cache
@dataclass
class KVCache:
    """Keys/values of the clean history, one ``(B, H, L_hist, hd)`` pair per layer.

    Exact: clean tokens never attend to noisy ones, so these do not depend on what is being denoised.
    ``num_clips`` clean clips are cached; the next noisy clip gets clip index ``num_clips``.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    num_clips: int
    frames_per_clip: int

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)


def sdpa(mask: torch.Tensor | None = None) -> Attend:
    """Plain scaled-dot-product attention with an optional bool mask ``(Lq, Lk)``."""
    return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


@lru_cache(maxsize=64)
def _plan(num_clips, frames, tokens, drop_last_clean, backend, device) -> MaskedAttention:
    return MaskedAttention(num_clips, frames, tokens, drop_last_clean, backend=backend, device=device)


# ----------------------------------------------------------------------------------------- model
class VideoGPT(nn.Module):
    """Next clip diffusion transformer.

    Args:
        cfg: :class:`~minivgpt.config.ModelConfig`.
        in_dim: D, size of a patch token (latent channels * patch_size**2).
        grid: ``(rows, cols)`` of patches in a frame; N = rows * cols.
    """

    def __init__(self, cfg: ModelConfig, in_dim: int, grid: tuple[int, int]):
        super().__init__()
        self.cfg, self.in_dim, self.grid = cfg, in_dim, tuple(grid)
        W = cfg.width
        self.inp = nn.Linear(in_dim, W)
        self.copy_emb = nn.Embedding(2, W)  # 0 clean copy, 1 noisy copy
        self.t_mlp = nn.Sequential(nn.Linear(256, W), nn.SiLU(), nn.Linear(W, W))
        self.class_emb = nn.Embedding(cfg.num_classes + 1, W) if cfg.num_classes > 0 else None
        self.rope = Rope3D(W // cfg.heads, cfg.rope_theta)
        self.blocks = nn.ModuleList(Block(W, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm_out = nn.LayerNorm(W, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Linear(W, 2 * W)
        self.out = nn.Linear(W, in_dim)
        for layer in (self.ada_out, self.out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    @property
    def null_class(self) -> int | None:
        """Label index of the "no class" condition used for classifier-free guidance."""
        return self.cfg.num_classes if self.class_emb is not None else None

    @property
    def tokens_per_frame(self) -> int:
        return self.grid[0] * self.grid[1]

    # ---- the shared core: any layout of segments, optional cached history
    def _condition(self, cond: torch.Tensor | None, drop: torch.Tensor | None = None) -> torch.Tensor | float:
        """Labels ``(B,)`` or an embedding ``(B, W)`` -> ``(B, 1, W)`` added to every segment.

        ``drop``: bool ``(B,)``, True where a sample gets the null condition instead (the null class for
        labels, the zero vector for embeddings): condition dropout in training, the unconditional branch
        of classifier-free guidance at sampling. Ignored when there is no condition.
        """
        if cond is None:
            return 0.0
        if drop is not None and (drop.dtype != torch.bool or drop.shape != cond.shape[:1]):
            raise ValueError(
                f"drop must be a bool tensor (B,) = ({cond.shape[0]},), got {drop.dtype} {tuple(drop.shape)}"
            )
        if cond.dtype in (torch.int32, torch.int64):
            if self.class_emb is None:
                raise ValueError("class labels given but the model has num_classes=0")
            if drop is not None:
                cond = torch.where(drop, self.null_class, cond)
            return self.class_emb(cond)[:, None]
        if cond.shape[-1] != self.cfg.width:
            raise ValueError(f"condition embedding must be (B, {self.cfg.width}), got {tuple(cond.shape)}")
        if drop is not None:
            cond = torch.where(drop[:, None], torch.zeros_like(cond), cond)
        return cond[:, None]

    def run(
        self,
        tokens: torch.Tensor,
        layout: TokenLayout,
        t_seg: torch.Tensor,
        attend: Attend,
        cond: torch.Tensor | None = None,
        cache: KVCache | None = None,
        drop: torch.Tensor | None = None,
        return_hidden: int | None = None,
    ) -> tuple:
        """Run the transformer on ``tokens (B, L, D)`` laid out as ``layout``.

        ``t_seg (B, S)`` is the diffusion time of each of the S segments (clip copies) in order; ``cond``
        and ``drop`` as in :meth:`forward`; ``cache`` holds keys/values prepended at every layer.

        Returns ``(h, c, kvs)``: the final hidden states ``(B, S, T, W)`` (S segments of T tokens, before
        the output head), the per-segment conditioning ``(B, S, W)`` and every layer's new ``(k, v)``.
        With ``return_hidden=i`` a fourth item follows: the hidden states ``(B, S, T, W)`` after block i
        (negative i counts from the last block).
        """
        S = t_seg.shape[-1]
        if len(layout) % S or _num_segments(layout) != S:
            raise ValueError(f"t_seg has {S} entries but the layout has {_num_segments(layout)} equal segments")
        depth = len(self.blocks)
        if return_hidden is not None and not -depth <= return_hidden < depth:
            raise ValueError(f"return_hidden={return_hidden} must name a block in [-{depth}, {depth - 1}]")
        lay = layout.to(tokens.device)
        gh, gw = self.grid
        cos, sin = self.rope(lay.time.float(), (lay.patch // gw).float(), (lay.patch % gw).float())
        x = self.inp(tokens) + self.copy_emb(lay.is_noisy.long())
        x = rearrange(x, "b (s t) w -> b s t w", s=S)
        c = F.silu(self.t_mlp(timestep_embedding(t_seg.to(tokens.device))) + self._condition(cond, drop))
        kvs, hidden = [], None
        for i, block in enumerate(self.blocks):
            past = (cache.keys[i], cache.values[i]) if cache is not None else None
            x, kv = block(x, c, cos, sin, attend, past)
            kvs.append(kv)
            if return_hidden is not None and i == return_hidden % depth:
                hidden = x
        return (x, c, kvs) if return_hidden is None else (x, c, kvs, hidden)

    def head(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Output projection of hidden states ``(B, S, T, W)`` with per-segment ``c (B, S, W)`` -> ``(B, S, T, D)``."""
        shift, scale = self.ada_out(c)[:, :, None].chunk(2, dim=-1)
        return self.out(modulate(self.norm_out(h), shift, scale))

    def _noisy_out(self, h: torch.Tensor, c: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        """The output head on the noisy segments only: ``(B, L_noisy, D)``."""
        T = h.shape[2]
        noisy_seg = layout.is_noisy[::T].to(h.device)
        return self.head(h[:, noisy_seg], c[:, noisy_seg]).flatten(1, 2)

    # ---- training
    def forward(
        self,
        noisy: torch.Tensor,
        clean: torch.Tensor,
        t: torch.Tensor,
        t_clean: torch.Tensor | None = None,
        cond: torch.Tensor | None = None,
        drop: torch.Tensor | None = None,
        drop_last_clean: bool = True,
    ) -> torch.Tensor:
        """Predict the clean tokens of every noisy clip.

        Args:
            noisy: ``(B, K, F, N, D)`` noisy copies; clean: ``(B, K, F, N, D)`` (lightly noised) history.
            t: ``(B, K)`` diffusion time of each noisy clip; t_clean: ``(B, K)`` of the clean copies
                (default 1 = clean).
            cond: optional labels ``(B,)`` or embedding ``(B, W)``.
            drop: optional bool ``(B,)``: True replaces that sample's condition by the null condition.
            drop_last_clean: leave out the last clean copy, which nothing reads (the authors' layout).
        Returns:
            ``(B, K, F, N, D)`` clean predictions for the noisy copies.
        """
        B, K, Fr, N, D = noisy.shape
        if N != self.tokens_per_frame or D != self.in_dim:
            raise ValueError(
                f"tokens must be (B, K, F, {self.tokens_per_frame}, {self.in_dim}) for this model, "
                f"got {tuple(noisy.shape)}"
            )
        if t.shape != (B, K):
            raise ValueError(f"t must be (B, K) = ({B}, {K}), got {tuple(t.shape)}")
        t_clean = torch.ones_like(t) if t_clean is None else t_clean
        seq = interleave(noisy, clean)
        t_seg = rearrange(torch.stack([t, t_clean], dim=-1), "b k s -> b (k s)")
        if drop_last_clean:
            seq, t_seg = seq[:, : -Fr * N], t_seg[:, :-1]
        layout = _train_layout(K, Fr, N, drop_last_clean)
        attend = self._attention(K, Fr, N, drop_last_clean, seq.device)
        h, c, _ = self.run(seq, layout, t_seg, attend, cond, drop=drop)
        out = self._noisy_out(h, c, layout)
        return rearrange(out, "b (k f n) d -> b k f n d", k=K, f=Fr)

    def _attention(self, K, Fr, N, drop, device) -> MaskedAttention:
        backend = self.cfg.attention
        if backend == "auto":
            backend = "flex" if device.type == "cuda" else "mask_aware"
        return _plan(K, Fr, N, drop, backend, str(device))

    # ---- generation with an exact KV cache of the clean history
    def prefill(
        self,
        clean: torch.Tensor,
        cond: torch.Tensor | None = None,
        t_clean: float = 1.0,
        return_hidden: int | None = None,
    ) -> KVCache | tuple[KVCache, torch.Tensor]:
        """Cache the keys/values of clean clips ``(B, W, F, N, D)`` (frame-causal among themselves).

        Args:
            clean: ``(B, W, F, N, D)`` clean clips, laid out as :func:`~minivgpt.sequence.history_layout`.
            cond: optional labels ``(B,)`` or embedding ``(B, width)``.
            t_clean: diffusion time of the history (1 = clean).
            return_hidden: block index i (negative counts from the last block): also return the hidden
                states after block i, one vector per patch token (features for transfer).
        Returns:
            the :class:`KVCache`; with ``return_hidden`` the pair ``(cache, hidden)``, hidden of shape
            ``(B, W, F, N, width)``.
        """
        B, Wc, Fr, N, _ = clean.shape
        layout = history_layout(Wc, Fr, N)
        t_seg = torch.full((B, Wc), float(t_clean), device=clean.device)
        attend = sdpa(mask_from_layout(layout).to(clean.device))
        tokens = rearrange(clean, "b k f n d -> b (k f n) d")
        _, _, kvs, *hidden = self.run(tokens, layout, t_seg, attend, cond, return_hidden=return_hidden)
        cache = KVCache([k for k, _ in kvs], [v for _, v in kvs], Wc, Fr)
        if return_hidden is None:
            return cache
        return cache, rearrange(hidden[0], "b k (f n) w -> b k f n w", f=Fr)

    def denoise(
        self,
        noisy: torch.Tensor,
        t: torch.Tensor,
        cache: KVCache | None,
        cond: torch.Tensor | None = None,
        drop: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Clean prediction for the next clip ``noisy (B, F, N, D)`` at times ``t (B,)``.

        It attends to the cached clean history and to itself (bidirectionally): the last segment of
        :func:`~minivgpt.sequence.rollout_layout`, whose row of the mask allows every key, so no mask is
        needed. ``cache=None`` (no history) with ``drop`` all True (no condition) is the unconditional
        prediction used for classifier-free guidance.
        """
        B, Fr, N, _ = noisy.shape
        k_idx = cache.num_clips if cache is not None else 0
        layout = rollout_layout(k_idx, Fr, N)[-Fr * N :]
        tokens = rearrange(noisy, "b f n d -> b (f n) d")
        h, c, _ = self.run(tokens, layout, t[:, None], sdpa(), cond, cache, drop=drop)
        return rearrange(self._noisy_out(h, c, layout), "b (f n) d -> b f n d", f=Fr)

    def denoise_uncached(
        self,
        history: torch.Tensor,
        noisy: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor | None = None,
        t_clean: float = 1.0,
    ) -> torch.Tensor:
        """Reference path without a cache: ``denoise(noisy, t, prefill(history))`` recomputed in one pass.

        ``history (B, W, F, N, D)`` clean clips (W may be 0), ``noisy (B, F, N, D)``, ``t (B,)``.
        """
        B, Wc, Fr, N, _ = history.shape
        layout = rollout_layout(Wc, Fr, N)
        tokens = torch.cat(
            [rearrange(history, "b k f n d -> b (k f n) d"), rearrange(noisy, "b f n d -> b (f n) d")], 1
        )
        t_seg = torch.cat([torch.full((B, Wc), float(t_clean), device=t.device), t[:, None]], dim=1)
        attend = sdpa(mask_from_layout(layout).to(noisy.device))
        h, c, _ = self.run(tokens, layout, t_seg, attend, cond)
        return rearrange(self._noisy_out(h, c, layout), "b (f n) d -> b f n d", f=Fr)

    def append(
        self, cache: KVCache | None, clean: torch.Tensor, cond: torch.Tensor | None = None, t_clean: float = 1.0
    ) -> KVCache:
        """Add one clean clip ``(B, F, N, D)`` to the cache (it sees the history and its own earlier frames).

        The new clip is the last segment of :func:`~minivgpt.sequence.history_layout` with one more clip;
        its queries take their rows of that layout's mask (keys: the cached history, then itself).
        """
        B, Fr, N, _ = clean.shape
        k_idx = cache.num_clips if cache is not None else 0
        full = history_layout(k_idx + 1, Fr, N)
        layout = full[-Fr * N :]
        attend = sdpa(mask_from_layout(full)[-Fr * N :].to(clean.device))
        t_seg = torch.full((B, 1), float(t_clean), device=clean.device)
        _, _, kvs = self.run(rearrange(clean, "b f n d -> b (f n) d"), layout, t_seg, attend, cond, cache)
        if cache is None:
            return KVCache([k for k, _ in kvs], [v for _, v in kvs], 1, Fr)
        keys = [torch.cat([a, k], dim=2) for a, (k, _) in zip(cache.keys, kvs)]
        values = [torch.cat([a, v], dim=2) for a, (_, v) in zip(cache.values, kvs)]
        return KVCache(keys, values, k_idx + 1, Fr)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


@lru_cache(maxsize=64)
def _train_layout(K: int, Fr: int, N: int, drop: bool) -> TokenLayout:
    return token_layout(K, Fr, N, drop)


def _num_segments(layout: TokenLayout) -> int:
    """Number of segments (contiguous runs of one clip copy) in a layout."""
    key = layout.clip * 2 + layout.is_noisy.long()
    return int((key[1:] != key[:-1]).sum()) + 1
