import itertools

import pytest
import torch

from minivgpt.masks import hierarchical_mask, mask_density, mask_from_layout
from minivgpt.sequence import history_layout, rollout_layout, token_layout


def rule(qc, qf, qn, kc, kf, kn):
    """The rule of the hierarchical mask, written independently, one pair at a time."""
    if not qn and not kn:
        return kc < qc or (kc == qc and kf <= qf)
    if qn and not kn:
        return kc < qc
    if qn and kn:
        return kc == qc
    return False


def explicit_ids(K, F, N):
    ids = []
    for k in range(K):
        for noisy in (True, False):
            for f in range(F):
                for p in range(N):
                    ids.append((k, f, p, noisy))
    return ids


@pytest.mark.parametrize("K,F,N", [(1, 1, 1), (2, 1, 3), (3, 2, 2), (2, 3, 1), (4, 2, 4)])
def test_mask_entry_by_entry(K, F, N):
    m = hierarchical_mask(K, F, N)
    ids = explicit_ids(K, F, N)
    assert m.dtype == torch.bool and m.shape == (len(ids), len(ids)) == (2 * K * F * N,) * 2
    for i, j in itertools.product(range(len(ids)), repeat=2):
        qc, qf, _, qn = ids[i]
        kc, kf, _, kn = ids[j]
        assert bool(m[i, j]) == rule(qc, qf, qn, kc, kf, kn), (ids[i], ids[j])


def test_invariants():
    K, F, N = 4, 2, 3
    m = hierarchical_mask(K, F, N)
    lay = token_layout(K, F, N)
    noisy, clip = lay.is_noisy, lay.clip
    assert not m[~noisy][:, noisy].any(), "a clean token sees a noisy one"
    for k in range(K):
        q = noisy & (clip == k)
        seen = m[q].any(dim=0)
        allowed = (~noisy & (clip < k)) | (noisy & (clip == k))
        assert torch.equal(seen, allowed), f"noisy clip {k} sees more or less than clean clips < k and itself"
        assert m[q][:, noisy & (clip == k)].all(), "noisy clip is not bidirectional inside"
    assert m.diagonal().all()


def test_drop_last_clean_is_a_crop():
    K, F, N = 3, 2, 2
    full = hierarchical_mask(K, F, N)
    L = full.shape[0]
    dropped = mask_from_layout(token_layout(K, F, N, drop_last_clean=True))
    assert torch.equal(dropped, full[: L - F * N, : L - F * N])


def test_variable_clip_lengths():
    m = hierarchical_mask(3, [1, 3, 2], 2)
    lay = token_layout(3, [1, 3, 2], 2)
    assert m.shape == (2 * 6 * 2,) * 2
    assert lay.time.max().item() == 5
    for i, j in itertools.product(range(len(lay)), repeat=2):
        expect = rule(lay.clip[i].item(), lay.frame[i].item(), lay.is_noisy[i].item(),
                      lay.clip[j].item(), lay.frame[j].item(), lay.is_noisy[j].item())
        assert bool(m[i, j]) == expect


def test_rollout_mask():
    W, F, N = 2, 2, 3
    m = mask_from_layout(rollout_layout(W, F, N))
    assert m[-F * N :].all(), "the noisy clip sees the whole clean history and itself"
    assert not m[: -F * N, -F * N :].any(), "a clean history token sees the noisy clip"


def test_history_mask_is_the_clean_block_of_the_training_mask():
    """What prefill/append compute equals what the clean copies compute in training (the cache is exact)."""
    K, F, N = 3, 2, 2
    full, lay = hierarchical_mask(K, F, N), token_layout(K, F, N)
    clean = ~lay.is_noisy
    hist = mask_from_layout(history_layout(K, F, N))
    assert torch.equal(hist, full[clean][:, clean])
    assert not full[clean][:, ~clean].any()
    # frame-causal: token (clip a, frame f) sees (clip b, frame g) iff b*F + g <= a*F + f
    t = history_layout(K, F, N).time
    assert torch.equal(hist, t[None, :] <= t[:, None])


def test_density_known_value():
    # K=1: noisy block full (FN^2) + clean frame-causal (N^2 * F(F+1)/2)
    F, N = 2, 3
    expect = (F * N) ** 2 + N * N * F * (F + 1) // 2
    assert mask_density(1, F, N) == pytest.approx(expect / (2 * F * N) ** 2)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_clips"):
        hierarchical_mask(0, 2, 2)
    with pytest.raises(ValueError, match="has 2 entries but num_clips=3"):
        hierarchical_mask(3, [1, 2], 2)
