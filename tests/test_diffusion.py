import torch

from minivgpt.config import ModelConfig
from minivgpt.diffusion import RectifiedFlow, add_noise, velocity
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


def test_guidance_formula():
    flow = RectifiedFlow()
    x0 = torch.zeros(3, 2)
    cond = lambda x, t: torch.ones_like(x)  # noqa: E731
    uncond = lambda x, t: torch.zeros_like(x)  # noqa: E731
    out = flow.sample(cond, x0, steps=1, cfg_scale=1.5, denoise_uncond=uncond)
    assert torch.allclose(out, torch.full_like(x0, 1.5))


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
