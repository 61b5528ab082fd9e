"""The attention backends agree with the hierarchical mask and with each other."""

import itertools
import math

import pytest
import torch

from minivgpt import masks, sequence
from minivgpt.attention import MaskedAttention

SHAPES = list(itertools.product([1, 2, 3], [1, 2, 3], [1, 4], [False, True]))  # K, F, N, drop_last_clean
TOL = dict(atol=1e-5, rtol=1e-5)


def _seq_len(K, F, N, drop):
    return 2 * K * F * N - (F * N if drop else 0)


def _qkv(L, seed=0, B=2, H=2, hd=8, requires_grad=False, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(B, H, L, hd, generator=g, dtype=dtype).requires_grad_(requires_grad) for _ in range(3)
    ]


def _naive(q, k, v, mask):
    """softmax(Q K^T / sqrt(d) + M) V with M = 0 where allowed and -inf elsewhere."""
    add = torch.zeros(mask.shape, dtype=q.dtype).masked_fill(~mask, float("-inf"))
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + add
    return torch.softmax(scores, dim=-1) @ v


def _flex_runs_on_cpu() -> str | None:
    """None if eager FlexAttention runs here, else the reason it does not."""
    try:
        att = MaskedAttention(1, 1, 2, backend="flex")
        with torch.no_grad():
            att(*_qkv(att.seq_len))
    except Exception as e:  # noqa: BLE001
        return f"FlexAttention forward does not run on CPU here: {type(e).__name__}: {e}"
    return None


@pytest.mark.parametrize("K,F,N,drop", SHAPES)
def test_backends_agree_forward(K, F, N, drop):
    L = _seq_len(K, F, N, drop)
    q, k, v = _qkv(L, seed=K * 100 + F * 10 + N)
    mask = masks.hierarchical_mask(K, F, N)[:L, :L]
    dense = MaskedAttention(K, F, N, drop, backend="dense")
    assert dense.seq_len == L
    ref = dense(q, k, v)
    torch.testing.assert_close(ref, _naive(q, k, v, mask), **TOL)
    for fused in (True, False):
        out = MaskedAttention(K, F, N, drop, backend="mask_aware", fused=fused)(q, k, v)
        torch.testing.assert_close(out, ref, **TOL)
    if _flex_runs_on_cpu() is None:
        with torch.no_grad():
            out = MaskedAttention(K, F, N, drop, backend="flex")(q, k, v)
        torch.testing.assert_close(out, ref, **TOL)


@pytest.mark.parametrize("K,F,N,drop", SHAPES)
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "split"])
def test_mask_aware_gradients_match_dense(K, F, N, drop, fused):
    L = _seq_len(K, F, N, drop)
    q, k, v = _qkv(L, seed=7 + K + F + N, requires_grad=True)
    w = torch.randn(q.shape, generator=torch.Generator().manual_seed(1))
    grads = {}
    for name, att in {
        "dense": MaskedAttention(K, F, N, drop, backend="dense"),
        "mask_aware": MaskedAttention(K, F, N, drop, backend="mask_aware", fused=fused),
    }.items():
        out = att(q, k, v)
        grads[name] = torch.autograd.grad((out * w).sum(), (q, k, v))
    for a, b in zip(grads["dense"], grads["mask_aware"]):
        torch.testing.assert_close(b, a, **TOL)


def test_fused_path_is_taken_on_cpu_for_equal_clips():
    for drop in (False, True):
        att = MaskedAttention(3, 2, 4, drop_last_clean=drop, backend="mask_aware")
        assert att._use_fused(*_qkv(att.seq_len))
    unequal = MaskedAttention(3, [1, 2, 2], 4, backend="mask_aware")
    assert not unequal._use_fused(*_qkv(unequal.seq_len))


def test_mask_aware_non_contiguous_inputs():
    """q/k/v as a model makes them: a (B, L, 3, H, hd) projection permuted to (B, H, L, hd)."""
    att = MaskedAttention(3, 2, 4, drop_last_clean=True, backend="mask_aware")
    qkv = torch.randn(2, att.seq_len, 3, 2, 8, generator=torch.Generator().manual_seed(2), requires_grad=True)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    assert not q.is_contiguous()
    dense = MaskedAttention(3, 2, 4, drop_last_clean=True, backend="dense")
    w = torch.randn(q.shape)
    (g_ma,) = torch.autograd.grad((att(q, k, v) * w).sum(), qkv)
    (g_de,) = torch.autograd.grad((dense(q, k, v) * w).sum(), qkv)
    torch.testing.assert_close(att(q, k, v), dense(q, k, v), **TOL)
    torch.testing.assert_close(g_ma, g_de, **TOL)


def test_mask_aware_unequal_clips_and_extra_dims():
    lengths = [1, 3, 2]
    N = 2
    lay = sequence.token_layout(3, lengths, N)
    mask = masks.mask_from_layout(lay)
    q, k, v = (t.unsqueeze(0) for t in _qkv(len(lay), seed=3, requires_grad=False))  # (1, B, H, L, hd)
    out = MaskedAttention(3, lengths, N, backend="mask_aware")(q, k, v)
    torch.testing.assert_close(out, _naive(q, k, v, mask), **TOL)
    dense = MaskedAttention(3, lengths, N, backend="dense")(q, k, v)
    torch.testing.assert_close(dense, out, **TOL)


def test_mask_aware_float64_and_bfloat16():
    att = MaskedAttention(2, 2, 4, backend="mask_aware")
    q, k, v = _qkv(att.seq_len, dtype=torch.float64)
    mask = masks.hierarchical_mask(2, 2, 4)
    torch.testing.assert_close(att(q, k, v), _naive(q, k, v, mask), atol=1e-12, rtol=1e-12)
    qb, kb, vb = (t.bfloat16() for t in (q, k, v))
    torch.testing.assert_close(att(qb, kb, vb).double(), _naive(q, k, v, mask), atol=3e-2, rtol=3e-2)


def test_flex_forward_matches_dense_on_cpu():
    reason = _flex_runs_on_cpu()
    if reason is not None:
        pytest.skip(reason)
    for K, F, N, drop in [(2, 2, 4, False), (3, 1, 4, True), (3, 3, 1, False)]:
        q, k, v = _qkv(_seq_len(K, F, N, drop), seed=11)
        with torch.no_grad():
            out = MaskedAttention(K, F, N, drop, backend="flex")(q, k, v)
        torch.testing.assert_close(out, MaskedAttention(K, F, N, drop, backend="dense")(q, k, v), **TOL)


def test_flex_on_cpu_with_grad_raises_clear_error():
    att = MaskedAttention(2, 2, 4, backend="flex")
    q, k, v = _qkv(att.seq_len, requires_grad=True)
    with pytest.raises(RuntimeError, match="mask_aware"):
        att(q, k, v)
    if _flex_runs_on_cpu() is None:  # under no_grad, inputs that require grad are fine (inference)
        with torch.no_grad():
            out = att(q, k, v)
        dense = MaskedAttention(2, 2, 4, backend="dense")(q.detach(), k.detach(), v.detach())
        torch.testing.assert_close(out, dense, **TOL)


def _rollout_mask_by_hand(W, F, N):
    """The rule written out for [clean_0, ..., clean_{W-1}, noisy_W], token by token."""
    ids = [(c, f, False) for c in range(W) for f in range(F) for _ in range(N)]
    ids += [(W, f, True) for f in range(F) for _ in range(N)]
    L = len(ids)
    m = torch.zeros(L, L, dtype=torch.bool)
    for i, (qc, qf, qn) in enumerate(ids):
        for j, (kc, kf, kn) in enumerate(ids):
            if not qn and not kn:
                m[i, j] = kc < qc or (kc == qc and kf <= qf)
            elif qn and not kn:
                m[i, j] = kc < qc
            elif qn and kn:
                m[i, j] = kc == qc
    return m


@pytest.mark.parametrize("backend", ["dense", "flex"])
def test_rollout_layout_matches_hand_written_softmax(backend):
    W, F, N = 2, 2, 3
    lay = sequence.rollout_layout(W, F, N)
    mask = _rollout_mask_by_hand(W, F, N)
    q, k, v = _qkv(len(lay), seed=5)
    scores = torch.einsum("bhid,bhjd->bhij", q, k) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~mask, float("-inf"))
    expected = torch.einsum("bhij,bhjd->bhid", scores.softmax(-1), v)
    if backend == "flex":
        reason = _flex_runs_on_cpu()
        if reason is not None:
            pytest.skip(reason)
    att = MaskedAttention(W + 1, F, N, backend=backend, layout=lay)
    assert att.seq_len == len(lay)
    with torch.no_grad():
        torch.testing.assert_close(att(q, k, v), expected, **TOL)


def test_custom_layout_rejected_by_mask_aware_and_wrong_length_rejected():
    with pytest.raises(ValueError, match="custom layout"):
        MaskedAttention(3, 2, 3, backend="mask_aware", layout=sequence.rollout_layout(2, 2, 3))
    with pytest.raises(ValueError, match="backend"):
        MaskedAttention(2, 2, 3, backend="sparse")
    att = MaskedAttention(2, 2, 3, backend="mask_aware")
    q, k, v = _qkv(att.seq_len + 1)
    with pytest.raises(ValueError, match="sequence length"):
        att(q, k, v)


def test_compiled_flex_is_not_cached_from_inside_a_compiled_model(monkeypatch):
    """torch.compile called while tracing returns its argument: the cached 'compiled' FlexAttention must not
    be built there, or every later eager call on CUDA runs the unfused path."""
    import minivgpt.attention as A

    monkeypatch.setattr(A, "_compiled_flex", None)
    cuda = torch.device("cuda")

    def traced(x):
        A._flex_attention(cuda)  # as the model does inside torch.compile
        return x * 2

    torch.compile(traced, backend="eager")(torch.randn(3))
    assert A._compiled_flex is None
    compiled = A._flex_attention(cuda)
    assert compiled is A._compiled_flex and hasattr(compiled, "_torchdynamo_orig_callable")
