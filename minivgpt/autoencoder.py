"""A small per-frame autoencoder to a latent space, and an identity stand-in for pixel-space toys.

The paper encodes every frame with an image VAE (4 latent channels, 8x spatial, no temporal
compression) and runs next clip diffusion on those latents. This module is the laptop-sized version:
a tiny convolutional autoencoder, trained in minutes on CPU, that maps each frame ``(C, H, W)`` in
[-1, 1] to a latent ``(c, H/s, W/s)`` (``s = downsample``, 4 by default) and back.

Shapes (any leading dims are allowed and kept, e.g. clips ``(B, K, F, C, H, W)``):

- ``encode``: ``(..., C, H, W)`` -> ``(..., c, H/s, W/s)``  (normalised: ``(raw - shift) * scale``)
- ``decode``: ``(..., c, H/s, W/s)`` -> ``(..., C, H, W)`` in [-1, 1] (clamped)

Latent normalisation. Like Stable Diffusion's ``scaling_factor`` (and SD3's ``shift_factor``), each
model carries a scalar ``scale`` buffer and a per-channel ``shift`` buffer ``(c,)``.
:func:`train_autoencoder` sets them after training from the raw latents of training frames: ``shift`` to
their per-channel mean and ``scale`` to ``1 / std`` of the centred latents, so that ``encode`` returns
latents with about zero mean and unit standard deviation (what a diffusion model with unit-variance
noise expects). ``decode`` undoes the normalisation first, so ``decode(encode(x))`` does not depend on
it. Both are buffers, saved with the model.

Checkpoints (:func:`save_autoencoder` / :func:`load_autoencoder`) are plain dicts of strings, numbers
and tensors, written atomically, and load with ``torch.load(weights_only=True)``::

    {"format": "minivgpt.autoencoder/1", "kind": "conv", "kwargs": {...},
     "state_dict": {...}, "scale": float, "shift": [float] * c}
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from . import optim
from .checkpoint import atomic_write, cache_folder
from .metrics import psnr_from_mse

__all__ = [
    "FrameAutoencoder",
    "IdentityAutoencoder",
    "build_autoencoder",
    "train_autoencoder",
    "save_autoencoder",
    "load_autoencoder",
    "reconstruction_psnr",
    "AUTOENCODER_KINDS",
]

AUTOENCODER_KINDS = ("identity", "conv")
CHECKPOINT_FORMAT = "minivgpt.autoencoder/1"


def _flatten_frames(x: torch.Tensor, name: str) -> tuple[torch.Tensor, tuple[int, ...]]:
    """``(..., C, H, W)`` -> ``((B, C, H, W), leading_shape)``."""
    if not isinstance(x, torch.Tensor) or x.ndim < 3:
        raise ValueError(f"{name} expects a tensor (..., C, H, W), got {getattr(x, 'shape', type(x))}")
    lead = tuple(x.shape[:-3])
    return rearrange(x, "... c h w -> (...) c h w"), lead


def _unflatten_frames(x: torch.Tensor, lead: tuple[int, ...]) -> torch.Tensor:
    return x.reshape(*lead, *x.shape[1:])


def _groups(channels: int) -> int:
    for g in (8, 4, 2, 1):
        if channels % g == 0:
            return g
    return 1


class _ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv3x3 -> GroupNorm -> SiLU -> conv3x3, plus a (1x1 if needed) skip."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class _Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling followed by a 3x3 conv (no checkerboard artefacts)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class FrameAutoencoder(nn.Module):
    """Tiny convolutional per-frame autoencoder (deterministic, no KL term).

    Encoder: conv3x3 -> [ResBlock -> stride-2 conv] x log2(downsample) -> ResBlock -> GN/SiLU ->
    conv3x3 to ``latent_channels``. The decoder mirrors it with nearest upsampling + conv. Channel
    width doubles at each stage (``hidden``, ``2*hidden``, ...), capped at ``4*hidden``.

    Args:
        in_channels: C, channels of the frames (3 for RGB, 1 for grey).
        latent_channels: c, channels of the latent.
        hidden: width of the first (full resolution) stage.
        downsample: spatial reduction s, a power of two (1, 2, 4, 8); 4 means two stride-2 stages.

    Attributes:
        scale: buffer (scalar) and
        shift: buffer ``(latent_channels,)``: :meth:`encode` returns ``(raw - shift) * scale``.
    """

    kind = "conv"

    def __init__(self, in_channels: int = 3, latent_channels: int = 4, hidden: int = 32, downsample: int = 4):
        super().__init__()
        if downsample < 1 or downsample & (downsample - 1):
            raise ValueError(f"downsample must be a power of two (1, 2, 4, 8, ...), got {downsample}")
        self.in_channels = int(in_channels)
        self.latent_channels = int(latent_channels)
        self.hidden = int(hidden)
        self.downsample = int(downsample)
        stages = int(math.log2(downsample))
        widths = [min(hidden * 2**i, hidden * 4) for i in range(stages + 1)]

        enc: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1)]
        for i in range(stages):
            enc += [
                _ResBlock(widths[i], widths[i]),
                nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1),
            ]
        enc += [
            _ResBlock(widths[-1], widths[-1]),
            nn.GroupNorm(_groups(widths[-1]), widths[-1]),
            nn.SiLU(),
            nn.Conv2d(widths[-1], latent_channels, 3, padding=1),
        ]
        self.encoder = nn.Sequential(*enc)

        dec: list[nn.Module] = [
            nn.Conv2d(latent_channels, widths[-1], 3, padding=1),
            _ResBlock(widths[-1], widths[-1]),
        ]
        for i in reversed(range(stages)):
            dec += [_Upsample(widths[i + 1], widths[i]), _ResBlock(widths[i], widths[i])]
        dec += [
            nn.GroupNorm(_groups(widths[0]), widths[0]),
            nn.SiLU(),
            nn.Conv2d(widths[0], in_channels, 3, padding=1),
        ]
        self.decoder = nn.Sequential(*dec)

        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("shift", torch.zeros(latent_channels))

    def config(self) -> dict[str, Any]:
        """Constructor keyword arguments (what :func:`save_autoencoder` stores)."""
        return {
            "in_channels": self.in_channels,
            "latent_channels": self.latent_channels,
            "hidden": self.hidden,
            "downsample": self.downsample,
        }

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """``(c, H/s, W/s)`` of the latent of one ``height x width`` frame."""
        if height % self.downsample or width % self.downsample:
            raise ValueError(f"frame size {height}x{width} is not divisible by downsample={self.downsample}")
        return self.latent_channels, height // self.downsample, width // self.downsample

    def encode_raw(self, x: torch.Tensor) -> torch.Tensor:
        """Unscaled latents: ``(..., C, H, W)`` -> ``(..., c, H/s, W/s)``."""
        flat, lead = _flatten_frames(x, "encode")
        if flat.shape[1] != self.in_channels:
            raise ValueError(f"encode expects {self.in_channels} channels, got frames {tuple(x.shape)}")
        H, W = flat.shape[-2:]
        self.latent_shape(H, W)
        return _unflatten_frames(self.encoder(flat), lead)

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """Unscaled latents -> frames without clamping (the training loss uses this)."""
        flat, lead = _flatten_frames(z, "decode")
        if flat.shape[1] != self.latent_channels:
            raise ValueError(f"decode expects {self.latent_channels} latent channels, got {tuple(z.shape)}")
        return _unflatten_frames(self.decoder(flat), lead)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Frames ``(..., C, H, W)`` in [-1, 1] -> normalised latents ``(..., c, H/s, W/s)``."""
        return (self.encode_raw(x) - self.shift[:, None, None]) * self.scale

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents ``(..., c, H/s, W/s)`` (as from :meth:`encode`) -> frames ``(..., C, H, W)`` in [-1, 1]."""
        return self.decode_raw(z / self.scale + self.shift[:, None, None]).clamp(-1.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``decode(encode(x))``, same shape as ``x``."""
        return self.decode(self.encode(x))


class IdentityAutoencoder(nn.Module):
    """The identity map with the autoencoder interface (latents are the pixels themselves).

    ``encode(x) is x`` for pixel-space toys: ``downsample = 1``, ``latent_channels = channels``,
    ``scale = 1``. It has no parameters.
    """

    kind = "identity"

    def __init__(self, channels: int = 3):
        super().__init__()
        self.in_channels = int(channels)
        self.latent_channels = int(channels)
        self.downsample = 1
        self.register_buffer("scale", torch.tensor(1.0))

    def config(self) -> dict[str, Any]:
        """Constructor keyword arguments (what :func:`save_autoencoder` stores)."""
        return {"channels": self.in_channels}

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """``(C, H, W)``: the latent of a frame is the frame."""
        return self.latent_channels, height, width

    def _check(self, x: torch.Tensor, name: str) -> torch.Tensor:
        _flatten_frames(x, name)
        if x.shape[-3] != self.in_channels:
            raise ValueError(f"{name} expects {self.in_channels} channels, got {tuple(x.shape)}")
        return x

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., C, H, W)`` -> the same tensor."""
        return self._check(x, "encode")

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``(..., C, H, W)`` -> the same tensor (no clamping: exact round trip)."""
        return self._check(z, "decode")

    encode_raw = encode
    decode_raw = decode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


Autoencoder = FrameAutoencoder | IdentityAutoencoder


def build_autoencoder(kind: str, channels: int = 3, **kwargs: Any) -> nn.Module:
    """Build an autoencoder by name.

    Args:
        kind: ``"identity"`` (pixels are the latents) or ``"conv"`` (:class:`FrameAutoencoder`).
        channels: channels C of the frames.
        **kwargs: for ``"conv"``: ``latent_channels``, ``hidden``, ``downsample``.
    Returns:
        An untrained module with ``encode`` / ``decode`` / ``scale`` / ``downsample`` / ``latent_channels``.
    """
    if kind == "identity":
        if kwargs:
            raise ValueError(f"the identity autoencoder takes no options, got {sorted(kwargs)}")
        return IdentityAutoencoder(channels)
    if kind == "conv":
        kwargs.pop("in_channels", None)
        return FrameAutoencoder(in_channels=channels, **kwargs)
    raise ValueError(f"unknown autoencoder kind {kind!r}; choose one of {AUTOENCODER_KINDS}")


# --------------------------------------------------------------------------------------------- data


def _video_of(sample: Any) -> torch.Tensor:
    video = sample["video"] if isinstance(sample, dict) else sample
    if not isinstance(video, torch.Tensor) or video.ndim != 4:
        raise ValueError(
            "dataset samples must be dicts with 'video' (T, C, H, W) (or such tensors), "
            f"got {getattr(video, 'shape', type(video))}"
        )
    return video.float()


def _frame_pool(dataset: Sequence, max_frames: int, generator: torch.Generator) -> torch.Tensor:
    """All frames ``(M, C, H, W)`` of (a seeded random subset of) the dataset's videos, M <= max_frames."""
    n = len(dataset)
    if n == 0:
        raise ValueError("cannot train an autoencoder on an empty dataset")
    order = torch.randperm(n, generator=generator).tolist()
    frames, total = [], 0
    for i in order:
        v = _video_of(dataset[i])
        frames.append(v)
        total += v.shape[0]
        if total >= max_frames:
            break
    return torch.cat(frames)[:max_frames].contiguous()


# ----------------------------------------------------------------------------------------- training


@torch.no_grad()
def _set_scale(model: nn.Module, frames: torch.Tensor, batch_size: int = 256) -> float:
    """Set ``model.shift`` (per-channel mean) and ``model.scale`` (1 / std of the centred latents) from
    the raw latents of ``frames``; returns the new scale."""
    if isinstance(model, IdentityAutoencoder):
        return 1.0
    was_training = model.training
    model.eval()
    zs = [model.encode_raw(frames[i : i + batch_size]) for i in range(0, len(frames), batch_size)]
    z = torch.cat(zs).float().transpose(0, 1).flatten(1)  # (c, everything else)
    shift = z.mean(1)
    std = (z - shift[:, None]).std().clamp_min(1e-6)
    model.shift.copy_(shift)
    model.scale.fill_(1.0 / std.item())
    model.train(was_training)
    return float(model.scale)


def train_autoencoder(
    dataset: Sequence,
    steps: int = 2000,
    batch_size: int = 8,
    lr: float = 2e-3,
    seed: int = 0,
    progress: bool = True,
    time_limit_s: float | None = None,
    *,
    model: nn.Module | None = None,
    latent_channels: int = 4,
    hidden: int = 16,
    downsample: int = 4,
    weight_decay: float = 1e-4,
    warmup: int = 50,
    max_frames: int = 8192,
    log_every: int = 10,
    hflip: bool = True,
) -> tuple[nn.Module, list[dict[str, float]]]:
    """Train a :class:`FrameAutoencoder` on single frames drawn from a video dataset.

    Frames are gathered once from (a seeded random subset of, at most ``max_frames`` frames of) the
    dataset's videos; every step draws ``batch_size`` random frames and minimises the MSE between the
    frames and their (unclamped) reconstructions with AdamW (linear warmup over ``warmup`` steps, then
    cosine decay to 5 % of ``lr``), optionally with random horizontal flips (``hflip``).
    After training ``model.shift`` and ``model.scale`` are set so that ``encode`` gives latents of about
    zero mean and unit std.

    Args:
        dataset: indexable, ``len()``-able; items are dicts with ``video`` ``(T, C, H, W)`` in [-1, 1]
            (or such tensors directly).
        steps: optimisation steps.
        batch_size: frames per step. Small batches and more steps train these tiny models fastest on
            a CPU (measured: 3000 steps of 8 frames beat 750 steps of 32 by about 5 dB for the same time).
        lr: peak learning rate.
        seed: seeds the model init and frame sampling; same seed, same data -> same model (on the same
            machine and thread count).
        progress: show a tqdm bar.
        time_limit_s: stop early (and say so in the history) after this many seconds of training. The
            cosine schedule then runs on whichever is further along, steps or time, so a run cut short by
            the limit still ends at the low learning rate (timing makes such a run non-deterministic).
        model: train this model instead of a new ``FrameAutoencoder(C, latent_channels, hidden, downsample)``
            (``hidden`` defaults to 16 here, half the class default, so that training fits a few CPU minutes).
    Returns:
        ``(model, history)``: the model in eval mode, and a list of dicts
        ``{"step", "loss", "psnr", "lr", "time_s"}`` every ``log_every`` steps (and the last step);
        ``history[-1]`` also has ``"scale"`` and ``"stopped_early"``.
    """
    from tqdm.auto import tqdm

    g = torch.Generator().manual_seed(seed)
    channels = _video_of(dataset[0]).shape[1]
    if model is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = FrameAutoencoder(channels, latent_channels, hidden, downsample)
    if isinstance(model, IdentityAutoencoder):
        return model.eval(), []
    pool = _frame_pool(dataset, max_frames, g)
    model.train()
    opt = optim.make_optimizer(model, lr, weight_decay, betas=(0.9, 0.99))

    def progress_at(step: int, elapsed: float) -> int:
        """Training progress as a step count: by steps, or by time when a time limit is closer."""
        frac = step / steps
        if time_limit_s is not None:
            frac = max(frac, elapsed / max(time_limit_s, 1e-9))
        return max(step, round(min(1.0, frac) * steps))

    history: list[dict[str, float]] = []
    start = time.perf_counter()
    stopped_early = False
    bar = tqdm(range(steps), desc="autoencoder", disable=not progress, leave=False)
    elapsed = 0.0
    for step in bar:
        step_lr = optim.lr_at(progress_at(step, elapsed), lr, steps, warmup, min_lr_ratio=0.05)
        optim.set_lr(opt, step_lr)
        idx = torch.randint(len(pool), (batch_size,), generator=g)
        x = pool[idx]
        if hflip:  # random horizontal flips: cheap augmentation (left/right symmetric worlds)
            flip = torch.rand(batch_size, generator=g) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        recon = model.decode_raw(model.encode_raw(x))
        loss = F.mse_loss(recon, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        elapsed = time.perf_counter() - start
        last = step == steps - 1 or (time_limit_s is not None and elapsed > time_limit_s)
        if step % log_every == 0 or last:
            with torch.no_grad():
                mse_clamped = F.mse_loss(recon.detach().clamp(-1, 1), x).clamp_min(1e-12)
            rec = {
                "step": step + 1,
                "loss": float(loss.detach()),
                "psnr": float(psnr_from_mse(mse_clamped)),
                "lr": step_lr,
                "time_s": elapsed,
            }
            history.append(rec)
            bar.set_postfix(loss=f"{rec['loss']:.4f}", psnr=f"{rec['psnr']:.1f}")
        if time_limit_s is not None and elapsed > time_limit_s and step < steps - 1:
            stopped_early = True
            break
    bar.close()
    model.eval()
    scale = _set_scale(model, pool[torch.randperm(len(pool), generator=g)[:1024]])
    if history:
        history[-1]["scale"] = scale
        history[-1]["stopped_early"] = float(stopped_early)
    return model, history


@torch.no_grad()
def reconstruction_psnr(
    model: nn.Module, dataset: Sequence, indices: Sequence[int] | None = None, batch_size: int = 256
) -> float:
    """PSNR in dB (data range 2, pixels in [-1, 1]) of ``decode(encode(frames))`` over all frames of the
    videos ``dataset[i]`` for ``i in indices`` (all of the dataset when ``None``), pooled over frames
    (one MSE over everything, then ``10 log10(4 / MSE)``). Returns ``inf`` for an exact reconstruction.
    """
    was_training = model.training
    model.eval()
    indices = range(len(dataset)) if indices is None else indices
    sq, count = 0.0, 0
    for i in indices:
        video = _video_of(dataset[int(i)])
        for j in range(0, len(video), batch_size):
            x = video[j : j + batch_size]
            recon = model.decode(model.encode(x))
            sq += float((recon.double() - x.double()).pow(2).sum())
            count += x.numel()
    model.train(was_training)
    if count == 0:
        raise ValueError("reconstruction_psnr needs at least one video index")
    return float(psnr_from_mse(sq / count))


# ------------------------------------------------------------------------------------- checkpoints


def save_autoencoder(model: nn.Module, path: str | os.PathLike) -> None:
    """Write ``model`` to ``path`` atomically (:func:`minivgpt.checkpoint.atomic_write`).

    The file holds ``{"format", "kind", "kwargs", "state_dict", "scale", "shift"}`` (strings, numbers,
    tensors only; ``scale`` and ``shift`` repeat the buffers of the state_dict for readers without
    torch.nn), so it loads with ``torch.load(path, weights_only=True)``.
    """
    kind = getattr(model, "kind", None)
    if kind not in AUTOENCODER_KINDS:
        raise TypeError(
            f"save_autoencoder expects a FrameAutoencoder or IdentityAutoencoder, got {type(model).__name__}"
        )
    payload = {
        "format": CHECKPOINT_FORMAT,
        "kind": kind,
        "kwargs": dict(model.config()),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "scale": float(model.scale),
        "shift": [float(v) for v in getattr(model, "shift", torch.zeros(0))],
    }
    atomic_write(path, lambda f: torch.save(payload, f))


def load_autoencoder(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Load a model written by :func:`save_autoencoder` (with ``weights_only=True``), in eval mode.

    Raises:
        FileNotFoundError: no file at ``path`` (the message names it).
        RuntimeError: the file is not a readable autoencoder checkpoint (the message names it).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"autoencoder checkpoint not found: {path!r} (train one with train_autoencoder and "
            "save it with save_autoencoder, e.g. by running notebooks/01_clips_and_tokens.ipynb)"
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated, not a torch file, unsafe pickle, ...
        raise RuntimeError(f"could not read autoencoder checkpoint {path!r}: {type(e).__name__}: {e}") from e
    missing = [k for k in ("kind", "kwargs", "state_dict") if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise RuntimeError(f"{path!r} is not an autoencoder checkpoint (missing {missing})")
    try:
        model = build_autoencoder(ckpt["kind"], **_kwargs_for_build(ckpt["kind"], ckpt["kwargs"]))
        model.load_state_dict(ckpt["state_dict"])
    except Exception as e:
        raise RuntimeError(f"autoencoder checkpoint {path!r} does not match its model: {e}") from e
    return model.eval()


def _kwargs_for_build(kind: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    kwargs = dict(kwargs)
    if kind == "identity":
        return {"channels": kwargs.pop("channels")}
    return {"channels": kwargs.pop("in_channels"), **kwargs}


# the settings of an autoencoder trained by autoencoder=auto (notebook 01's: about 70 s on one CPU thread for
# 32x32 frames, held-out PSNR about 41 dB on one ball)
AUTO_SETTINGS = dict(steps=3000, batch_size=8, lr=2e-3, latent_channels=4, hidden=16, downsample=4)


def cached_autoencoder(
    make_dataset: Callable[[], Sequence],
    key: dict[str, Any],
    root: str | os.PathLike = "runs/autoencoder",
    progress: bool = True,
) -> str:
    """The path of a frame autoencoder for the data that ``key`` describes, trained once and then reused.

    ``key`` names the data (e.g. the data config and seed); with :data:`AUTO_SETTINGS` it is hashed into
    the absolute path ``root/<12 hex digits>/autoencoder.pt`` (runs record it and are read from any working
    folder), so ``make demo``, ``make pretrain`` and any run of the same data share one autoencoder, and a
    change of data or settings gets its own. Missing: trained here (:func:`train_autoencoder`) on the
    dataset that ``make_dataset()`` builds (only then) and written atomically, with ``key.json`` beside it.
    """
    record = {"key": key, "settings": AUTO_SETTINGS, "format": CHECKPOINT_FORMAT}
    folder = cache_folder(record, root)
    path = folder / "autoencoder.pt"
    if not path.exists():
        settings = dict(AUTO_SETTINGS)
        model, _ = train_autoencoder(
            make_dataset(), settings.pop("steps"), settings.pop("batch_size"), settings.pop("lr"),
            seed=int(key.get("seed", 0)), progress=progress, **settings,
        )
        save_autoencoder(model, path)
        atomic_write(folder / "key.json", json.dumps(record, indent=2, sort_keys=True, default=str))
    return str(path)
