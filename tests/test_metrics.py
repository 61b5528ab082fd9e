import math

import pytest
import torch

from minivgpt import metrics as M

try:  # only the cross-checks need torchmetrics; every other test here runs without it
    import torchmetrics.functional.image as tm
except ImportError:  # pragma: no cover
    tm = None
needs_torchmetrics = pytest.mark.skipif(tm is None, reason="cross-check against torchmetrics (not installed)")


def _rand_video(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g) * 2 - 1


def _structured(B=2, T=3, C=3, H=24, W=20, seed=0):
    """Smooth gradients plus squares plus a little noise: SSIM far from 0 and from 1."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    v = torch.zeros(B, T, C, H, W)
    for b in range(B):
        for t in range(T):
            for c in range(C):
                v[b, t, c] = 0.6 * torch.sin(3 * xx + t + c) * yy
                r, s = 3 + 2 * t, 4 + b + c
                v[b, t, c, r : r + 6, s : s + 6] = 0.9
    return (v + 0.05 * torch.randn(v.shape, generator=g)).clamp(-1, 1)


# --- mse / psnr ------------------------------------------------------------------------------------------


def test_mse_scalar_and_per_frame():
    x, y = _rand_video(2, 3, 1, 8, 8, seed=1), _rand_video(2, 3, 1, 8, 8, seed=2)
    per = M.mse(x, y, reduction="none")
    assert M.mse(x, y).shape == () and per.shape == (2, 3)
    torch.testing.assert_close(per.mean(), M.mse(x, y))
    torch.testing.assert_close(per[1, 2], ((x[1, 2] - y[1, 2]) ** 2).mean())
    with pytest.raises(ValueError):
        M.mse(x, y[:, :2])


def test_psnr_hand_formula():
    x = _rand_video(2, 3, 3, 8, 8, seed=3)
    y = x + 0.1  # MSE = 0.01 -> 10 log10(4 / 0.01)
    assert M.psnr(x, y).item() == pytest.approx(10 * math.log10(400), abs=1e-4)
    z = _rand_video(2, 3, 3, 8, 8, seed=4)
    expect = 10 * torch.log10(4.0 / ((x - z) ** 2).mean(dim=(-3, -2, -1)))
    torch.testing.assert_close(M.psnr(x, z, reduction="none"), expect)
    assert M.psnr(x, z, data_range=1.0).item() == pytest.approx(
        10 * math.log10(1 / M.mse(x, z).item()), abs=1e-4
    )
    assert torch.isfinite(M.psnr(x, x))


# --- ssim ------------------------------------------------------------------------------------------------


@needs_torchmetrics
@pytest.mark.parametrize("make", ["random", "structured"])
@pytest.mark.parametrize("C", [1, 3])
def test_ssim_matches_torchmetrics(make, C):
    if make == "random":
        x, y = _rand_video(2, 3, C, 16, 20, seed=5), _rand_video(2, 3, C, 16, 20, seed=6)
        y = (0.5 * x + 0.5 * y).clamp(-1, 1)
    else:
        x, y = _structured(C=C, seed=1), _structured(C=C, seed=2)
    ours = M.ssim(x, y, reduction="none")
    ref = tm.structural_similarity_index_measure(
        x.flatten(0, 1),
        y.flatten(0, 1),
        gaussian_kernel=True,
        sigma=1.5,
        kernel_size=11,
        data_range=2.0,
        k1=0.01,
        k2=0.03,
        reduction="none",
    )
    assert ours.shape == (2, 3)
    torch.testing.assert_close(ours.flatten(), ref, atol=1e-4, rtol=0)
    torch.testing.assert_close(M.ssim(x, y), ref.mean(), atol=1e-4, rtol=0)
    assert 0.05 < ref.mean() < 0.98  # a non-trivial comparison


@needs_torchmetrics
def test_ssim_valid_padding_is_the_interior_of_the_full_map():
    x, y = _structured(seed=3), _structured(seed=4)
    _, full = tm.structural_similarity_index_measure(
        x.flatten(0, 1), y.flatten(0, 1), data_range=2.0, reduction="none", return_full_image=True
    )
    ref = full[..., 5:-5, 5:-5].mean(dim=(1, 2, 3))
    ours = M.ssim(x, y, padding="valid", reduction="none").flatten()
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)
    assert M.ssim_map(x, y, padding="valid").shape == (2, 3, 3, 24 - 10, 20 - 10)


def test_ssim_identity_shapes_and_window():
    x = _structured()
    assert M.ssim(x, x).item() == pytest.approx(1.0, abs=1e-6)
    assert M.ssim(x[0], x[0], reduction="none").shape == (3,)
    assert M.ssim(x, x, window=7).item() == pytest.approx(1.0, abs=1e-6)
    assert M.ssim(x, (x + 0.2 * torch.randn(x.shape)).clamp(-1, 1)).item() < 0.9
    w = M.gaussian_window(7)
    assert w.shape == (7, 7) and w.sum().item() == pytest.approx(1.0) and w.argmax().item() == 24
    with pytest.raises(ValueError):
        M.ssim(x[..., :8, :8], x[..., :8, :8], padding="valid")


# --- motion metrics --------------------------------------------------------------------------------------


def _square_video(cols, T=None, H=16, W=16, row=0, size=4, C=1):
    """Video (T, C, H, W), background -1, a size x size square (value 1) at column cols[t] (None = absent)."""
    T = T or len(cols)
    v = -torch.ones(T, C, H, W)
    for t, c in enumerate(cols):
        if c is not None:
            v[t, :, row : row + size, c : c + size] = 1.0
    return v


def test_motion_masks():
    v = _square_video([0, 4])
    m = M.motion_masks(v[None])
    assert m.shape == (1, 1, 16, 16) and m.dtype == torch.bool
    assert m.sum() == 32 and m[0, 0, :4, :8].all()
    assert M.motion_masks(v).shape == (1, 16, 16)
    # max over channels: a change in one channel counts; below the threshold does not
    w = -torch.ones(2, 3, 8, 8)
    w[1, 2, 0, 0] = 0.0
    w[1, 0, 5, 5] = -0.95
    m = M.motion_masks(w, threshold=0.1)
    assert m[0, 0, 0] and m.sum() == 1
    with pytest.raises(ValueError):
        M.motion_masks(v[:1])


def test_motion_iou_identical_is_one():
    v = _square_video([0, 3, 6, 9])[None]
    assert M.spatial_iou(v, v).item() == 1.0
    assert M.spatiotemporal_iou(v, v).item() == 1.0
    assert M.weighted_spatial_iou(v, v).item() == 1.0
    assert M.motion_mse(v, v).item() == 0.0


def test_motion_iou_disjoint_is_zero():
    a = _square_video([0, 4], row=0)
    b = _square_video([0, 4], row=8)
    assert M.spatial_iou(a, b).item() == 0.0
    assert M.spatiotemporal_iou(a, b).item() == 0.0
    assert M.weighted_spatial_iou(a, b).item() == 0.0


def test_motion_iou_partial_overlap_exact():
    target = _square_video([0, 4])  # moves over columns 0..7 (rows 0..3): 32 pixels
    pred = _square_video([4, 8])  # moves over columns 4..11: 32 pixels, 16 shared
    assert M.spatial_iou(pred, target).item() == pytest.approx(16 / 48)
    assert M.spatiotemporal_iou(pred, target).item() == pytest.approx(16 / 48)
    assert M.weighted_spatial_iou(pred, target).item() == pytest.approx(16 / 48)


def test_motion_iou_timing_and_frequency():
    # same place, different time: spatially perfect, spatiotemporally disjoint
    target = _square_video([None, 0, 0])  # appears at step 1
    pred = _square_video([None, None, 0])  # appears at step 2
    assert M.spatial_iou(pred, target).item() == 1.0
    assert M.spatiotemporal_iou(pred, target).item() == 0.0
    assert M.weighted_spatial_iou(pred, target).item() == 1.0  # both move 1 of 2 steps there
    # flicker (moves at both steps) against moving once
    target = _square_video([0, None, 0])
    pred = _square_video([0, None, None])
    assert M.spatial_iou(pred, target).item() == 1.0
    assert M.spatiotemporal_iou(pred, target).item() == pytest.approx(16 / 32)
    assert M.weighted_spatial_iou(pred, target).item() == pytest.approx(0.5 * 16 / (1.0 * 16))


def test_motion_empty_convention_and_batch_mean():
    still = -torch.ones(2, 1, 16, 16)
    moving = _square_video([0, 4])
    assert M.spatial_iou(still, still).item() == 1.0
    assert M.spatiotemporal_iou(still, still + 0.5).item() == 1.0
    assert M.weighted_spatial_iou(still, still).item() == 1.0
    assert M.motion_mse(still, still + 0.5).item() == 0.0
    assert M.spatial_iou(still, moving).item() == 0.0
    batch_p = torch.stack([moving, _square_video([0, 4], row=8)])
    batch_t = torch.stack([moving, moving])
    assert M.spatial_iou(batch_p, batch_t).item() == pytest.approx(0.5)


def test_motion_mse_exact():
    target = _square_video([0, 4])
    pred = -torch.ones_like(target)  # static
    # region: 32 moving pixels; at each, the error is 4 in exactly one of the 2 frames -> mean 2
    assert M.motion_mse(pred, target).item() == pytest.approx(2.0)
    assert M.mse(pred, target).item() == pytest.approx(2 * 16 * 4 / (2 * 256))
    d = M.motion_metrics(pred, target)
    assert set(d) == {"spatial_iou", "spatiotemporal_iou", "weighted_spatial_iou", "motion_mse"}
    assert d["spatial_iou"] == 0.0 and d["motion_mse"] == pytest.approx(2.0)
    assert all(isinstance(v, float) for v in d.values())


# --- baselines and forecast evaluation -------------------------------------------------------------------


def test_copy_last():
    ctx = _rand_video(2, 3, 3, 8, 8, seed=7)
    out = M.copy_last(ctx, 5)
    assert out.shape == (2, 5, 3, 8, 8)
    assert torch.equal(out, ctx[:, -1:].expand(-1, 5, -1, -1, -1))
    assert M.copy_last(ctx[0], 2).shape == (2, 3, 8, 8)


def test_linear_extrapolation_exact_on_a_ramp():
    g = torch.Generator().manual_seed(8)
    a = torch.rand(2, 1, 3, 8, 8, generator=g) - 0.5
    b = (torch.rand(2, 1, 3, 8, 8, generator=g) - 0.5) * 0.2
    t = torch.arange(7.0).view(1, 7, 1, 1, 1)
    video = a + b * t  # linear in time, some pixels leave [-1, 1] by the end
    ctx, truth = video[:, :3], video[:, 3:]
    out = M.linear_extrapolation(ctx, 4)
    assert out.shape == (2, 4, 3, 8, 8)
    torch.testing.assert_close(out, truth.clamp(-1, 1), atol=1e-6, rtol=0)
    assert (truth.abs() > 1).any() and out.abs().max() <= 1
    torch.testing.assert_close(M.linear_extrapolation(ctx[:, -1:], 2), M.copy_last(ctx, 2))
    assert M.linear_extrapolation(ctx[0], 2).shape == (2, 3, 8, 8)


def test_evaluate_forecast():
    truth = torch.stack([_square_video([0, 2, 4, 6, 8, 10])] * 2)  # (2, 6, 1, 16, 16)
    ctx, future = truth[:, :3], truth[:, 3:]
    perfect = M.evaluate_forecast(future, future, context=ctx)
    assert set(perfect) == {"mse", "psnr", "ssim", "motion_iou"}
    assert perfect["mse"] == 0.0 and perfect["ssim"] == pytest.approx(1.0) and perfect["motion_iou"] == 1.0
    assert all(isinstance(v, float) for v in perfect.values())
    copy = M.evaluate_forecast(M.copy_last(ctx, 3), future, context=ctx)
    assert copy["motion_iou"] == 0.0 and copy["mse"] > 0 and copy["ssim"] < 1
    lin = M.evaluate_forecast(M.linear_extrapolation(ctx, 3), future)
    assert set(lin) == set(perfect)


def test_ratio_interval_exact_cases_and_repeatability():
    den = torch.rand(50, generator=torch.Generator().manual_seed(0)) + 0.1
    assert M.ratio_interval(2 * den, den) == pytest.approx((2.0, 2.0))  # a constant ratio: no spread at all
    num = den + 0.2 * torch.randn(50, generator=torch.Generator().manual_seed(1))
    low, high = M.ratio_interval(num, den, seed=3)
    assert low < float(num.sum() / den.sum()) < high
    assert M.ratio_interval(num, den, seed=3) == (low, high)  # repeatable from its seed
    low50, high50 = M.ratio_interval(num, den, level=0.5, seed=3)
    assert low < low50 < high50 < high  # a smaller share of the resamples, a narrower interval inside the wider one


def test_ratio_interval_matches_the_delta_method_and_narrows_with_more_samples():
    # paired per-video errors with a known spread: num = r * den + noise, r = 0.8
    g = torch.Generator().manual_seed(0)

    def width(n):
        den = 1 + torch.rand(n, generator=g)
        num = 0.8 * den + 0.3 * torch.randn(n, generator=g)
        low, high = M.ratio_interval(num, den, level=0.9, draws=4000)
        resid = num - num.sum() / den.sum() * den  # the delta method: sd of the ratio = sd(resid) / (sqrt(n) mean(den))
        return high - low, 2 * 1.645 * float(resid.std() / (n**0.5 * den.mean()))

    w64, d64 = width(64)
    w1024, d1024 = width(1024)
    assert w64 == pytest.approx(d64, rel=0.2) and w1024 == pytest.approx(d1024, rel=0.2)
    assert w1024 < w64 / 3  # 16x the videos: a quarter of the width


def test_ratio_interval_rejects_bad_input():
    x = torch.ones(8)
    with pytest.raises(ValueError, match="paired 1-D"):
        M.ratio_interval(x, torch.ones(7))
    with pytest.raises(ValueError, match="paired 1-D"):
        M.ratio_interval(torch.ones(2, 4), torch.ones(2, 4))
    with pytest.raises(ValueError, match="at least 2"):
        M.ratio_interval(torch.ones(1), torch.ones(1))
    with pytest.raises(ValueError, match="level"):
        M.ratio_interval(x, x, level=1.0)
    with pytest.raises(ValueError, match="draws"):
        M.ratio_interval(x, x, draws=0)
    with pytest.raises(ValueError, match="positive sum"):
        M.ratio_interval(x, torch.zeros(8))


# --- retrieval -------------------------------------------------------------------------------------------


def test_recall_at_k_known_matrix():
    sim = torch.tensor(
        [
            [0.9, 0.1, 0.2, 0.0],  # correct item ranked 1st
            [0.8, 0.5, 0.7, 0.1],  # 3rd
            [0.1, 0.2, 0.3, 0.4],  # 2nd
        ]
    )
    assert M.recall_at_k(sim, 1).item() == pytest.approx(1 / 3)
    assert M.recall_at_k(sim, 2).item() == pytest.approx(2 / 3)
    assert M.recall_at_k(sim, 3).item() == pytest.approx(1.0)
    r = M.retrieval_recalls(sim, ks=(1, 2, 10))
    assert r == pytest.approx({"R@1": 1 / 3, "R@2": 2 / 3, "R@10": 1.0})
    # ties count against the query
    flat = torch.ones(4, 4)
    assert M.recall_at_k(flat, 1).item() == 0.0 and M.recall_at_k(flat, 4).item() == 1.0
    assert M.recall_at_k(torch.eye(5), 1).item() == 1.0
    with pytest.raises(ValueError):
        M.recall_at_k(torch.rand(5, 3), 1)


# --- Frechet distance ------------------------------------------------------------------------------------


def _exact_samples(n, mean, std, seed=0):
    """n samples (n, D) whose sample mean is ``mean`` and unbiased covariance is ``diag(std^2)`` exactly."""
    g = torch.Generator().manual_seed(seed)
    D = len(mean)
    q, _ = torch.linalg.qr(torch.cat([torch.ones(n, 1), torch.randn(n, D, generator=g)], 1).double())
    z = q[:, 1:] * math.sqrt(n - 1)  # orthogonal to ones (mean 0) and to each other (cov identity)
    return torch.tensor(mean, dtype=torch.float64) + z * torch.tensor(std, dtype=torch.float64)


def test_frechet_identical_is_zero():
    a = torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
    assert abs(M.frechet_distance(a, a).item()) < 1e-8
    assert M.frechet_distance(a, a).dtype == torch.float64


def test_frechet_one_dimensional_closed_form():
    a = _exact_samples(40, [0.5], [2.0], seed=1)
    b = _exact_samples(60, [-1.0], [0.5], seed=2)
    expect = (0.5 + 1.0) ** 2 + (2.0 - 0.5) ** 2
    assert M.frechet_distance(a, b).item() == pytest.approx(expect, abs=1e-9)


def test_frechet_diagonal_closed_form_and_symmetry():
    mu_a, mu_b = [0.0, 1.0, -2.0], [1.0, 1.0, 0.0]
    s_a, s_b = [1.0, 2.0, 0.5], [3.0, 1.0, 0.5]
    a, b = _exact_samples(30, mu_a, s_a, seed=3), _exact_samples(45, mu_b, s_b, seed=4)
    expect = sum((x - y) ** 2 for x, y in zip(mu_a, mu_b)) + sum((x - y) ** 2 for x, y in zip(s_a, s_b))
    assert M.frechet_distance(a, b).item() == pytest.approx(expect, abs=1e-9)
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(80, 6, generator=g), torch.randn(50, 6, generator=g) @ torch.randn(6, 6, generator=g)
    assert M.frechet_distance(x, y).item() == pytest.approx(M.frechet_distance(y, x).item(), abs=1e-9)
    assert M.frechet_distance(x, y).item() > 0


def test_frechet_matches_torchmetrics_fid_formula():
    fid = pytest.importorskip("torchmetrics.image.fid")
    g = torch.Generator().manual_seed(6)
    x = torch.randn(100, 5, generator=g).double()
    y = (torch.randn(70, 5, generator=g) @ torch.randn(5, 5, generator=g) + 0.3).double()
    ref = fid._compute_fid(x.mean(0), torch.cov(x.T), y.mean(0), torch.cov(y.T))
    assert M.frechet_distance(x, y).item() == pytest.approx(ref.item(), rel=1e-6)


def test_frechet_rank_deficient_is_stable():
    g = torch.Generator().manual_seed(7)
    a = torch.randn(5, 16, generator=g)  # covariance of rank 4 in 16 dims
    b = torch.randn(6, 16, generator=g)
    d = M.frechet_distance(a, b)
    assert torch.isfinite(d) and d.item() > 0
    assert abs(M.frechet_distance(a, a).item()) < 1e-6


def test_static_background_removes_a_moving_object():
    from minivgpt.metrics import static_background

    ctx = -torch.ones(1, 5, 1, 4, 4)
    for t in range(5):
        ctx[0, t, 0, 0, t % 4] = 1.0  # a dot that moves every frame
    bg = static_background(ctx, 3)
    assert bg.shape == (1, 3, 1, 4, 4) and torch.equal(bg, -torch.ones_like(bg))


def _moving_square(dx: int, T: int = 5, size: int = 24) -> torch.Tensor:
    """A 3x3 white square on black moving dx pixels per frame: (1, T, 3, size, size)."""
    video = -torch.ones(1, T, 3, size, size)
    for t in range(T):
        x = 6 + dx * t
        video[0, t, :, 5:8, x : x + 3] = 1.0
    return video


def test_horizontal_drift_exact_on_a_moving_square():
    right, left, still = _moving_square(2), _moving_square(-1), _moving_square(0)
    d = M.horizontal_drift(torch.cat([right, left, still]))
    assert d.tolist() == [8.0, -4.0, 0.0]  # (T - 1) * dx, also for a square that moves less than its size
    empty = M.horizontal_drift(-torch.ones(1, 4, 3, 8, 8))
    assert torch.isnan(empty).all()  # no foreground: no direction


def test_foreground_area_counts_object_pixels():
    square = _moving_square(2)  # one 3x3 square per frame
    two = square.clone()
    two[0, :, :, 15:18, 15:18] = 1.0  # a second, still square
    area = M.foreground_area(torch.cat([square, two, -torch.ones_like(square)]))
    assert area.shape == (3, 5)
    assert area[0].tolist() == [9.0] * 5 and area[1].tolist() == [18.0] * 5 and area[2].tolist() == [0.0] * 5
    with pytest.raises(TypeError, match="floating-point"):
        M.foreground_area(torch.zeros(1, 3, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="B, T, C, H, W"):
        M.foreground_area(torch.zeros(3, 3, 8, 8))


def test_object_count_counts_components_and_ignores_specks():
    square = _moving_square(2)  # one 3x3 square per frame
    scene = square.clone()
    scene[0, :, :, 15:18, 15:18] = 1.0  # a second, still square
    scene[0, :, :, 0, 15] = 1.0  # a one-pixel speck
    touching = square.clone()
    touching[0, :, :, 5:8, 9:15] = 1.0  # a bar that touches the moving square in every frame
    n = M.object_count(torch.cat([square, scene, -torch.ones_like(square), touching]))
    assert n.shape == (4, 5) and n.dtype == torch.long
    assert n[0].tolist() == [1] * 5 and n[1].tolist() == [2] * 5 and n[2].tolist() == [0] * 5
    assert n[3].tolist() == [1] * 5  # objects that touch are one
    assert M.object_count(scene, min_pixels=1)[0].tolist() == [3] * 5  # the speck counts when allowed
    with pytest.raises(ValueError, match="min_pixels"):
        M.object_count(square, min_pixels=0)


def test_horizontal_drift_reads_the_bouncing_balls_drift_label():
    from minivgpt.data import BouncingBalls, video_batch

    ds = BouncingBalls(64, 8, 32, 1, 3, seed=5)
    batch = video_batch(ds, range(64))
    agree = ((M.horizontal_drift(batch["video"]) > 0).long() == batch["label"] % 2).float().mean()
    assert agree >= 0.9, f"the pixel drift should agree with the label's (0.95-0.98 measured), got {agree:.2f}"


def test_horizontal_drift_rejects_bad_input():
    with pytest.raises(ValueError, match="T >= 2"):
        M.horizontal_drift(torch.zeros(1, 1, 3, 8, 8))
    with pytest.raises(TypeError, match="floating-point"):
        M.horizontal_drift(torch.zeros(1, 3, 3, 8, 8, dtype=torch.uint8))
