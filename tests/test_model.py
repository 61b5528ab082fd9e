import math
import warnings

import pytest
import torch

from minivgpt.config import ModelConfig
from minivgpt.masks import hierarchical_mask
from minivgpt.model import VideoGPT

B, K, F, N, D = 2, 3, 2, 4, 12


def make_model(attention="dense", **kw):
    torch.manual_seed(0)
    m = VideoGPT(ModelConfig(width=32, depth=2, heads=2, attention=attention, **kw), in_dim=D, grid=(2, 2))
    # adaLN-Zero starts as the identity; give the zero-initialised layers weights so the tests can fail
    for name, p in m.named_parameters():
        if "ada" in name or name.startswith("out."):
            torch.nn.init.normal_(p, std=0.05)
    return m.eval()


def inputs():
    g = torch.Generator().manual_seed(1)
    return (
        torch.randn(B, K, F, N, D, generator=g),
        torch.randn(B, K, F, N, D, generator=g),
        torch.rand(B, K, generator=g),
    )


@pytest.mark.parametrize("head", ["linear", "mlp"])
@pytest.mark.parametrize("drop", [True, False])
def test_changing_clean_clip_k_leaves_noisy_up_to_k(drop, head):
    m = make_model(head=head)
    noisy, clean, t = inputs()
    out = m(noisy, clean, t, drop_last_clean=drop)
    for k in range(K - 1 if drop else K):
        c2 = clean.clone()
        c2[:, k] += 1.0
        diff = (m(noisy, c2, t, drop_last_clean=drop) - out).abs().amax(dim=(0, 2, 3, 4))
        assert (diff[: k + 1] == 0).all(), f"clean clip {k} leaked into noisy clips <= {k}: {diff}"
        assert (diff[k + 1 :] > 0).all(), f"clean clip {k} is not used by later noisy clips: {diff}"


def test_changing_noisy_clip_k_changes_only_noisy_k():
    m = make_model()
    noisy, clean, t = inputs()
    out = m(noisy, clean, t)
    for k in range(K):
        n2 = noisy.clone()
        n2[:, k] += 1.0
        diff = (m(n2, clean, t) - out).abs().amax(dim=(0, 2, 3, 4))
        assert diff[k] > 0 and (diff[torch.arange(K) != k] == 0).all(), diff


def test_timestep_conditioning_changes_output():
    m = make_model()
    noisy, clean, t = inputs()
    t2 = t.clone()
    t2[:, 1] = 0.99
    diff = (m(noisy, clean, t2) - m(noisy, clean, t)).abs().amax(dim=(0, 2, 3, 4))
    assert diff[1] > 0 and diff[0] == 0


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_cache_equals_full_forward(head):
    m = make_model(head=head)
    noisy, clean, t = inputs()
    with torch.no_grad():
        out = m(noisy, clean, t, drop_last_clean=False)
        for k in range(K):
            cache = m.prefill(clean[:, :k]) if k else None
            assert torch.allclose(m.denoise(noisy[:, k], t[:, k], cache), out[:, k], atol=1e-5)
        cache = None
        for k in range(K - 1):
            cache = m.append(cache, clean[:, k])
        assert cache.num_clips == K - 1
        ref = m.prefill(clean[:, : K - 1])
        for a, b in zip(cache.keys + cache.values, ref.keys + ref.values):
            assert torch.allclose(a, b, atol=1e-5)
        assert torch.allclose(m.denoise_uncached(clean[:, :2], noisy[:, 2], t[:, 2]), out[:, 2], atol=1e-5)


def test_mlp_head_starts_at_zero_and_draws_outside_a_width_dim_subspace():
    """A linear head of width W draws every patch token in a W-dim affine subspace of the D-dim patch space
    (the demo: W = 128, D = 8 * 8 * 3 = 192); ``head="mlp"`` does not, and starts as the zero map like it."""
    from minivgpt.notebook import open_gates

    W, D_big = 8, 48
    noisy = torch.randn(4, K, F, N, D_big, generator=torch.Generator().manual_seed(2))
    t = torch.rand(4, K, generator=torch.Generator().manual_seed(3))
    ranks = {}
    for head in ("linear", "mlp"):
        torch.manual_seed(0)
        m = VideoGPT(ModelConfig(width=W, depth=1, heads=1, attention="dense", head=head), in_dim=D_big, grid=(2, 2))
        with torch.no_grad():
            assert torch.equal(m(noisy, noisy, t), torch.zeros_like(noisy)), "the head must start as the zero map"
            out = open_gates(m).eval()(noisy, noisy, t).reshape(-1, D_big)
        ranks[head] = int(torch.linalg.matrix_rank(out - out.mean(0), rtol=1e-5))
    assert ranks["linear"] <= W < ranks["mlp"], ranks


def test_mlp_head_hidden_width():
    """``head_hidden`` sets the MLP head's hidden width apart from the blocks'; 0 keeps mlp_ratio * width."""
    for head_hidden, want in ((0, 32), (12, 12)):
        m = VideoGPT(ModelConfig(width=8, depth=1, heads=1, mlp_ratio=4.0, head="mlp", head_hidden=head_hidden),
                     in_dim=D, grid=(2, 2))
        assert (m.out[0].out_features, m.out[-1].in_features) == (want, want)
        assert m.blocks[0].mlp[0].out_features == 32


def test_class_conditioning_hook():
    m = make_model(num_classes=4)
    noisy, clean, t = inputs()
    a = m(noisy, clean, t, cond=torch.tensor([0, 1]))
    b = m(noisy, clean, t, cond=torch.tensor([2, 1]))
    assert (a[0] - b[0]).abs().max() > 0 and torch.equal(a[1], b[1])
    assert m.null_class == 4
    # no condition on a class-conditional model is its null class (trained by dropout), not a zero vector
    assert torch.equal(m(noisy, clean, t), m(noisy, clean, t, cond=torch.full((B,), m.null_class)))
    with pytest.raises(ValueError, match="num_classes=0"):
        make_model()(noisy, clean, t, cond=torch.tensor([0, 1]))


def test_shape_errors_name_expected_shape():
    m = make_model()
    noisy, clean, t = inputs()
    with pytest.raises(ValueError, match=r"\(B, K, F, 4, 12\)"):
        m(noisy[..., :5], clean[..., :5], t)
    with pytest.raises(ValueError, match=r"t must be \(B, K\)"):
        m(noisy, clean, t[:, :2])


def reference_model():
    """The model with its attention backend replaced by a masked softmax written out here.

    It shares no code with :mod:`minivgpt.attention`: the mask is the full hierarchical mask, cropped
    when the last clean copy is dropped, and attention is ``softmax(q k^T / sqrt(d) + mask) v``.
    """
    m = make_model("dense")

    def plan(K, Fr, N, drop_last_clean, device):
        L = (2 * K - drop_last_clean) * Fr * N
        mask = hierarchical_mask(K, Fr, N)[:L, :L].to(device)

        def attend(q, k, v):
            scores = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(~mask, float("-inf"))
            return scores.softmax(dim=-1) @ v

        return attend

    m._attention = plan  # the instance attribute shadows VideoGPT._attention
    return m


@pytest.mark.parametrize("backend", ["dense", "mask_aware"])
@pytest.mark.parametrize("drop", [True, False])
def test_backends_agree_with_a_hand_written_attention_with_gradients(backend, drop):
    ref, m = reference_model().train(), make_model(backend).train()
    noisy, clean, t = inputs()
    a, b = ref(noisy, clean, t, drop_last_clean=drop), m(noisy, clean, t, drop_last_clean=drop)
    assert (a - b).abs().max() <= 1e-5
    a.square().sum().backward()
    b.square().sum().backward()
    for (name, p), q in zip(ref.named_parameters(), m.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-4, rtol=1e-4), name


def test_flex_backend_forward_on_cpu():
    ref, m = reference_model(), make_model("flex")
    noisy, clean, t = inputs()
    with torch.no_grad():
        assert (ref(noisy, clean, t) - m(noisy, clean, t)).abs().max() <= 1e-5


def test_drop_substitutes_the_null_condition_per_sample():
    m = make_model(num_classes=4)
    noisy, clean, t = inputs()
    labels, drop = torch.tensor([0, 3]), torch.tensor([True, False])
    out = m(noisy, clean, t, cond=labels, drop=drop)
    assert torch.equal(out, m(noisy, clean, t, cond=torch.tensor([m.null_class, 3])))
    assert (out[0] - m(noisy, clean, t, cond=labels)[0]).abs().max() > 0
    keep_all = torch.zeros(B, dtype=torch.bool)
    assert torch.equal(m(noisy, clean, t, cond=labels, drop=keep_all), m(noisy, clean, t, cond=labels))
    # an embedding condition is replaced by the zero vector
    e = make_model()
    emb = torch.randn(B, 32)
    zeroed = emb.clone()
    zeroed[0] = 0
    assert torch.equal(e(noisy, clean, t, cond=emb, drop=drop), e(noisy, clean, t, cond=zeroed))
    assert torch.equal(e(noisy, clean, t, drop=drop), e(noisy, clean, t)), "no condition: nothing to drop"
    with pytest.raises(ValueError, match="drop must be a bool tensor"):
        m(noisy, clean, t, cond=labels, drop=torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="drop must be a bool tensor"):
        m(noisy, clean, t, cond=labels, drop=torch.tensor([True]))


def test_prefill_returns_the_hidden_states_of_a_block():
    m = make_model().train()
    _, clean, _ = inputs()
    grabbed = []
    handle = m.blocks[0].register_forward_hook(lambda mod, inp, out: grabbed.append(out[0]))
    cache, hidden = m.prefill(clean, return_hidden=0)
    handle.remove()
    assert hidden.shape == (B, K, F, N, 32)
    assert torch.equal(hidden, grabbed[0].reshape(B, K, F, N, 32))
    ref = m.prefill(clean)
    for a, b in zip(cache.keys + cache.values, ref.keys + ref.values):
        assert torch.equal(a, b)
    _, last = m.prefill(clean, return_hidden=-1)
    assert torch.equal(last, m.prefill(clean, return_hidden=1)[1])
    assert not torch.equal(last, hidden)
    last.square().sum().backward()  # features for fine-tuning: gradients reach the backbone
    assert m.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    for bad in (2, -3):
        with pytest.raises(ValueError, match=r"return_hidden=.* must name a block in \[-2, 1\]"):
            m.prefill(clean, return_hidden=bad)


def test_training_forward_is_one_compiled_graph():
    """No graph breaks in the training forward (equal clips): under torch.compile on a GPU a break splits the
    model into pieces that cannot be fused, and the old data-dependent steps (segment sizes read off the
    layout, boolean indexing of the noisy segments) also forced a host-device sync every step."""
    torch._dynamo.reset()
    m = VideoGPT(ModelConfig(width=32, depth=2, heads=2, attention="dense"), in_dim=12, grid=(4, 4))
    x = torch.randn(2, 3, 2, 16, 12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dynamo's note on the lru_cache'd layout builders
        explained = torch._dynamo.explain(m)(x, x, torch.rand(2, 3), drop_last_clean=True)
    assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons
