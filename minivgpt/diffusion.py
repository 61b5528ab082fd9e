"""Next clip diffusion: rectified flow with clean-latent prediction, per-clip timesteps, Euler sampling.

Derived in notebooks/04 (§1 the objective, §4 the loss in a few lines).

Convention of the authors' code (docs/paper.md): ``x_t = t * x + (1 - t) * noise`` with t in [0, 1] and
**t = 1 clean**. The network predicts the clean latent ``x̂``; the loss is the MSE to ``x`` on noisy
tokens only; sampling turns the prediction into a velocity ``v = (x̂ - x_t) / (1 - t)`` and integrates
``dx/dt = v`` with Euler steps from t = 0 (noise) to t = 1.

Every clip has its own timestep: ``t`` has shape ``(B, K)``. The clean history can be lightly noised
(``t_clean ~ U(history_noise, 1)``) so that the model tolerates its own imperfect outputs at rollout.
Random clip cuts: with ``lengths`` (the frames of each of the K clips, unequal) tokens are frames
``(B, T, N, D)``, T = sum(lengths); every clip still has its own timestep, ``t (B, K)``, spread over its
frames by :func:`per_frame`.
Classifier-free guidance contrasts the prediction with history against the prediction without it; the
first noisy clip of every training sequence has no history, so the unconditional case is always trained.
A class/text condition is dropped per sample with probability ``cond_drop``: the loss draws the boolean
mask and passes it on (``drop=``); the model substitutes its own null condition. The model is a plain
function here, as in minRF and k-diffusion.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def per_clip(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Broadcast timesteps ``(B, K)`` (or ``(B,)``) against tokens ``(B, K, ...)`` (or ``(B, ...)``)."""
    return t.reshape(*t.shape, *([1] * (x.ndim - t.ndim)))


def per_frame(t: torch.Tensor, lengths: Sequence[int]) -> torch.Tensor:
    """Per-clip values ``(B, K)`` repeated over each clip's frames -> ``(B, T)``, T = sum(lengths)."""
    return t.repeat_interleave(torch.as_tensor(lengths, device=t.device), dim=1)


def add_noise(x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``x_t = t * x + (1 - t) * noise``; x, noise ``(B, K, F, N, D)``, t ``(B, K)``."""
    tt = per_clip(t, x)
    return tt * x + (1 - tt) * noise


def precondition(
    x_t: torch.Tensor, raw: torch.Tensor, t: torch.Tensor, sigma_data: float, data_mean: float = 0.0
) -> torch.Tensor:
    """EDM's preconditioning for ``x_t = t x + (1 - t) n``: ``x̂ = mu + c_skip(t) (x_t - t mu) + c_out(t) raw``.

    ``raw`` is the network's output, ``x_t`` its noisy input, both ``(B, K, ...)`` with ``t (B, K)`` (or
    ``(B, ...)`` with ``t (B,)``). For data of mean ``mu = data_mean`` and spread ``s = sigma_data``,
    ``mu + c_skip (x_t - t mu)`` with ``c_skip = t s^2 / (t^2 s^2 + (1-t)^2)`` is the best linear guess of x
    from x_t, and ``c_out = (1-t) s / sqrt(t^2 s^2 + (1-t)^2)`` the spread of its error, so the network only
    predicts a unit-size residual. At t = 1 the input passes unchanged; at t = 0 the estimate is
    ``mu + s * raw``. (EDM assumes centred data, mu = 0; pixels of a black scene sit near -1, so the mean
    matters: without it the skip pulls every background pixel towards 0.)
    """
    tt = per_clip(t, x_t).to(x_t.dtype)
    var = (tt * sigma_data) ** 2 + (1 - tt) ** 2
    skip = tt * sigma_data**2 / var
    return data_mean + skip * (x_t - tt * data_mean) + (1 - tt) * sigma_data / var.sqrt() * raw


def velocity_weight(t: torch.Tensor, floor: float = 0.1) -> torch.Tensor:
    """Loss weight that turns the clean-prediction MSE into the velocity MSE: ``1 / (1 - t)^2``, with
    ``1 - t`` floored at ``floor`` (the velocity error of a nearly clean input is unbounded)."""
    return (1 - t).clamp_min(floor).pow(-2)


def velocity(x_t: torch.Tensor, x_pred: torch.Tensor, t: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Velocity of the straight path implied by a clean prediction: ``(x̂ - x_t) / (1 - t)``."""
    return (x_pred - x_t) / (1 - per_clip(t, x_t)).clamp_min(eps)


def time_grid(steps: int, shift: float = 1.0) -> torch.Tensor:
    """The sampler's times ``(steps + 1,)`` from 0 (noise) to 1 (clean), evenly spaced for ``shift=1``.

    ``shift > 1`` spends more steps near the noise, where the layout is decided: the noise level
    ``s = 1 - t`` of the even grid becomes ``shift * s / (1 + (shift - 1) * s)`` (SD3's timestep shift).
    """
    if steps < 1 or shift <= 0:
        raise ValueError(f"need steps >= 1 and shift > 0, got steps={steps}, shift={shift}")
    if shift == 1.0:
        return torch.linspace(0.0, 1.0, steps + 1)
    s = torch.linspace(1.0, 0.0, steps + 1)
    return 1 - shift * s / (1 + (shift - 1) * s)


def ddim_step(x_t: torch.Tensor, x_pred: torch.Tensor, t: float, t_next: float, eta: float,
              fresh: torch.Tensor) -> torch.Tensor:
    """One step from ``t`` to ``t_next > t`` that keeps a share of the noise and redraws the rest (DDIM's eta).

    With the noise the prediction implies, ``n̂ = (x_t - t x̂) / (1 - t)``, the next point is
    ``t' x̂ + sqrt((1 - t')^2 - σ^2) n̂ + σ fresh``, ``σ = eta (1 - t') sqrt(1 - r^2)``,
    ``r = t (1 - t') / (t' (1 - t))``. For any eta in [0, 1] an exact x̂ keeps the marginals of
    ``x_t = t x + (1 - t) n``; eta = 0 is the Euler step of :meth:`RectifiedFlow.sample`, eta = 1 the
    ancestral (DDPM) step. Shapes: ``x_t``, ``x_pred``, ``fresh`` ``(B, ...)``.
    """
    s, s_next = 1 - t, 1 - t_next
    noise = (x_t - t * x_pred) / s
    r = t * s_next / (t_next * s) if t_next > 0 else 0.0
    sigma = eta * s_next * max(0.0, 1 - r * r) ** 0.5
    return t_next * x_pred + max(0.0, s_next**2 - sigma**2) ** 0.5 * noise + sigma * fresh


class RectifiedFlow:
    """The whole method in one class: sample timesteps, noise, the training loss, and the sampler.

    Args:
        history_noise: clean history gets ``t ~ U(history_noise, 1)``; 1.0 keeps it exactly clean.
        t_sampling: ``"uniform"`` (the authors') or ``"logit_normal"`` (t = sigmoid(n), n ~ N(t_location, 1)).
        t_location: the mean of ``n`` for ``"logit_normal"`` (SD3's m); below 0 trains more near the noise.
        cond_drop: probability of replacing the class/text condition with the null condition in training.
        loss_weight: ``"x"`` (the MSE of the clean prediction, the authors') or ``"velocity"`` (weighted by
            :func:`velocity_weight`, the MSE of the implied velocity; the weights are divided by their batch
            mean, so the loss keeps the scale of the clean-prediction MSE).
    """

    def __init__(
        self, history_noise: float = 0.9, t_sampling: str = "uniform", cond_drop: float = 0.1, loss_weight: str = "x",
        t_location: float = 0.0,
    ):
        if not 0.0 <= history_noise <= 1.0:
            raise ValueError(f"history_noise={history_noise} must be in [0, 1]")
        if t_sampling not in ("uniform", "logit_normal"):
            raise ValueError(f"t_sampling={t_sampling!r}: choose 'uniform' or 'logit_normal'")
        if loss_weight not in ("x", "velocity"):
            raise ValueError(f"loss_weight={loss_weight!r}: choose 'x' or 'velocity'")
        if t_location != 0 and t_sampling != "logit_normal":
            raise ValueError(f"t_location={t_location} moves the logit-normal t: set t_sampling='logit_normal'")
        self.t_location = t_location
        self.loss_weight = loss_weight
        self.history_noise = history_noise
        self.t_sampling = t_sampling
        self.cond_drop = cond_drop

    def sample_t(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
        """Training timesteps of the given shape, e.g. ``(B, K)``: one per clip."""
        if self.t_sampling == "uniform":
            return torch.rand(shape, generator=generator)
        return torch.sigmoid(torch.randn(shape, generator=generator) + self.t_location)

    def draw(
        self,
        x_shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        lengths: Sequence[int] | None = None,
    ) -> dict[str, torch.Tensor]:
        """All randomness of one training step for a batch of clean tokens of shape ``(B, K, F, N, D)``
        (or frames ``(B, T, N, D)`` cut into K = len(lengths) clips).

        Drawn on the CPU from ``generator`` so a step is repeatable on any device, and so slicing the
        draw of a global batch (``{k: v[i:j]}``) gives every rank of a data-parallel run exactly the
        noise a single process would have used for those samples.
        """
        B, K = x_shape[0], x_shape[1] if lengths is None else len(lengths)
        return {
            "t": self.sample_t((B, K), generator),
            "noise": torch.randn(x_shape, generator=generator),
            "t_clean": 1 - (1 - self.history_noise) * torch.rand((B, K), generator=generator),
            "history_noise": torch.randn(x_shape, generator=generator),
            "drop": torch.rand((B,), generator=generator) < self.cond_drop,  # (B,) bool: null condition
        }

    def loss(
        self,
        model: torch.nn.Module,
        x: torch.Tensor,
        cond: torch.Tensor | None = None,
        rand: dict[str, torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
        lengths: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Next clip diffusion loss.

        Args:
            model: called as ``model(noisy, clean, t, t_clean=t_clean)`` -> clean prediction
                ``(B, K, F, N, D)`` for the noisy copies; with a condition also ``cond=cond, drop=drop``,
                ``drop (B,)`` bool True where the model must use its null condition instead.
            x: clean tokens ``(B, K, F, N, D)``.
            cond: optional labels ``(B,)`` (long) or embeddings ``(B, E)``; dropped with ``cond_drop``.
            rand: the step's randomness from :meth:`draw` (drawn here from ``generator`` if None).
            lengths: a random cut: ``x`` is frames ``(B, T, N, D)`` of K = len(lengths) clips, and the
                model is also called with ``lengths=``.
        Returns:
            scalar MSE between the prediction and ``x`` over all noisy tokens (weighted per clip with
            ``loss_weight="velocity"``).
        """
        r = rand if rand is not None else self.draw(tuple(x.shape), generator, lengths)
        r = {k: v.to(x.device) for k, v in r.items()}
        t, t_clean = r["t"].to(x.dtype), r["t_clean"].to(x.dtype)
        tx, tcx = (t, t_clean) if lengths is None else (per_frame(t, lengths), per_frame(t_clean, lengths))
        x_t = add_noise(x, tx, r["noise"].to(x.dtype))
        history = add_noise(x, tcx, r["history_noise"].to(x.dtype)) if self.history_noise < 1 else x
        extra = {} if cond is None else {"cond": cond, "drop": r["drop"]}
        if lengths is not None:
            extra["lengths"] = tuple(lengths)
        pred = model(x_t, history, t, t_clean=t_clean, **extra)
        err = (pred.float() - x.float()).pow(2)
        if self.loss_weight == "x":
            return err.mean()
        w = per_clip(velocity_weight(tx.float()), err).expand_as(err)
        return (w * err).sum() / w.sum()

    @torch.no_grad()
    def sample(
        self,
        denoise: Denoiser,
        noise: torch.Tensor,
        steps: int,
        cfg_scale: float = 1.0,
        denoise_uncond: Denoiser | None = None,
        progress: Callable | None = None,
        cfg_t_min: float = 0.0,
        trace: list[torch.Tensor] | None = None,
        eta: float = 0.0,
        shift: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Euler integration from noise (t = 0) to a clean sample (t = 1).

        Args:
            denoise: ``(x_t (B, ...), t (B,)) -> x̂ (B, ...)`` clean prediction with the history.
            noise: starting point ``(B, ...)``.
            steps: number of Euler steps; the last step lands exactly on the final prediction.
            cfg_scale: guidance scale s; ``x̂ = x̂_u + s (x̂_c - x̂_u)`` (1.0 disables guidance).
            denoise_uncond: the same without history/condition, needed when ``cfg_scale != 1``.
            cfg_t_min: guide only the steps that start at ``t >= cfg_t_min`` (0 = every step). At high noise
                the guided prediction extrapolates the *amount* of content, not its layout (guidance
                in a limited interval, Kynkäänniemi et al. 2024).
            trace: a list that receives each step's clean prediction x̂ (after guidance), ``steps`` tensors
                shaped like ``noise``: how the sample forms along the path.
            eta: 0 (the default) integrates the flow; above 0 each step redraws that share of the noise
                (:func:`ddim_step`, 1 = ancestral sampling), from ``generator`` on the CPU.
            shift: the time grid (:func:`time_grid`); 1 = evenly spaced, above 1 denser near the noise.
        """
        if steps < 1:
            raise ValueError(f"steps={steps} must be >= 1")
        if cfg_scale != 1.0 and denoise_uncond is None:
            raise ValueError("cfg_scale != 1 needs denoise_uncond (the prediction without history)")
        if not 0.0 <= cfg_t_min <= 1.0:
            raise ValueError(f"cfg_t_min={cfg_t_min} must be in [0, 1] (0 = guide every step)")
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta={eta} must be in [0, 1] (0 = the flow, 1 = ancestral)")
        x = noise
        ts = time_grid(steps, shift)
        it = range(steps) if progress is None else progress(range(steps))
        for i in it:
            t = torch.full((x.shape[0],), float(ts[i]), device=x.device)
            pred = denoise(x, t)
            if cfg_scale != 1.0 and float(ts[i]) >= cfg_t_min:
                pred_u = denoise_uncond(x, t)
                pred = pred_u + cfg_scale * (pred - pred_u)
            if trace is not None:
                trace.append(pred)
            if eta == 0.0:
                x = x + float(ts[i + 1] - ts[i]) * velocity(x, pred, t)
            else:
                fresh = torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
                x = ddim_step(x, pred, float(ts[i]), float(ts[i + 1]), eta, fresh)
        return x

