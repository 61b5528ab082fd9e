"""Attention under the hierarchical mask of next clip diffusion, with a choice of backend.

Derived in notebooks/03 (§6 density and compute, §7 three attention paths, one answer).

The sequence is ``[noisy_0, clean_0, noisy_1, clean_1, ...]`` (:mod:`minivgpt.sequence`), and the rule
of :mod:`minivgpt.masks` allows only about a quarter of all (query, key) pairs at K = 8 clips. Three
backends compute the same thing:

- ``"dense"``: :func:`torch.nn.functional.scaled_dot_product_attention` with the ``(L, L)`` bool mask.
  Simple and works for any layout, but computes every pair and throws three quarters away.
- ``"flex"``: FlexAttention with the rule as a ``BlockMask`` (fully masked 128-blocks are skipped).
  Compiled on CUDA; eager and forward-only on CPU (torch 2.14 has no FlexAttention backward on CPU).
- ``"mask_aware"``: for CPU training. It splits the sequence into the pieces the rule makes (nearly)
  dense and computes only those: every allowed pair, plus the later-frame pairs inside each clean clip's
  own frame-causal block, which its kernel computes and then masks: 1.029x the allowed pairs at
  K = 8, F = 2 (any N; dense computes 3.66x). See :class:`MaskedAttention`.

:func:`minivgpt.bench.attention_flops` counts the pairs each path computes, and
:func:`minivgpt.bench.benchmark_attention` times the backends.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from . import masks
from .sequence import TokenLayout, clip_lengths, token_layout

__all__ = ["BACKENDS", "MaskedAttention"]

BACKENDS = ("dense", "flex", "mask_aware")

_compiled_flex = None  # torch.compile(flex_attention), built on first use on CUDA


def _flex_attention(device: torch.device):
    """Eager FlexAttention on CPU, a (lazily) compiled one on CUDA.

    Inside a ``torch.compile``'d model the plain function is returned (the outer graph fuses it), and the
    compiled one is never built there: ``torch.compile`` called while tracing returns its argument
    unchanged, so caching that would leave every later eager call on the unfused path (measured on an
    H200: 61 ms instead of about 1 ms at L = 4,096).
    """
    global _compiled_flex
    from torch.nn.attention.flex_attention import flex_attention

    if device.type != "cuda" or torch.compiler.is_compiling():
        return flex_attention
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention, dynamic=False)
    return _compiled_flex


def _frame_causal(frames: int, tokens_per_frame: int, device=None) -> torch.Tensor:
    """``(F*N, F*N)`` bool: token i may see token j of the same clean clip iff frame(j) <= frame(i)."""
    fr = torch.arange(frames, device=device).repeat_interleave(tokens_per_frame)
    return fr[:, None] >= fr[None, :]


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Bool mask -> additive float mask (0 where allowed, -inf where not)."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))


# Private CPU flash-attention kernels (they return / take the log-sum-exp, which lets the mask-aware
# path merge partial attentions exactly). Looked up once; absent ops simply disable the fused path.
_CPU_FLASH = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
_CPU_FLASH_BWD = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)


class MaskedAttention:
    """Attention under the hierarchical mask, with a choice of backend.

    Built once per layout, called per layer.

    Args:
        num_clips, frames_per_clip, tokens_per_frame: K, F (an int, or one entry per clip) and N of the
            training layout ``[noisy_0, clean_0, ..., noisy_{K-1}, clean_{K-1}]``, L = 2*K*F*N.
        drop_last_clean: the layout without the final clean copy (L - F*N tokens).
        backend: ``"dense"``, ``"flex"`` or ``"mask_aware"`` (module docstring).
        device: where the mask / block mask is built (``"dense"`` moves its mask on demand).
        layout: a custom :class:`~minivgpt.sequence.TokenLayout` (e.g. ``rollout_layout``) instead of the
            training layout; supported by ``"dense"`` and ``"flex"``.
        fused: let ``"mask_aware"`` use its fused CPU path where it applies (see below); False forces
            the plain split through autograd (kept for comparison and for other devices).

    ``__call__(q, k, v)`` takes ``(B, H, L, hd)`` tensors in the sequence order and returns ``(B, H, L, hd)``
    (any leading dims work for ``"dense"`` and ``"mask_aware"``). Scale is ``1/sqrt(hd)``.

    How ``"mask_aware"`` works (clip k has S_k = F_k*N tokens in each copy, P_k = S_0 + ... + S_{k-1}):
    the clean copies are gathered into one contiguous clean stream of keys/values. Then

    - noisy clip k attends to ``[clean stream[:P_k], noisy clip k]``, no mask;
    - clean clip k attends to ``clean stream[:P_k + S_k]``, with a frame-causal mask on its last block
      only (no mask at all when F = 1),

    and the outputs are concatenated back in sequence order (``fused=False``: 2K SDPA calls through
    autograd, any device). With ``fused=True`` (the default) and equal clip lengths on CPU, the same
    split runs as one autograd Function on the CPU flash kernels (``_FusedCPU``): the diagonal blocks
    of all clips in two batched calls, the clean history in K - 1 calls, merged through log-sum-exps.
    Both paths compute every allowed pair and, of the forbidden ones, only the later-frame pairs in the
    diagonal frame-causal block of each clean clip: 1.029x the allowed pairs at K = 8, F = 2 (dense
    computes 3.66x; ``minivgpt.bench.attention_flops`` counts both).
    """

    def __init__(
        self,
        num_clips: int,
        frames_per_clip: int | Sequence[int],
        tokens_per_frame: int,
        drop_last_clean: bool = False,
        backend: str = "dense",
        device: str | torch.device = "cpu",
        layout: TokenLayout | None = None,
        fused: bool = True,
    ):
        if backend not in BACKENDS:
            raise ValueError(f"unknown attention backend {backend!r}; choose one of {BACKENDS}")
        if layout is not None and backend == "mask_aware":
            raise ValueError(
                "backend 'mask_aware' supports only the training layout (token_layout); "
                "use backend 'dense' or 'flex' for a custom layout such as rollout_layout"
            )
        self.backend = backend
        self.device = torch.device(device)
        self.num_clips = num_clips
        self.frames_per_clip = frames_per_clip
        self.tokens_per_frame = tokens_per_frame
        self.drop_last_clean = drop_last_clean
        self.custom_layout = layout is not None
        self.layout = (
            layout
            if layout is not None
            else token_layout(num_clips, frames_per_clip, tokens_per_frame, drop_last_clean)
        )
        self.seq_len = len(self.layout)
        self.fused = fused
        self._masks: dict = {}  # cached masks keyed by (kind, device, dtype)

        if backend == "dense":
            self._masks[("dense", self.device)] = masks.mask_from_layout(self.layout).to(self.device)
        elif backend == "flex":
            self.block_mask = masks.block_mask(
                num_clips,
                frames_per_clip,
                tokens_per_frame,
                drop_last_clean=drop_last_clean,
                device=self.device,
                layout=layout,
            )
        else:
            lengths = clip_lengths(num_clips, frames_per_clip)
            self._sizes = [f * tokens_per_frame for f in lengths]  # S_k
            self._prefix = [sum(self._sizes[:k]) for k in range(num_clips)]  # P_k
            segs = [s for s in self._sizes for _ in (0, 1)]
            self._segments = segs[:-1] if drop_last_clean else segs
            self._num_clean = num_clips - int(drop_last_clean)
            self._lengths = lengths
            self._uniform = len(set(lengths)) == 1

    # ------------------------------------------------------------------ public
    def __repr__(self) -> str:
        return (
            f"MaskedAttention(backend={self.backend!r}, seq_len={self.seq_len}, K={self.num_clips}, "
            f"F={self.frames_per_clip}, N={self.tokens_per_frame}, drop_last_clean={self.drop_last_clean}, "
            f"custom_layout={self.custom_layout})"
        )

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if not (q.shape[-2] == k.shape[-2] == v.shape[-2] == self.seq_len):
            raise ValueError(
                f"MaskedAttention was built for sequence length {self.seq_len} "
                f"but got q/k/v lengths {q.shape[-2]}/{k.shape[-2]}/{v.shape[-2]}"
            )
        if self.backend == "dense":
            return F.scaled_dot_product_attention(q, k, v, attn_mask=self._dense_mask(q.device))
        if self.backend == "flex":
            return self._flex(q, k, v)
        return self._mask_aware(q, k, v)

    # ------------------------------------------------------------------ dense
    def _dense_mask(self, device: torch.device) -> torch.Tensor:
        key = ("dense", device)
        if key not in self._masks:
            self._masks[key] = self._masks[("dense", self.device)].to(device)
        return self._masks[key]

    # ------------------------------------------------------------------ flex
    def _flex(self, q, k, v):
        if (
            q.device.type == "cpu"
            and torch.is_grad_enabled()
            and (q.requires_grad or k.requires_grad or v.requires_grad)
        ):
            raise RuntimeError(
                "backend 'flex' is forward-only on CPU: FlexAttention has no backward on CPU in this torch. "
                "Use backend 'mask_aware' (fastest) or 'dense' for CPU training, "
                "or call it under torch.no_grad()."
            )
        if q.device != self.block_mask.kv_indices.device:
            raise ValueError(
                f"the block mask was built on {self.block_mask.kv_indices.device}, q is on {q.device}"
            )
        if q.device.type == "cuda":
            return _flex_attention(q.device)(q, k, v, block_mask=self.block_mask)
        # FlexAttention refuses CPU inputs that require grad even under no_grad: nothing needs them here
        q, k, v = q.detach(), k.detach(), v.detach()
        with warnings.catch_warnings():  # eager on CPU is deliberate (forward-only inference, tests)
            warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
            return _flex_attention(q.device)(q, k, v, block_mask=self.block_mask)

    # ------------------------------------------------------------------ mask-aware
    def _clean_mask(self, j: int, like: torch.Tensor, additive: bool = True) -> torch.Tensor | None:
        """Mask of clean clip j's queries over the clean prefix ``[:P_j + S_j]`` (None when F_j == 1)."""
        if self._lengths[j] == 1:
            return None
        key = ("clean", j, like.device, like.dtype if additive else torch.bool)
        m = self._masks.get(key)
        if m is None:
            fc = _frame_causal(self._lengths[j], self.tokens_per_frame, like.device)
            m = torch.cat(
                [torch.ones(fc.shape[0], self._prefix[j], dtype=torch.bool, device=like.device), fc], 1
            )
            if additive:
                m = _additive(m, like.dtype)
            self._masks[key] = m
        return m

    def _diag_mask(self, like: torch.Tensor) -> torch.Tensor | None:
        """Additive frame-causal ``(S, S)`` mask of a clean clip against itself (uniform layouts)."""
        if self._lengths[0] == 1:
            return None
        key = ("diag", like.device, like.dtype)
        if key not in self._masks:
            self._masks[key] = _additive(
                _frame_causal(self._lengths[0], self.tokens_per_frame, like.device), like.dtype
            )
        return self._masks[key]

    def _use_fused(self, q, k, v) -> bool:
        return (
            self.fused
            and _CPU_FLASH is not None
            and _CPU_FLASH_BWD is not None
            and q.device.type == "cpu"
            and q.dim() == 4
            and q.shape == k.shape == v.shape
            and q.dtype == k.dtype == v.dtype
            and q.dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16)
            and self._uniform
        )

    def _mask_aware(self, q, k, v):
        if self._use_fused(q, k, v):
            return _FusedCPU.apply(q, k, v, self)
        return self._mask_aware_split(q, k, v)

    def _mask_aware_split(self, q, k, v):
        """The split through autograd: 2K SDPA calls (any device, any leading dims)."""
        qs, ks, vs = (t.split(self._segments, dim=-2) for t in (q, k, v))
        if self._num_clean:
            kc, vc = torch.cat(ks[1::2], dim=-2), torch.cat(vs[1::2], dim=-2)
        outs = []
        for j in range(self.num_clips):
            p, s = self._prefix[j], self._sizes[j]
            if j == 0:
                kn, vn = ks[0], vs[0]
            else:
                kn = torch.cat([kc[..., :p, :], ks[2 * j]], dim=-2)
                vn = torch.cat([vc[..., :p, :], vs[2 * j]], dim=-2)
            outs.append(F.scaled_dot_product_attention(qs[2 * j], kn, vn))
            if j < self._num_clean:
                m = self._clean_mask(j, q)
                outs.append(
                    F.scaled_dot_product_attention(
                        qs[2 * j + 1], kc[..., : p + s, :], vc[..., : p + s, :], attn_mask=m
                    )
                )
        return torch.cat(outs, dim=-2)


def _copies(x: torch.Tensor, S: int, clean: bool) -> torch.Tensor:
    """Strided view of every noisy (or every clean) copy of a contiguous ``(B, H, L, *rest)`` sequence.

    Returns ``(B*H, n, S, *rest)``: the kernels see the clips as extra "heads". n = K for the noisy
    copies and n = K or K - 1 (last clean copy dropped) for the clean ones.
    """
    B, H, L = x.shape[:3]
    inner = x.stride(2)  # hd for q/k/v, 1 for the log-sum-exp
    n = (L + (0 if clean else S)) // (2 * S)
    size = (B * H, n, S, *x.shape[3:])
    stride = (L * inner, 2 * S * inner, inner, *((1,) if x.dim() == 4 else ()))
    return x.as_strided(size, stride, x.storage_offset() + (S * inner if clean else 0))


class _FusedCPU(torch.autograd.Function):
    """Mask-aware attention on CPU for clips of equal length, with a hand-written backward.

    Split by key set: (1) every copy against itself — noisy clip k with noisy clip k (no mask) and clean
    clip k with clean clip k (frame-causal): two kernel calls batched over all clips through strided
    views; (2) both copies of clip k >= 1 against the clean history ``clean[:P_k]`` (no mask; the noisy
    and clean copy of a clip are adjacent in the sequence, so their queries form one slice): K - 1 calls.
    The partial attentions are merged exactly through their log-sum-exps, and the backward calls the
    flash backward kernel on each part with the merged output and log-sum-exp (the split-KV backward),
    accumulating gradients in place: no slicing or concatenation through autograd. Works with and
    without the last clean copy (it is never a key of another clip).
    """

    @staticmethod
    def forward(ctx, q, k, v, att: MaskedAttention):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        K, S = att.num_clips, att._sizes[0]
        B, H, L, D = q.shape
        dm = att._diag_mask(q)
        o = torch.empty_like(q)
        acc = torch.float64 if q.dtype == torch.float64 else torch.float32  # the kernel's log-sum-exp dtype
        lse = torch.empty(B, H, L, dtype=acc, device=q.device)
        for clean in (False, True) if att._num_clean else (False,):  # (1) diagonal blocks, all clips
            oi, li = _CPU_FLASH(*(_copies(t, S, clean) for t in (q, k, v)), attn_mask=dm if clean else None)
            _copies(o, S, clean).copy_(oi)
            _copies(lse, S, clean).copy_(li)
        # the clean history keys: clean copies of clips 0..K-2 as one contiguous stream
        kc = _copies(k, S, True)[:, : K - 1].reshape(B, H, (K - 1) * S, D)
        vc = _copies(v, S, True)[:, : K - 1].reshape(B, H, (K - 1) * S, D)
        if K > 1:  # (2) clip j (noisy and clean copy) against clean[:jS], then one merge for all clips
            parts = [
                _CPU_FLASH(q[:, :, 2 * j * S : 2 * (j + 1) * S], kc[:, :, : j * S], vc[:, :, : j * S])
                for j in range(1, K)
            ]
            op = torch.cat([p[0] for p in parts], dim=2)
            lp = torch.cat([p[1] for p in parts], dim=2)
            o1, l1 = o[:, :, 2 * S :], lse[:, :, 2 * S :]
            ln = torch.logaddexp(l1, lp)
            w1 = (l1 - ln).exp_().unsqueeze(-1).to(o.dtype)
            wp = (lp - ln).exp_().unsqueeze(-1).to(o.dtype)
            o1.mul_(w1).addcmul_(op, wp)
            l1.copy_(ln)
        ctx.att = att
        ctx.save_for_backward(q, k, v, kc, vc, o, lse)
        return o

    @staticmethod
    @once_differentiable
    def backward(ctx, go):
        q, k, v, kc, vc, o, lse = ctx.saved_tensors
        att = ctx.att
        K, S = att.num_clips, att._sizes[0]
        B, H, L, D = q.shape
        go = go.contiguous()
        dm = att._diag_mask(q)
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        for clean in (False, True) if att._num_clean else (False,):
            views = (_copies(t, S, clean) for t in (go, q, k, v, o, lse))
            a, b, c = _CPU_FLASH_BWD(*views, 0.0, False, attn_mask=dm if clean else None)
            _copies(dq, S, clean).copy_(a)
            _copies(dk, S, clean).copy_(b)
            _copies(dv, S, clean).copy_(c)
        if K > 1:
            dqs, gkc, gvc = [], None, None
            for j in range(K - 1, 0, -1):  # longest history first: its key grads start the accumulators
                sl = slice(2 * j * S, 2 * (j + 1) * S)
                hist = slice(0, j * S)
                a, b, c = _CPU_FLASH_BWD(
                    go[:, :, sl],
                    q[:, :, sl],
                    kc[:, :, hist],
                    vc[:, :, hist],
                    o[:, :, sl],
                    lse[:, :, sl],
                    0.0,
                    False,
                )
                dqs.append(a)
                if gkc is None:
                    gkc, gvc = b, c
                else:
                    gkc[:, :, hist] += b
                    gvc[:, :, hist] += c
            dq[:, :, 2 * S :] += torch.cat(dqs[::-1], dim=2)
            _copies(dk, S, True)[:, : K - 1] += gkc.reshape(B * H, K - 1, S, D)
            _copies(dv, S, True)[:, : K - 1] += gvc.reshape(B * H, K - 1, S, D)
        return dq, dk, dv, None
