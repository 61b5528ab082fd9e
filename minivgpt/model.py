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
- Random clip cuts (clips of unequal length, ``lengths=``): tokens come as frames ``(B, T, N, D)`` with the
  frames of every clip in ``lengths``; segments then differ in length, so the per-segment modulation is
  gathered per token (``seg``) instead of broadcast over equal segments. Equal clips keep the fast path.
- Output: the clean estimate of every noisy token; with ``precond="edm"`` the head's output is a residual
  scaled and added to the noisy input (EDM's c_skip / c_out, :func:`minivgpt.diffusion.precondition`).
  The head is DiT's ``Linear(W, D)`` or, with ``head="mlp"``, Linear-GELU-Linear: a linear head draws every
  token in a W-dim subspace, too few for pixel patches of D > W values (notebooks/05, § why the rim).
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
from .diffusion import per_frame, precondition
from .masks import mask_from_layout
from .sequence import TokenLayout, clip_lengths, history_layout, interleave, rollout_layout, token_layout

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


def per_segment(mod: torch.Tensor, seg: torch.Tensor | None) -> torch.Tensor:
    """Per-segment vectors ``mod (B, S, C)`` made to meet the tokens.

    Equal segments (``seg=None``, tokens ``(B, S, T, W)``): ``(B, S, 1, C)``, broadcast over each segment's
    T tokens. Unequal segments (tokens ``(B, L, W)``, ``seg (L,)`` the segment of every token): gathered
    per token, ``(B, L, C)``.
    """
    return mod[:, :, None] if seg is None else mod[:, seg]


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

    def forward(self, x, c, cos, sin, attend: Attend, past=None, seg: torch.Tensor | None = None):
        """``x (B, S, T, W)``: S segments (clip copies) of T tokens; ``c (B, S, W)`` conditions each segment.

        The modulation broadcasts over the T tokens of a segment instead of being gathered per token.
        Segments of unequal length come as ``x (B, L, W)`` with ``seg (L,)`` (see :func:`per_segment`).
        """
        sh1, sc1, g1, sh2, sc2, g2 = per_segment(self.ada(c), seg).chunk(6, dim=-1)
        h, kv = self.attn(modulate(self.norm1(x), sh1, sc1).flatten(1, -2), cos, sin, attend, past)
        x = x + g1 * h.view_as(x)
        x = x + g2 * self.mlp(modulate(self.norm2(x), sh2, sc2))
        return x, kv


# ----------------------------------------------------------------------------------------- KV cache
@dataclass
class KVCache:
    """Keys/values of the clean history, one ``(B, H, L_hist, hd)`` pair per layer.

    Exact: clean tokens never attend to noisy ones, so these do not depend on what is being denoised.
    ``lengths`` holds the frames of each cached clean clip (``num_clips`` of them); the next noisy clip
    gets clip index ``num_clips`` and starts at frame ``sum(lengths)``.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    lengths: tuple[int, ...]

    @property
    def num_clips(self) -> int:
        return len(self.lengths)

    @property
    def frames_per_clip(self) -> int:
        """F of a history of equal clips (for unequal ones read ``lengths``)."""
        if len(set(self.lengths)) != 1:
            raise ValueError(f"the cached clips have unequal lengths {self.lengths}: read KVCache.lengths")
        return self.lengths[0]

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
        if cfg.head == "mlp":  # a nonlinear head: a linear one of width W < D draws patches in a W-dim subspace
            hidden = cfg.head_hidden or int(cfg.mlp_ratio * W)
            self.out = nn.Sequential(nn.Linear(W, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, in_dim))
        else:
            self.out = nn.Linear(W, in_dim)
        for layer in (self.ada_out, self.out if cfg.head == "linear" else self.out[-1]):
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
        ``cond=None`` on a class-conditional model is the null class (what it was trained on when the label
        was dropped), so its unconditional forecasts read a trained vector, not an untrained zero.
        """
        if cond is None:
            return 0.0 if self.class_emb is None else self.class_emb.weight[self.null_class][None, None]
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
        sizes: list[int] | None = None,
    ) -> tuple:
        """Run the transformer on ``tokens (B, L, D)`` laid out as ``layout``.

        ``t_seg (B, S)`` is the diffusion time of each of the S segments (clip copies) in order; ``cond``
        and ``drop`` as in :meth:`forward`; ``cache`` holds keys/values prepended at every layer.

        Returns ``(h, c, kvs)``: the final hidden states ``(B, S, T, W)`` (S segments of T tokens, before
        the output head), the per-segment conditioning ``(B, S, W)`` and every layer's new ``(k, v)``.
        Segments of unequal length (random clip cuts) give ``h (B, L, W)`` instead. With
        ``return_hidden=i`` a fourth item follows: the hidden states after block i, shaped like ``h``
        (negative i counts from the last block). ``sizes``: the token counts of the segments when the caller
        knows them to be equal (the training forward), so they are not read off the layout: no data-dependent
        step, nothing that breaks a ``torch.compile`` graph.
        """
        sizes, seg = _segments(layout, tokens.device) if sizes is None else (sizes, None)
        S = t_seg.shape[-1]
        if len(sizes) != S:
            raise ValueError(f"t_seg has {S} entries but the layout has {len(sizes)} segments")
        depth = len(self.blocks)
        if return_hidden is not None and not -depth <= return_hidden < depth:
            raise ValueError(f"return_hidden={return_hidden} must name a block in [-{depth}, {depth - 1}]")
        lay = layout.to(tokens.device)
        gh, gw = self.grid
        cos, sin = self.rope(lay.time.float(), (lay.patch // gw).float(), (lay.patch % gw).float())
        x = self.inp(tokens) + self.copy_emb(lay.is_noisy.long())
        if seg is None:  # equal segments: broadcast the modulation over each segment's tokens
            x = rearrange(x, "b (s t) w -> b s t w", s=S)
        c = F.silu(self.t_mlp(timestep_embedding(t_seg.to(tokens.device))) + self._condition(cond, drop))
        kvs, hidden = [], None
        for i, block in enumerate(self.blocks):
            past = (cache.keys[i], cache.values[i]) if cache is not None else None
            x, kv = block(x, c, cos, sin, attend, past, seg)
            kvs.append(kv)
            if return_hidden is not None and i == return_hidden % depth:
                hidden = x
        return (x, c, kvs) if return_hidden is None else (x, c, kvs, hidden)

    def head(self, h: torch.Tensor, c: torch.Tensor, seg: torch.Tensor | None = None) -> torch.Tensor:
        """Output projection of hidden states ``(B, S, T, W)`` with per-segment ``c (B, S, W)`` -> ``(B, S, T, D)``.

        For unequal segments: ``h (B, L, W)`` and ``seg (L,)`` -> ``(B, L, D)``.
        """
        shift, scale = per_segment(self.ada_out(c), seg).chunk(2, dim=-1)
        return self.out(modulate(self.norm_out(h), shift, scale))

    def _noisy_out(
        self, h: torch.Tensor, c: torch.Tensor, layout: TokenLayout, sizes: list[int] | None = None
    ) -> torch.Tensor:
        """The output head on the noisy segments only: ``(B, L_noisy, D)``.

        ``sizes`` (the training forward, equal segments ``h (B, S, T, W)`` in the order noisy_0, clean_0,
        noisy_1, ...): the noisy copies are the even segments, a slice. Otherwise they are read off the
        layout (``h (B, L, W)`` for unequal segments)."""
        if sizes is not None:
            return self.head(h[:, ::2], c[:, ::2]).flatten(1, 2)
        sizes, seg = _segments(layout, h.device)
        if seg is None:
            noisy_seg = layout.is_noisy[:: sizes[0]].to(h.device)
            return self.head(h[:, noisy_seg], c[:, noisy_seg]).flatten(1, 2)
        noisy = layout.is_noisy.to(h.device)
        return self.head(h[:, noisy], c, seg[noisy])

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
        lengths: tuple[int, ...] | None = None,
    ) -> torch.Tensor:
        """Predict the clean tokens of every noisy clip.

        Args:
            noisy: ``(B, K, F, N, D)`` noisy copies; clean: ``(B, K, F, N, D)`` (lightly noised) history.
            t: ``(B, K)`` diffusion time of each noisy clip; t_clean: ``(B, K)`` of the clean copies
                (default 1 = clean).
            cond: optional labels ``(B,)`` or embedding ``(B, W)``.
            drop: optional bool ``(B,)``: True replaces that sample's condition by the null condition.
            drop_last_clean: leave out the last clean copy, which nothing reads (the authors' layout).
            lengths: a random cut, the frames of each of the K clips: then ``noisy`` and ``clean`` are
                frames ``(B, T, N, D)`` with T = sum(lengths), and so is the result.
        Returns:
            ``(B, K, F, N, D)`` clean predictions for the noisy copies (``(B, T, N, D)`` with ``lengths``).
        """
        if lengths is None:
            B, K, Fr, N, D = self._check_tokens(noisy, "(B, K, F, N, D)")
            lengths = (Fr,) * K
            seq = interleave(noisy, clean)
        else:
            B, T, N, D = self._check_tokens(noisy, "(B, T, N, D) frames when lengths are given")
            lengths = tuple(clip_lengths(len(lengths), lengths))
            if sum(lengths) != T or clean.shape != noisy.shape:
                raise ValueError(f"lengths={lengths} must sum to T={T} frames of noisy and clean (B, T, N, D)")
            seq = _interleave_cut(noisy, clean, lengths)
        K = len(lengths)
        if t.shape != (B, K):
            raise ValueError(f"t must be (B, K) = ({B}, {K}), got {tuple(t.shape)}")
        t_clean = torch.ones_like(t) if t_clean is None else t_clean
        t_seg = rearrange(torch.stack([t, t_clean], dim=-1), "b k s -> b (k s)")
        if drop_last_clean:
            seq, t_seg = seq[:, : -lengths[-1] * N], t_seg[:, :-1]
        fr = _frames_arg(lengths)
        layout = _train_layout(K, fr, N, drop_last_clean)
        attend = self._attention(K, fr, N, drop_last_clean, seq.device)
        sizes = [f * N for f in lengths for _ in "nc"][: 2 * K - int(drop_last_clean)]  # noisy_k, clean_k, ...
        sizes = sizes if len(set(sizes)) == 1 else None  # equal segments: known here, not read off the layout
        h, c, _ = self.run(seq, layout, t_seg, attend, cond, drop=drop, sizes=sizes)
        out = self._noisy_out(h, c, layout, sizes)
        if noisy.ndim == 4:
            return self.estimate(noisy, rearrange(out, "b (t n) d -> b t n d", n=N), per_frame(t, lengths))
        return self.estimate(noisy, rearrange(out, "b (k f n) d -> b k f n d", k=K, f=lengths[0]), t)

    def estimate(self, noisy: torch.Tensor, raw: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The clean estimate from the output head's ``raw`` and the noisy input, both ``(B, K, ...)`` with
        ``t (B, K)``: ``raw`` itself, or with ``precond="edm"`` :func:`~minivgpt.diffusion.precondition`."""
        if self.cfg.precond == "none":
            return raw
        if self.cfg.sigma_data <= 0:
            raise ValueError("precond='edm' needs sigma_data > 0 (train measures it when it is 0)")
        return precondition(noisy, raw, t, self.cfg.sigma_data, self.cfg.data_mean)

    def _check_tokens(self, x: torch.Tensor, shape: str) -> tuple[int, ...]:
        """The shape of ``x`` if it is ``shape`` with this model's N and D, else a ``ValueError``."""
        if x.ndim != shape.count(",") + 1 or x.shape[-2:] != (self.tokens_per_frame, self.in_dim):
            want = shape.replace("N, D)", f"{self.tokens_per_frame}, {self.in_dim})")
            raise ValueError(f"tokens must be {want} for this model, got {tuple(x.shape)}")
        return tuple(x.shape)

    def _attention(self, K, Fr, N, drop, device) -> MaskedAttention:
        """The attention plan of the training layout; ``Fr`` an int, or a tuple of unequal clip lengths
        (``mask_aware`` then takes its unfused split path, ``flex`` and ``dense`` their usual one)."""
        return _plan(K, Fr, N, drop, attention_backend(self.cfg.attention, device), str(device))

    # ---- generation with an exact KV cache of the clean history
    def prefill(
        self,
        clean: torch.Tensor,
        cond: torch.Tensor | None = None,
        t_clean: float = 1.0,
        return_hidden: int | None = None,
        lengths: tuple[int, ...] | None = None,
    ) -> KVCache | tuple[KVCache, torch.Tensor]:
        """Cache the keys/values of clean clips ``(B, W, F, N, D)`` (frame-causal among themselves).

        Args:
            clean: ``(B, W, F, N, D)`` clean clips, laid out as :func:`~minivgpt.sequence.history_layout`;
                with ``lengths`` (clips of unequal length), frames ``(B, T, N, D)``, T = sum(lengths).
            cond: optional labels ``(B,)`` or embedding ``(B, width)``.
            t_clean: diffusion time of the history (1 = clean).
            return_hidden: block index i (negative counts from the last block): also return the hidden
                states after block i, one vector per patch token (features for transfer).
            lengths: frames of each of the W clips when they are unequal.
        Returns:
            the :class:`KVCache`; with ``return_hidden`` the pair ``(cache, hidden)``, hidden of shape
            ``(B, W, F, N, width)`` (``(B, T, N, width)`` with ``lengths``).
        """
        tokens, lengths = self._history_tokens(clean, lengths)
        B, N = clean.shape[0], self.tokens_per_frame
        layout = history_layout(len(lengths), _frames_arg(lengths), N)
        t_seg = torch.full((B, len(lengths)), float(t_clean), device=clean.device)
        attend = sdpa(mask_from_layout(layout).to(clean.device))
        _, _, kvs, *hidden = self.run(tokens, layout, t_seg, attend, cond, return_hidden=return_hidden)
        cache = KVCache([k for k, _ in kvs], [v for _, v in kvs], lengths)
        if return_hidden is None:
            return cache
        frames = hidden[0].reshape(B, sum(lengths), N, -1)  # (B, S, F*N, W) or (B, L, W) -> (B, T, N, W)
        return cache, frames if clean.ndim == 4 else rearrange(frames, "b (k f) n w -> b k f n w", k=len(lengths))

    def _history_tokens(self, clean: torch.Tensor, lengths) -> tuple[torch.Tensor, tuple[int, ...]]:
        """Clean clips ``(B, W, F, N, D)``, or frames ``(B, T, N, D)`` cut by ``lengths``, as tokens
        ``(B, L, D)`` with the clip lengths."""
        if lengths is None:
            B, Wc, Fr, N, _ = self._check_tokens(clean, "(B, W, F, N, D)")
            return rearrange(clean, "b k f n d -> b (k f n) d"), (Fr,) * Wc
        B, T, N, _ = self._check_tokens(clean, "(B, T, N, D) frames when lengths are given")
        lengths = tuple(int(f) for f in lengths)
        if sum(lengths) != T or any(f < 1 for f in lengths):
            raise ValueError(f"lengths={lengths} must be >= 1 each and sum to the T={T} frames of the history")
        return rearrange(clean, "b t n d -> b (t n) d"), lengths

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
        needed. Its F may differ from the cached clips' lengths (random cuts). ``cache=None`` (no history)
        with ``drop`` all True (no condition) is the unconditional prediction used for classifier-free guidance.
        """
        B, Fr, N, _ = noisy.shape
        hist = cache.lengths if cache is not None else ()
        layout = rollout_layout(len(hist), _frames_arg(hist + (Fr,)), N)[-Fr * N :]
        tokens = rearrange(noisy, "b f n d -> b (f n) d")
        h, c, _ = self.run(tokens, layout, t[:, None], sdpa(), cond, cache, drop=drop)
        return self.estimate(noisy, rearrange(self._noisy_out(h, c, layout), "b (f n) d -> b f n d", f=Fr), t)

    def denoise_uncached(
        self,
        history: torch.Tensor,
        noisy: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor | None = None,
        t_clean: float = 1.0,
        lengths: tuple[int, ...] | None = None,
    ) -> torch.Tensor:
        """Reference path without a cache: ``denoise(noisy, t, prefill(history))`` recomputed in one pass.

        ``history (B, W, F, N, D)`` clean clips (W may be 0), or frames ``(B, T, N, D)`` cut by ``lengths``;
        ``noisy (B, F', N, D)``, ``t (B,)``.
        """
        hist, lengths = self._history_tokens(history, lengths)
        B, Fr, N, _ = noisy.shape
        layout = rollout_layout(len(lengths), _frames_arg(lengths + (Fr,)), N)
        tokens = torch.cat([hist, rearrange(noisy, "b f n d -> b (f n) d")], 1)
        t_seg = torch.cat([torch.full((B, len(lengths)), float(t_clean), device=t.device), t[:, None]], dim=1)
        attend = sdpa(mask_from_layout(layout).to(noisy.device))
        h, c, _ = self.run(tokens, layout, t_seg, attend, cond)
        return self.estimate(noisy, rearrange(self._noisy_out(h, c, layout), "b (f n) d -> b f n d", f=Fr), t)

    def append(
        self, cache: KVCache | None, clean: torch.Tensor, cond: torch.Tensor | None = None, t_clean: float = 1.0
    ) -> KVCache:
        """Add one clean clip ``(B, F, N, D)`` to the cache (it sees the history and its own earlier frames).

        The new clip is the last segment of :func:`~minivgpt.sequence.history_layout` with one more clip;
        its queries take their rows of that layout's mask (keys: the cached history, then itself). Its F
        may differ from the cached clips' lengths.
        """
        B, Fr, N, _ = clean.shape
        lengths = (cache.lengths if cache is not None else ()) + (Fr,)
        full = history_layout(len(lengths), _frames_arg(lengths), N)
        layout = full[-Fr * N :]
        attend = sdpa(mask_from_layout(full)[-Fr * N :].to(clean.device))
        t_seg = torch.full((B, 1), float(t_clean), device=clean.device)
        _, _, kvs = self.run(rearrange(clean, "b f n d -> b (f n) d"), layout, t_seg, attend, cond, cache)
        if cache is None:
            return KVCache([k for k, _ in kvs], [v for _, v in kvs], lengths)
        keys = [torch.cat([a, k], dim=2) for a, (k, _) in zip(cache.keys, kvs)]
        values = [torch.cat([a, v], dim=2) for a, (_, v) in zip(cache.values, kvs)]
        return KVCache(keys, values, lengths)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


@lru_cache(maxsize=64)
def _train_layout(K: int, Fr: int | tuple[int, ...], N: int, drop: bool) -> TokenLayout:
    return token_layout(K, Fr, N, drop)


def attention_backend(name: str, device: torch.device) -> str:
    """The backend ``attention=name`` trains with on ``device``: ``auto`` is compiled flex on CUDA and the
    mask-aware path on CPU; any other name is itself."""
    if name != "auto":
        return name
    return "flex" if device.type == "cuda" else "mask_aware"


def _frames_arg(lengths: tuple[int, ...]) -> int | tuple[int, ...]:
    """Clip lengths as the layouts take them: one int F when all clips are equal, else the tuple."""
    return lengths[0] if len(set(lengths)) == 1 else lengths


def _interleave_cut(noisy: torch.Tensor, clean: torch.Tensor, lengths: tuple[int, ...]) -> torch.Tensor:
    """:func:`~minivgpt.sequence.interleave` for clips of unequal length: frames ``(B, T, N, D)`` cut by
    ``lengths`` -> ``(B, 2*T*N, D)`` ordered noisy_0, clean_0, noisy_1, clean_1, ..."""
    pairs = zip(noisy.split(lengths, dim=1), clean.split(lengths, dim=1))
    return torch.cat([x for pair in pairs for x in pair], dim=1).flatten(1, 2)


def _segments(layout: TokenLayout, device: torch.device) -> tuple[list[int], torch.Tensor | None]:
    """Token counts of the segments (contiguous runs of one clip copy) of a layout, and the segment id of
    every token ``(L,)`` on ``device`` when they differ (None when all segments are equally long)."""
    key = layout.clip * 2 + layout.is_noisy.long()
    sizes = torch.unique_consecutive(key, return_counts=True)[1].tolist()
    if len(set(sizes)) == 1:
        return sizes, None
    seg = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return sizes, seg.to(device)
