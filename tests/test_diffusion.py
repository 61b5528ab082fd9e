import torch

from minivgpt.diffusion import RectifiedFlow, add_noise, velocity


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


def test_loss_only_on_noisy_and_draw_slicing():
    flow = RectifiedFlow(history_noise=0.9)
    calls = {}

    def model(x_t, history, t, t_clean=None, cond=None):
        calls.update(x_t=x_t, history=history, t=t, t_clean=t_clean)
        return torch.zeros_like(x_t)

    x = torch.randn(4, 3, 2, 5, 6)
    r = flow.draw(tuple(x.shape), torch.Generator().manual_seed(1))
    loss = flow.loss(model, x, rand=r)
    assert torch.allclose(loss, x.pow(2).mean())  # predicting 0 costs E[x^2] over the noisy copies
    assert calls["t_clean"].min() >= 0.9 and calls["t"].shape == (4, 3)
    # a slice of the draw is the noise the same samples get in a smaller (per-rank) batch
    half = {k: v[2:] for k, v in r.items()}
    flow.loss(model, x[2:], rand=half)
    assert torch.equal(calls["x_t"], add_noise(x[2:], r["t"][2:], r["noise"][2:]))
