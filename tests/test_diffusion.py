import pytest
import torch

from minivgpt.config import ModelConfig
from minivgpt.diffusion import (
    RectifiedFlow,
    add_noise,
    ddim_step,
    precondition,
    time_grid,
    velocity,
    velocity_weight,
)
from minivgpt.model import VideoGPT


def test_add_noise_endpoints_and_per_clip_t():
    x, n = torch.randn(2, 3, 2, 4, 5), torch.randn(2, 3, 2, 4, 5)
    t = torch.tensor([[1.0, 0.0, 0.5], [0.25, 1.0, 0.0]])
    xt = add_noise(x, t, n)
    assert torch.equal(xt[0, 0], x[0, 0]) and torch.equal(xt[0, 1], n[0, 1])
    assert torch.allclose(xt[1, 0], 0.25 * x[1, 0] + 0.75 * n[1, 0])


def test_velocity_recovers_straight_path():
    x, n = torch.randn(4, 6), torch.randn(4, 6)
    t = torch.rand(4) * 0.9
    xt = t[:, None] * x + (1 - t[:, None]) * n
    assert torch.allclose(velocity(xt, x, t), x - n, atol=1e-5)


def test_sampler_with_optimal_predictor_reproduces_gaussian():
    """With the exact posterior mean E[x | x_t] of a 1-D Gaussian target, Euler sampling lands on it."""
    mu, s = 1.5, 0.4

    def optimal(x_t, t):
        t = t[:, None]
        return mu + t * s**2 / (t**2 * s**2 + (1 - t) ** 2) * (x_t - t * mu)

    g = torch.Generator().manual_seed(0)
    noise = torch.randn(200_000, 1, generator=g, dtype=torch.float64)
    out = RectifiedFlow().sample(optimal, noise, steps=200)
    assert abs(out.mean().item() - mu) < 0.01
    assert abs(out.std().item() - s) < 0.01
    # few Euler steps are biased (here the spread); the error shrinks as steps grow
    err = [abs(RectifiedFlow().sample(optimal, noise, steps=n).std().item() - s) for n in (4, 16, 64)]
    assert err[0] > err[1] > err[2]


def test_stochastic_sampler_with_optimal_predictor_reproduces_gaussian():
    """Redrawing a share of the noise at every step (eta > 0) keeps the marginals: with the exact posterior
    mean of a 1-D Gaussian, the ancestral sampler lands on it too, on an even and on a shifted grid."""
    mu, s = -0.5, 0.3

    def optimal(x_t, t):
        t = t[:, None]
        return mu + t * s**2 / (t**2 * s**2 + (1 - t) ** 2) * (x_t - t * mu)

    noise = torch.randn(200_000, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for eta, shift in ((1.0, 1.0), (0.5, 3.0)):
        out = RectifiedFlow().sample(optimal, noise, steps=200, eta=eta, shift=shift,
                                     generator=torch.Generator().manual_seed(2))
        assert abs(out.mean().item() - mu) < 0.01 and abs(out.std().item() - s) < 0.01, (eta, shift)
    with pytest.raises(ValueError, match="eta"):
        RectifiedFlow().sample(optimal, noise[:4], steps=2, eta=1.5)


def test_ddim_step_without_fresh_noise_is_the_euler_step():
    x_t, pred, fresh = torch.randn(3, 5), torch.randn(3, 5), torch.randn(3, 5)
    t, t_next = 0.3, 0.45
    euler = x_t + (t_next - t) * velocity(x_t, pred, torch.full((3,), t))
    assert torch.allclose(ddim_step(x_t, pred, t, t_next, 0.0, fresh), euler, atol=1e-6)
    # eta = 1 from pure noise redraws all of it: x_t' = t' x̂ + (1 - t') fresh
    assert torch.allclose(ddim_step(x_t, pred, 0.0, t_next, 1.0, fresh), t_next * pred + (1 - t_next) * fresh)
    assert torch.allclose(ddim_step(x_t, pred, t, 1.0, 1.0, fresh), pred)  # the last step lands on x̂


def test_time_grid_even_and_shifted_towards_the_noise():
    assert torch.equal(time_grid(20), torch.linspace(0, 1, 21))
    g = time_grid(10, shift=3.0)
    assert g[0] == 0 and g[-1] == 1 and (g.diff() > 0).all()
    assert g[1] < 0.1 / 2  # a third of the even grid's first step, in noise level: 1 - 3 * 0.9 / 2.8
    assert torch.allclose(g[1], torch.tensor(1 - 2.7 / 2.8))
    with pytest.raises(ValueError, match="shift"):
        time_grid(10, shift=0.0)


def test_logit_normal_location_moves_the_training_times():
    g = torch.Generator().manual_seed(0)
    t = RectifiedFlow(t_sampling="logit_normal", t_location=-1.0).sample_t((100_000,), g)
    assert abs(t.median().item() - torch.sigmoid(torch.tensor(-1.0)).item()) < 0.01
    with pytest.raises(ValueError, match="t_sampling='logit_normal'"):
        RectifiedFlow(t_location=-1.0)


def test_guidance_formula():
    flow = RectifiedFlow()
    x0 = torch.zeros(3, 2)
    cond = lambda x, t: torch.ones_like(x)  # noqa: E731
    uncond = lambda x, t: torch.zeros_like(x)  # noqa: E731
    out = flow.sample(cond, x0, steps=1, cfg_scale=1.5, denoise_uncond=uncond)
    assert torch.allclose(out, torch.full_like(x0, 1.5))


def test_guidance_only_from_cfg_t_min():
    """cfg_t_min=0.5 with 4 Euler steps: the steps from t = 0 and 0.25 are unguided, those from 0.5 and 0.75
    guided (the unconditional branch is called only there); one step from t = 0 is not guided at all."""
    flow = RectifiedFlow()
    seen = []
    cond = lambda x, t: torch.ones_like(x)  # noqa: E731
    def uncond(x, t):
        seen.append(float(t[0]))
        return torch.zeros_like(x)

    out = flow.sample(cond, torch.zeros(2, 3), steps=4, cfg_scale=1.5, denoise_uncond=uncond, cfg_t_min=0.5)
    assert seen == [0.5, 0.75] and torch.allclose(out, torch.full((2, 3), 1.5))
    seen.clear()
    first = flow.sample(cond, torch.zeros(2, 3), steps=1, cfg_scale=1.5, denoise_uncond=uncond, cfg_t_min=0.5)
    assert seen == [] and torch.allclose(first, torch.ones(2, 3))  # the one step starts at t = 0: unguided
    with pytest.raises(ValueError, match="cfg_t_min"):
        flow.sample(cond, torch.zeros(2, 3), steps=1, cfg_scale=1.5, denoise_uncond=uncond, cfg_t_min=1.5)


def test_loss_is_mse_of_the_noisy_predictions_and_draw_slicing():
    flow = RectifiedFlow(history_noise=0.9)
    calls = {}
    x = torch.randn(4, 3, 2, 5, 6)
    err = torch.zeros(3, 1, 1, 1)
    err[1] = 2.0  # wrong by 2 on every token of noisy clip 1, exact elsewhere

    def model(x_t, history, t, t_clean=None):
        calls.update(x_t=x_t, history=history, t=t, t_clean=t_clean)
        return x + err

    r = flow.draw(tuple(x.shape), torch.Generator().manual_seed(1))
    loss = flow.loss(model, x, rand=r)
    assert torch.allclose(loss, torch.tensor(4.0 / 3))  # 2^2 on one clip in three
    assert calls["t_clean"].min() >= 0.9 and calls["t"].shape == (4, 3)
    assert torch.equal(calls["x_t"], add_noise(x, r["t"], r["noise"]))
    assert torch.equal(calls["history"], add_noise(x, r["t_clean"], r["history_noise"]))
    # a slice of the draw is the noise the same samples get in a smaller (per-rank) batch
    full, x = x, x[2:]  # the model now predicts the last two samples
    assert torch.allclose(flow.loss(model, x, rand={k: v[2:] for k, v in r.items()}), torch.tensor(4.0 / 3))
    assert torch.equal(calls["x_t"], add_noise(full[2:], r["t"][2:], r["noise"][2:]))


def _perturb_last_block(model, segments, scale):
    """Forward hook adding random garbage of size ``scale`` to the final hidden states ``(B, S, T, W)`` of
    the given segments (random, not constant: the output LayerNorm would remove a constant shift)."""

    def hook(mod, inp, out):
        h, kv = out
        h = h.clone()
        g = torch.Generator().manual_seed(7)
        h[:, segments] += scale * torch.randn(h[:, segments].shape, generator=g)
        return h, kv

    return model.blocks[-1].register_forward_hook(hook)


def test_loss_ignores_the_clean_segment_outputs_but_not_the_noisy_ones():
    """Garbage in the network's outputs at clean positions leaves the loss bit-identical; at noisy ones not."""
    K = 3
    torch.manual_seed(0)
    model = VideoGPT(ModelConfig(width=32, depth=2, heads=2, attention="dense"), in_dim=6, grid=(1, 5))
    for name, p in model.named_parameters():  # open the adaLN-Zero gates and the output layer
        if "ada" in name or name.startswith("out."):
            torch.nn.init.normal_(p, std=0.05)
    flow = RectifiedFlow(history_noise=0.9)
    x = torch.randn(2, K, 2, 5, 6)
    r = flow.draw(tuple(x.shape), torch.Generator().manual_seed(1))
    ref = flow.loss(model, x, rand=r)
    # segments of the training sequence (last clean copy dropped): noisy_0, clean_0, ..., noisy_{K-1}
    clean_segments, noisy_segments = list(range(1, 2 * K - 1, 2)), list(range(0, 2 * K - 1, 2))
    handle = _perturb_last_block(model, clean_segments, 1e6)
    try:
        assert torch.equal(flow.loss(model, x, rand=r), ref)
    finally:
        handle.remove()
    handle = _perturb_last_block(model, noisy_segments[1:2], 1.0)
    try:
        assert (flow.loss(model, x, rand=r) - ref).abs() > 1e-3
    finally:
        handle.remove()


def test_condition_and_drop_mask_are_passed_to_the_model():
    flow = RectifiedFlow(cond_drop=0.5)
    seen = {}

    def model(x_t, history, t, t_clean=None, **kw):
        seen.clear()
        seen.update(kw)
        return x_t

    x, labels = torch.randn(8, 2, 1, 3, 4), torch.arange(8)
    r = flow.draw(tuple(x.shape), torch.Generator().manual_seed(0))
    assert r["drop"].dtype == torch.bool and 0 < r["drop"].sum() < 8
    flow.loss(model, x, labels, rand=r)
    assert torch.equal(seen["cond"], labels) and torch.equal(seen["drop"], r["drop"])
    flow.loss(model, x[4:], labels[4:], rand={k: v[4:] for k, v in r.items()})
    assert torch.equal(seen["drop"], r["drop"][4:])
    flow.loss(model, x, rand=r)
    assert seen == {}, "without a condition the model gets no cond/drop"


def test_precondition_endpoints_and_optimal_skip():
    """At t = 1 the noisy input passes unchanged, at t = 0 the output is sigma_data * raw; with raw = 0 the
    estimate c_skip x_t is the least-squares linear estimate of zero-mean data of spread sigma_data."""
    g = torch.Generator().manual_seed(0)
    x_t, raw = torch.randn(3, 4, 5, generator=g), torch.randn(3, 4, 5, generator=g)
    t = torch.tensor([[1.0, 0.0, 0.3, 0.8]] * 3)
    out = precondition(x_t, raw, t, sigma_data=0.5)
    assert torch.allclose(out[:, 0], x_t[:, 0]) and torch.allclose(out[:, 1], 0.5 * raw[:, 1])
    s = 0.5
    x, n = s * torch.randn(400_000, generator=g), torch.randn(400_000, generator=g)
    for tv in (0.2, 0.5, 0.9):
        xt = tv * x + (1 - tv) * n
        best = (x * xt).mean() / (xt * xt).mean()  # least squares: x ~ c * x_t
        c_skip = precondition(xt, torch.zeros_like(xt), torch.full_like(xt, tv), s) / xt
        assert abs(c_skip.mean() - best) < 0.01, tv
        # c_out is the spread of that estimate's error: the residual the network learns has unit size
        c_out = precondition(xt, torch.ones_like(xt), torch.full_like(xt, tv), s) - c_skip * xt
        assert abs(((x - c_skip * xt).std() / c_out.mean()) - 1) < 0.01, tv
    # with a mean: the linear estimate is mu + c_skip (x_t - t mu), the posterior mean of Gaussian data
    mu = -0.8
    for tv in (0.2, 0.9):
        xt = tv * (mu + x) + (1 - tv) * n
        est = precondition(xt, torch.zeros_like(xt), torch.full_like(xt, tv), s, mu)
        A = torch.stack([xt, torch.ones_like(xt)], 1)
        best = A @ torch.linalg.lstsq(A, mu + x).solution  # least squares: x ~ a x_t + b
        assert (est - best).abs().max() < 0.02, tv


def test_velocity_weighted_loss_is_the_normalised_velocity_mse():
    """loss_weight="velocity": the weighted clean-prediction error equals the velocity error up to one factor,
    the mean weight, so a perfect model scores 0 and clips near t = 1 count more than with "x"."""
    x = torch.randn(4, 3, 2, 5, 6)
    off = torch.zeros(1, 3, 1, 1, 1)
    off[0, 2] = 1.0  # wrong on clip 2 only

    def model(x_t, history, t, t_clean=None):
        model.x_t, model.t = x_t, t
        return x + off

    r = RectifiedFlow().draw(tuple(x.shape), torch.Generator().manual_seed(3))
    loss_v = RectifiedFlow(loss_weight="velocity").loss(model, x, rand=r)
    w = velocity_weight(r["t"])  # (B, K)
    assert torch.allclose(loss_v, w[:, 2].sum() / w.sum(), atol=1e-6)  # error 1 on clip 2 of each sample
    v_err = (velocity(model.x_t, x + off, model.t) - velocity(model.x_t, x, model.t)).pow(2)
    assert (r["t"] < 0.9).all()  # no weight floored in this draw: the loss is the velocity MSE / mean weight
    assert torch.allclose(loss_v, v_err.mean() / w.mean(), atol=1e-5)
    assert RectifiedFlow(loss_weight="x").loss(lambda *a, **k: x, x, rand=r) == 0
    with pytest.raises(ValueError, match="loss_weight"):
        RectifiedFlow(loss_weight="eps")


def test_edm_run_measures_the_data_moments_and_keeps_them(tmp_path):
    """precond=edm with sigma_data=0: train measures the clean tokens' mean and spread, the run's config
    keeps them, and a loaded run rebuilds the same estimate; a model without them refuses to run."""
    from minivgpt.train import build_dataset, load_run, train

    res = train(steps=2, batch_size=2, width=16, depth=1, heads=2, clips=2, frames_per_clip=1, num_samples=8,
                precond="edm", out=str(tmp_path / "r"), progress=False, threads=1)
    m = res.config.model
    data = build_dataset(res.config, 2, seed=0, split="train")
    pixels = torch.stack([data[i]["video"] for i in range(len(data))])
    assert m.sigma_data > 0 and abs(m.data_mean - pixels.mean().item()) < 1e-3  # identity tokens = pixels
    assert abs(m.sigma_data - pixels.std().item()) < 1e-3
    loaded, _, cfg = load_run(tmp_path / "r")
    assert (cfg.model.sigma_data, cfg.model.data_mean) == (m.sigma_data, m.data_mean)
    with pytest.raises(ValueError, match="sigma_data"):
        VideoGPT(ModelConfig(width=16, depth=1, heads=2, precond="edm"), in_dim=6, grid=(1, 2)).estimate(
            torch.zeros(1, 2, 6), torch.zeros(1, 2, 6), torch.zeros(1))
