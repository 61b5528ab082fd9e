import pytest
import torch

from minivgpt.clips import clips_to_video, patchify, unpatchify, video_to_clips
from minivgpt.sequence import deinterleave, interleave


def test_video_to_clips_round_trip():
    v = torch.randn(2, 12, 3, 8, 8)
    c = video_to_clips(v, 3)
    assert c.shape == (2, 4, 3, 3, 8, 8)
    assert torch.equal(c[:, 1, 2], v[:, 5])  # clip 1, frame 2 is frame 1*3+2
    assert torch.equal(clips_to_video(c), v)


def test_video_to_clips_rejects_bad_sizes():
    with pytest.raises(ValueError, match="frames_per_clip=5 does not divide the video length T=12"):
        video_to_clips(torch.zeros(1, 12, 3, 8, 8), 5)
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\)"):
        video_to_clips(torch.zeros(12, 3, 8, 8), 2)


def test_patchify_layout_and_round_trip():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)  # (B, C, H, W)
    t = patchify(x, 2)
    assert t.shape == (2, 6, 12)  # N = (4/2)(6/2), D = 3*2*2
    # token 1 is the patch at row 0, column 1; its first entries are channel 0, rows 0..1, cols 2..3
    assert torch.equal(t[0, 1, :4], x[0, 0, 0:2, 2:4].reshape(-1))
    assert torch.equal(unpatchify(t, 2, 4, 6), x)
    clips = torch.randn(2, 3, 2, 4, 8, 8)
    assert torch.equal(unpatchify(patchify(clips, 4), 4, 8, 8), clips)


def test_patchify_rejects_non_dividing_patch():
    with pytest.raises(ValueError, match="patch_size=3 must divide the frame size H=8, W=8"):
        patchify(torch.zeros(1, 3, 8, 8), 3)
    with pytest.raises(ValueError, match="do not fit"):
        unpatchify(torch.zeros(1, 5, 12), 2, 4, 4)


def test_interleave_order_and_inverse():
    B, K, F, N, D = 2, 3, 2, 4, 5
    noisy, clean = torch.randn(B, K, F, N, D), torch.randn(B, K, F, N, D)
    seq = interleave(noisy, clean)
    assert seq.shape == (B, 2 * K * F * N, D)
    FN = F * N
    for k in range(K):
        assert torch.equal(seq[:, 2 * k * FN : (2 * k + 1) * FN], noisy[:, k].reshape(B, FN, D))
        assert torch.equal(seq[:, (2 * k + 1) * FN : (2 * k + 2) * FN], clean[:, k].reshape(B, FN, D))
    n2, c2 = deinterleave(seq, K, F)
    assert torch.equal(n2, noisy) and torch.equal(c2, clean)


def test_interleave_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        interleave(torch.zeros(1, 2, 2, 4, 3), torch.zeros(1, 3, 2, 4, 3))
