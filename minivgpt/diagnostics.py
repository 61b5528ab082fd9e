"""The history diagnostic: does the model's clean prediction get better with the clean history?

Derived in notebooks/04 (§ the history diagnostic); logged during training with ``eval_every=``. Beside
it, :func:`redraw_shape` (notebooks/05, §3): the object's shape when the network redraws the true next
clip from 1 % noise, i.e. how sharply it draws at best; and :func:`subspace_shape`: how sharply *any* network
with a linear output head of width W can draw, its tokens confined to a W-dim subspace.

On validation clips ``x (B, K, F, N, D)``, with fixed noise and a few diffusion times t (t = 0 is pure
noise, t = 1 clean), the error (MSE) of the clean prediction of every clip k is measured twice:

- **with history**: the training forward with every noisy clip at time t and the clean history exactly
  clean (t_clean = 1): noisy clip k reads clean clips 0..k-1;
- **without history**: the same noisy clip alone (clip index 0, nothing before it), as in the
  unconditional branch of classifier-free guidance. A class/text condition is kept in both, so only
  the history differs.

The **history gain** is the error without history over the error with it at t = 0, over clips 1..K-1
(clip 0 has no history, so its two errors agree). From pure noise, only the history can tell the model
what the clip looks like: a gain of 1 means the history is ignored; a model that continues the video
well has a gain far above 1. As t grows the noisy clip itself gives the answer away and both errors fall.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from einops import rearrange

from . import metrics
from .diffusion import add_noise

DEFAULT_TS = (0.0, 0.25, 0.5, 0.75, 0.9)

Forward = Callable[..., torch.Tensor]  # model(noisy, clean, t, t_clean=..., [cond=...]) -> (B, K, F, N, D)


@dataclass
class HistoryDiagnostic:
    """Clean-prediction errors against diffusion time, with and without history, per clip index.

    ``t``: the diffusion times (n_t,); ``err_with`` / ``err_without``: MSE ``(n_t, K)`` per time and clip
    index; ``gain``: the history gain at t = 0 (module docstring); ``step``: the training step, if logged.
    """

    t: list[float]
    err_with: torch.Tensor
    err_without: torch.Tensor
    gain: float
    step: int | None = None

    @property
    def gain_per_clip(self) -> torch.Tensor:
        """``(K,)`` error without history over error with it at t = 0, per clip index (1 at clip 0)."""
        i = self.t.index(0.0)
        return self.err_without[i] / self.err_with[i]

    def to_record(self, step: int) -> dict:
        """A JSON-able record for ``metrics.jsonl`` (``"type": "history"``)."""
        return {
            "type": "history",
            "step": step,
            "t": list(self.t),
            "err_with": self.err_with.tolist(),
            "err_without": self.err_without.tolist(),
            "history_gain": self.gain,
        }

    @classmethod
    def from_record(cls, rec: Mapping) -> HistoryDiagnostic:
        return cls(
            list(rec["t"]),
            torch.tensor(rec["err_with"]),
            torch.tensor(rec["err_without"]),
            float(rec["history_gain"]),
            rec.get("step"),
        )


def history_records(records: Sequence[Mapping]) -> list[HistoryDiagnostic]:
    """The history diagnostics among metric records (e.g. ``viz.load_jsonl(out / "metrics.jsonl")``)."""
    return [HistoryDiagnostic.from_record(r) for r in records if r.get("type") == "history"]


@torch.no_grad()
def history_gain(
    model: Forward,
    x: torch.Tensor,
    ts: Sequence[float] = DEFAULT_TS,
    cond: torch.Tensor | None = None,
    seed: int = 0,
    batch_size: int = 16,
) -> HistoryDiagnostic:
    """Measure the clean-prediction error with and without history (module docstring).

    Args:
        model: a :class:`~minivgpt.model.VideoGPT`, or any callable with its training signature
            ``model(noisy, clean, t, t_clean=t_clean[, cond=cond]) -> (B, K, F, N, D)``.
        x: clean validation tokens ``(B, K, F, N, D)``, K >= 2.
        ts: diffusion times to measure (t = 0 pure noise); must include 0.0, where the gain is read.
        cond: optional labels ``(B,)`` or embeddings ``(B, E)``, kept in both measurements.
        seed: seed of the noise (the same noise at every t, and at every call: curves are comparable
            across training steps).
        batch_size: videos per forward pass.
    Returns:
        a :class:`HistoryDiagnostic` with errors ``(len(ts), K)``.
    """
    if x.ndim != 5 or x.shape[1] < 2:
        raise ValueError(f"x must be clean tokens (B, K, F, N, D) with K >= 2 clips, got {tuple(x.shape)}")
    ts = [float(t) for t in ts]
    if 0.0 not in ts:
        raise ValueError(f"ts={ts} must include 0.0: the history gain is read at t = 0")
    B, K = x.shape[:2]
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)).to(x.device, x.dtype)
    sq_with = torch.zeros(len(ts), K, dtype=torch.float64)
    sq_without = torch.zeros(len(ts), K, dtype=torch.float64)
    for i, tv in enumerate(ts):
        for lo in range(0, B, batch_size):
            xb, nb = x[lo : lo + batch_size], noise[lo : lo + batch_size]
            b = xb.shape[0]
            extra = {} if cond is None else {"cond": cond[lo : lo + batch_size]}
            t = torch.full((b, K), tv, device=x.device, dtype=x.dtype)
            x_t = add_noise(xb, t, nb)
            pred = model(x_t, xb, t, t_clean=torch.ones_like(t), **extra)
            # without history: every clip alone, as a batch of b*K one-clip videos
            alone = {} if cond is None else {"cond": extra["cond"].repeat_interleave(K, dim=0)}
            one = lambda v: rearrange(v, "b k f n d -> (b k) 1 f n d")  # noqa: E731
            t1 = t.reshape(b * K, 1)
            pred_u = model(one(x_t), one(xb), t1, t_clean=torch.ones_like(t1), **alone)
            pred_u = rearrange(pred_u, "(b k) 1 f n d -> b k f n d", b=b)
            sq_with[i] += _sq_err(pred, xb)
            sq_without[i] += _sq_err(pred_u, xb)
    per = x[0, 0].numel() * B
    err_with, err_without = (sq_with / per).float(), (sq_without / per).float()
    i0 = ts.index(0.0)
    gain = float(err_without[i0, 1:].mean() / err_with[i0, 1:].mean().clamp_min(1e-12))
    return HistoryDiagnostic(ts, err_with, err_without, gain)


def _sq_err(pred: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Summed squared error per clip index ``(K,)`` (float64, on the CPU)."""
    return (pred.double() - x.double()).pow(2).sum(dim=(0, 2, 3, 4)).cpu()


# ----------------------------------------------------------------------------------------- how sharply it draws
@torch.no_grad()
def redraw_shape(
    model: torch.nn.Module,
    tokenizer: torch.nn.Module,
    videos: torch.Tensor,
    context_clips: int,
    frames_per_clip: int,
    t: float = 0.99,
    seed: int = 0,
) -> dict[str, list[float]]:
    """How sharply can the network draw? It redraws the true next clip from almost no noise.

    The clip after the first ``context_clips`` clips of every video is noised to time ``t`` (default 0.99:
    1 % noise) and denoised after its true clean history (``model.prefill`` / ``model.denoise``, as in a
    rollout). Nothing is left to guess, so the object's shape in the output
    (:func:`minivgpt.metrics.object_shape` against the true clip) shows how sharply this network draws at
    best: a ball redrawn with a soft rim here gets that rim from every sampler (a forecast's area can still
    fall below it where the ball fades or is missed).

    Args:
        videos: ``(B, T, C, H, W)`` in [-1, 1] with T >= (context_clips + 1) * frames_per_clip.
    Returns:
        ``{"area_ratio", "peak_ratio"}``, one value per frame of the redrawn clip.
    """
    F = frames_per_clip
    need = (context_clips + 1) * F
    if videos.ndim != 5 or videos.shape[1] < need:
        raise ValueError(f"videos must be (B, T, C, H, W) with T >= (context_clips + 1) * F = {need}, "
                         f"got shape {tuple(videos.shape)}")
    if context_clips < 1 or not 0.0 <= t < 1.0:
        raise ValueError(f"need context_clips >= 1 and t in [0, 1), got context_clips={context_clips}, t={t}")
    x = tokenizer.encode(videos[:, :need].contiguous(), F)  # (B, C + 1, F, N, D)
    cache = model.prefill(x[:, :context_clips])
    target = x[:, context_clips:]  # (B, 1, F, N, D)
    noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(seed)).to(x.device, x.dtype)
    tt = torch.full((x.shape[0], 1), t, device=x.device, dtype=x.dtype)
    redrawn = model.denoise(add_noise(target, tt, noise)[:, 0], tt[:, 0], cache)  # (B, F, N, D)
    n_ctx = context_clips * F
    return metrics.object_shape(tokenizer.decode(redrawn[:, None]), videos[:, n_ctx:need], videos[:, :n_ctx])


def subspace_shape(
    tokenizer: torch.nn.Module,
    fit: torch.Tensor,
    videos: torch.Tensor,
    frames_per_clip: int,
    ranks: Sequence[int],
) -> dict[int, dict[str, float | list[float]]]:
    """How sharply can a linear output head of width r draw? The best it can do, measured on true videos.

    A head ``Linear(W, D)`` draws every patch token in a W-dim affine subspace of the D-dim token space.
    Where D > W (pixel patches: 8 * 8 * 3 = 192 values against a width of 128), no network with that head can
    draw every clip exactly. The best subspace of each rank r for squared error is the tokens' mean plus their
    top r principal directions (fitted on ``fit``); the held-out ``videos`` are projected onto it, decoded,
    and their objects compared with the truth (:func:`minivgpt.metrics.object_shape`, the background being
    the per-pixel median of each whole video). A soft rim here is a floor for that head, whatever the
    training; a nonlinear head (``head=mlp``) has no such floor.

    Args:
        fit, videos: ``(B, T, C, H, W)`` in [-1, 1], T a multiple of ``frames_per_clip``.
        ranks: subspace dimensions r, each in [1, D].
    Returns:
        ``{r: {"mse", "area_ratio", "peak_ratio"}}``: the projection's MSE in pixels and, per frame, the
        object's area and peak against the truth's.
    """
    F = frames_per_clip
    for name, v in (("fit", fit), ("videos", videos)):
        if v.ndim != 5 or v.shape[1] % F:
            raise ValueError(f"{name} must be (B, T, C, H, W) with T a multiple of frames_per_clip={F}, "
                             f"got shape {tuple(v.shape)}")
    tokens = tokenizer.encode(fit, F).flatten(0, -2).double()  # (M, D)
    D = tokens.shape[-1]
    if not ranks or any(not 1 <= r <= D for r in ranks):
        raise ValueError(f"ranks must be in [1, D = {D}] (the token size), got {list(ranks)}")
    mean = tokens.mean(0)
    _, _, basis = torch.linalg.svd(tokens - mean, full_matrices=False)  # (D, D): principal directions, rows
    x = tokenizer.encode(videos, F)
    centred = x.double() - mean  # (B, K, F, N, D)
    out = {}
    for r in ranks:
        p = basis[:r]
        proj = (centred @ p.T @ p + mean).to(x.dtype)
        decoded = tokenizer.decode(proj).clamp(-1, 1)
        shape = metrics.object_shape(decoded, videos, videos)
        out[int(r)] = {"mse": float(metrics.mse(decoded, videos)), **shape}
    return out
