import pytest
import torch

from minivgpt.sequence import (
    TokenLayout,
    clip_lengths,
    history_layout,
    interleave,
    layout_from_segments,
    rollout_layout,
    token_layout,
)


def explicit_ids(K, F, N):
    """(clip, frame, patch, noisy) of every position of the training sequence, written out in loops."""
    return [(k, f, p, noisy) for k in range(K) for noisy in (True, False) for f in range(F) for p in range(N)]


def rows(lay: TokenLayout) -> list[tuple]:
    cols = (lay.clip, lay.frame, lay.time, lay.patch, lay.is_noisy)
    return list(zip(*(c.tolist() for c in cols)))


def test_training_layout_matches_order():
    K, F, N = 3, 2, 4
    lay = token_layout(K, F, N)
    ids = explicit_ids(K, F, N)
    assert len(lay) == 2 * K * F * N == len(ids)
    assert lay.clip.tolist() == [i[0] for i in ids]
    assert lay.frame.tolist() == [i[1] for i in ids]
    assert lay.patch.tolist() == [i[2] for i in ids]
    assert lay.is_noisy.tolist() == [i[3] for i in ids]
    assert lay.time.tolist() == [i[0] * F + i[1] for i in ids]


def test_layout_follows_interleave():
    """Position i of ``interleave`` holds the token the layout names (clip, copy, frame, patch)."""
    K, F, N = 2, 3, 2
    idx = torch.arange(K * F * N).reshape(1, K, F, N, 1).float()  # token value = its (k, f, p) index
    seq = interleave(idx, idx + 1000)[0, :, 0]
    lay = token_layout(K, F, N)
    expect = (lay.clip * F + lay.frame) * N + lay.patch + 1000 * (~lay.is_noisy)
    assert torch.equal(seq.long(), expect)


def test_noisy_and_clean_copies_share_time():
    K, F, N = 3, 2, 2
    lay = token_layout(K, F, N)
    for k in range(K):
        noisy = lay.time[(lay.clip == k) & lay.is_noisy]
        clean = lay.time[(lay.clip == k) & ~lay.is_noisy]
        assert torch.equal(noisy, clean)
        assert noisy.unique().tolist() == list(range(k * F, (k + 1) * F))


def test_drop_last_clean_leaves_out_the_last_copy():
    K, F, N = 3, 2, 2
    full, short = token_layout(K, F, N), token_layout(K, F, N, drop_last_clean=True)
    assert rows(short) == rows(full)[: -F * N]
    assert rows(full)[-F * N :] == [(K - 1, f, (K - 1) * F + f, p, False) for f in range(F) for p in range(N)]


@pytest.mark.parametrize("frames", [2, [1, 3, 2]])
def test_history_layout_is_the_clean_part_of_the_training_layout(frames):
    K, N = 3, 2
    full = token_layout(K, frames, N)
    hist = history_layout(K, frames, N)
    assert not hist.is_noisy.any()
    assert rows(hist) == [r for r in rows(full) if not r[4]]


@pytest.mark.parametrize("frames", [2, [1, 3, 2]])
def test_rollout_layout_is_history_then_noisy_clip(frames):
    W, N = 2, 3
    lay = rollout_layout(W, frames, N)
    F_last = frames if isinstance(frames, int) else frames[-1]
    assert rows(lay)[: -F_last * N] == rows(history_layout(W, frames if isinstance(frames, int) else frames[:W], N))
    noisy = token_layout(W + 1, frames, N)
    assert rows(lay)[-F_last * N :] == [r for r in rows(noisy) if r[4] and r[0] == W]


def test_unequal_clip_lengths():
    lengths = [1, 3, 2]
    lay = token_layout(3, lengths, 2)
    assert len(lay) == 2 * sum(lengths) * 2
    starts = [0, 1, 4]
    for k, F in enumerate(lengths):
        sel = lay.clip == k
        assert sel.sum() == 2 * F * 2
        assert lay.frame[sel].max() == F - 1
        assert lay.time[sel].unique().tolist() == list(range(starts[k], starts[k] + F))
    assert clip_lengths(3, lengths) == lengths and clip_lengths(2, 4) == [4, 4]


def test_layout_slice_and_device():
    lay = rollout_layout(2, 2, 3)
    tail = lay[-6:]
    assert isinstance(tail, TokenLayout) and len(tail) == 6 and tail.is_noisy.all()
    assert rows(lay.to("cpu")) == rows(lay)
    with pytest.raises(TypeError, match="slice"):
        lay[0]


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="num_clips >= 1"):
        token_layout(0, 2, 2)
    with pytest.raises(ValueError, match="num_clips >= 1"):
        history_layout(2, [2, 0], 2)
    with pytest.raises(ValueError, match="has 2 entries but num_clips=3"):
        token_layout(3, [1, 2], 2)
    with pytest.raises(ValueError, match="has 2 entries but num_clips=3"):
        rollout_layout(2, [1, 2], 2)  # W = 2 history clips + the noisy one
    with pytest.raises(ValueError, match="tokens_per_frame"):
        history_layout(2, 2, 0)
    with pytest.raises(ValueError, match="segment of clip 2"):
        layout_from_segments([(2, True)], [1, 1], 2)
