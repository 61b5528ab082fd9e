"""Random clip cuts: clips of unequal length in the model, the loss, the KV cache, rollout and the stages."""

import random

import pytest
import torch

from minivgpt.config import ModelConfig, RandomCut, parse_stages
from minivgpt.diffusion import RectifiedFlow
from minivgpt.model import VideoGPT
from minivgpt.rollout import rollout
from minivgpt.train import cut_at, train

LENGTHS = (1, 3, 2, 1)  # T = 7 frames in 4 clips


def make_model(attention="dense", **kw):
    torch.manual_seed(0)
    m = VideoGPT(ModelConfig(width=32, depth=2, heads=2, attention=attention, **kw), in_dim=12, grid=(2, 2))
    for name, p in m.named_parameters():  # the zero-initialised output layers would hide every difference
        if "ada" in name or name.startswith("out."):
            torch.nn.init.normal_(p, std=0.05)
    return m.eval()


def frames(lengths=LENGTHS, B=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    T = sum(lengths)
    return (torch.randn(B, T, 4, 12, generator=g), torch.randn(B, T, 4, 12, generator=g),
            torch.rand(B, len(lengths), generator=g))


@pytest.mark.parametrize("attention,precond", [("dense", "none"), ("mask_aware", "none"), ("flex", "none"),
                                               ("dense", "edm"), ("mask_aware", "edm")])
def test_training_forward_equals_cached_denoising(attention, precond):
    """Each noisy clip's prediction in the training forward is what the cached rollout denoises (also with
    EDM preconditioning, where the estimate mixes in the noisy input at each clip's own t)."""
    m = make_model(attention, precond=precond, sigma_data=0.4, data_mean=-0.5)
    noisy, clean, t = frames()
    with torch.no_grad():
        pred = m(noisy, clean, t, lengths=LENGTHS)
        assert pred.shape == noisy.shape
        cache, start = None, 0
        for k, f in enumerate(LENGTHS):
            clip = slice(start, start + f)
            assert (m.denoise(noisy[:, clip], t[:, k], cache) - pred[:, clip]).abs().max() <= 1e-5, k
            cache = m.append(cache, clean[:, clip])
            start += f
        assert cache.lengths == LENGTHS


def test_cache_equals_recompute_and_prefill_equals_append():
    m = make_model()
    noisy, clean, t = frames()
    with torch.no_grad():
        full = m.prefill(clean, lengths=LENGTHS)
        cache, start = None, 0
        for f in LENGTHS:
            cache = m.append(cache, clean[:, start : start + f])
            start += f
        for a, b in zip(full.keys + full.values, cache.keys + cache.values):
            assert (a - b).abs().max() <= 1e-5
        x = noisy[:, :2]  # the next clip may have yet another length (2 frames)
        cached = m.denoise(x, t[:, 0], full)
        recomputed = m.denoise_uncached(clean, x, t[:, 0], lengths=LENGTHS)
        assert (cached - recomputed).abs().max() <= 1e-5
        # clean tokens are frame-causal in absolute time, so the history's cut does not change its keys
        other = m.denoise_uncached(clean, x, t[:, 0], lengths=(2, 2, 2, 1))
        assert (other - cached).abs().max() <= 1e-5
        # ... but the noisy clip's cut does: it sees its own clip whole, and only the clips before it
        a, b = m(noisy, clean, t, lengths=LENGTHS), m(noisy, clean, t, lengths=(1, 2, 3, 1))
        assert (a[:, 4:6] - b[:, 4:6]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="sum to the T=7"):
        m.prefill(clean, lengths=(1, 2))
    with pytest.raises(ValueError, match="unequal lengths"):
        _ = full.frames_per_clip


def test_equal_cut_is_the_equal_path_bit_for_bit():
    """lengths=(F,)*K on frames is the same computation as the (B, K, F, N, D) fast path."""
    for attention in ("dense", "mask_aware"):
        m = make_model(attention)
        noisy, clean, t = frames((2, 2, 2))
        with torch.no_grad():
            cut = m(noisy, clean, t, lengths=(2, 2, 2))
            five = m(noisy.unflatten(1, (3, 2)), clean.unflatten(1, (3, 2)), t)
        assert torch.equal(cut, five.flatten(1, 2))


def test_backends_agree_and_loss_trains_on_a_cut():
    noisy, clean, t = frames()
    with torch.no_grad():
        ref = make_model("dense")(noisy, clean, t, lengths=LENGTHS)
        fast = make_model("mask_aware")(noisy, clean, t, lengths=LENGTHS)
    assert (ref - fast).abs().max() <= 1e-5
    m = make_model("mask_aware").train()
    flow = RectifiedFlow()
    loss = flow.loss(m, clean, generator=torch.Generator().manual_seed(0), lengths=LENGTHS)
    loss.backward()
    assert torch.isfinite(loss) and m.inp.weight.grad.abs().sum() > 0
    r = flow.draw(tuple(clean.shape), torch.Generator().manual_seed(0), LENGTHS)
    assert r["t"].shape == (2, 4) and r["noise"].shape == clean.shape


def test_rollout_after_unequal_history_cache_equals_recompute():
    m = make_model()
    _, ctx, _ = frames((1, 3, 2))
    for window in (8, 2):  # 3 context clips + 3 new ones outgrow window 2
        a = rollout(m, ctx, 3, steps=3, window=window, lengths=(1, 3, 2), frames_per_clip=2,
                    generator=torch.Generator().manual_seed(0))
        b = rollout(m, ctx, 3, steps=3, window=window, use_cache=False, lengths=(1, 3, 2), frames_per_clip=2,
                    generator=torch.Generator().manual_seed(0))
        assert a.shape == (2, 6 + 3 * 2, 4, 12)
        assert torch.equal(a[:, :6], ctx)
        assert (a - b).abs().max() <= 1e-5, window


def test_random_cut_stages_parse_and_draw():
    stages = parse_stages("16x1:500,16/1-4:*", 4, 2, 1200)
    assert stages[0] == (16, 1, 500)
    k, cut, n = stages[1]
    assert cut == RandomCut(16, 1, 4) and k == 16 and n == 700
    draws = [cut_at(cut, seed=0, step=s) for s in range(50)]
    assert all(sum(d) == 16 and all(1 <= f <= 4 for f in d) for d in draws)
    assert len(set(draws)) > 10 and len({len(d) for d in draws}) > 2  # random lengths, random clip counts
    assert cut_at(cut, 0, 7) == draws[7]  # a pure function of (seed, step): DDP ranks and resumes agree
    assert [cut_at(cut, 1, s) for s in range(50)] != draws
    tight = RandomCut(10, 3, 4)  # only 3+3+4 orders and 3+...: every draw must stay feasible
    assert all(sorted(tight.draw(random.Random(i))) == [3, 3, 4] for i in range(20))


@pytest.mark.parametrize("spec, match", [
    ("16/4-2:100", "1 <= A <= B <= T"),
    ("16/0-2:100", "1 <= A <= B <= T"),
    ("4/1-8:100", "1 <= A <= B <= T"),
    ("7/3-3:100", "cannot be cut into clips of 3-3"),
    ("16/1-4", "T/A-B:steps"),
    ("16/1:10", "T/A-B:steps"),
    ("16/a-4:10", "T/A-B:steps"),
    ("16/1-4:*,4x2:10", "only the last stage"),
])
def test_bad_stage_strings(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_stages(spec, 4, 2, 100)


def test_train_with_random_cuts_resumes_exactly(tmp_path):
    """The cut is drawn from (seed, step): a run stopped inside a random-cut stage and resumed is bit-exact."""
    from tiny import TINY, assert_same_params

    kw = dict(TINY, steps=5, stages="2x2:1,6/1-3:*", amp="off", ckpt_every=100)
    a = train(out=str(tmp_path / "a"), **kw)
    train(out=str(tmp_path / "b"), stop_after=3, **kw)
    b = train(out=str(tmp_path / "b"), resume=True, **kw)
    assert_same_params(tmp_path / "a" / "last.pt", tmp_path / "b" / "last.pt")
    assert [r["loss"] for r in a.records] == [r["loss"] for r in b.records]
    cuts = [r["frames_per_clip"] for r in a.records[1:]]
    assert all(sum(c) == 6 and all(1 <= f <= 3 for f in c) for c in cuts)
    assert [r["clips"] for r in a.records[1:]] == [len(c) for c in cuts]
