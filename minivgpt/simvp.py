"""A small SimVP-style deterministic predictor, the same-budget baseline for next clip diffusion.

SimVP (Gao et al. 2022, "SimVP: Simpler yet Better Video Prediction") predicts all future frames at once
with plain convolutions: a per-frame **encoder** (strided convs, 4x down), a **translator** that mixes
time by stacking the context frames' features on the channel axis (``(B, T*C', h, w)``) and running
residual convs on that, and a per-frame **decoder** (a transposed conv back to half resolution, fused
with the encoder's half-resolution features of the last context frame, and a sub-pixel readout). All
full-resolution work is in the first and last conv, which keeps a step cheap on a CPU. It is trained with the MSE of the
predicted frames, so it predicts the mean future: sharp while the motion is certain, blurry after. ``l1_weight`` adds
the L1 (PredRNN trains with L1 + L2), which pulls the empty background to exactly black where the MSE leaves a faint
grey of hedged mass; ``ssim_weight`` adds ``1 - SSIM`` on pixels in [0, 1] (docs/results.md section 4 measures both).

``decoder="warp"`` changes only the readout: instead of drawing each future frame, it moves the pixels of the last
context frame (the idea of Deep Voxel Flow, Liu et al. 2017). Per future frame k the readout gives a one-frame
displacement field ``g_k`` (in pixels), an appearance ``a_k`` and a mask ``m_k``; the displacements are chained,
``G_k(p) = g_k(p) + G_{k-1}(p + g_k(p))`` (:func:`compose`), so each frame is one bilinear resample of the last
context frame (no blur that compounds), and ``frame_k = m_k * last(p + G_k(p)) + (1 - m_k) * a_k``
(:func:`warp`). Each step of the chain is a few pixels, so a pixel loss can teach it from a zero
start; what moving cannot make (a digit coming out from behind another) the appearance covers. It starts as
copy-last. Measured on Moving MNIST at 50 CPU minutes (docs/results.md §4) it scores as the drawing readout
does, and draws the digits through its appearance anyway (the mask over them is about 0.1).

``python -m minivgpt.simvp key=value ...`` trains it (``data=``, ``context=``, ``predict=``, ``steps=``,
``minutes=`` a wall budget, ``batch_size=``, ``lr=``, ``seed=``, ``out=``, ``threads=``, ... see
:class:`SimVPConfig`) and writes a run folder (``last.pt`` with ``"kind": "simvp"``, ``metrics.jsonl``)
that ``python -m minivgpt.evaluate`` evaluates like a VideoGPT run. Every step is a pure function of
``(seed, step)`` (the batch is drawn as in :mod:`minivgpt.train`).

Evaluated beside next clip diffusion in notebooks/05 (§8 evaluation by the standard protocol).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from tqdm.auto import tqdm

from . import checkpoint, metrics, optim
from .config import (
    AT_LEAST_1,
    NON_NEGATIVE,
    POSITIVE,
    check_choices,
    check_ranges,
    cli_help,
    dataclass_from_params,
    exit_on_help,
    parse_cli,
)
from .data import make_dataset
from .hardware import resolve_device, set_threads

KIND = "simvp"
DECODERS = ("pixels", "warp")


@dataclass
class SimVPConfig:
    # data
    data: str = "bouncing_balls"  # any data= of minivgpt.train, e.g. moving_mnist_digits:DIR
    image_size: int = 32
    num_samples: int = 4096  # size of a generated training set (its seed is `seed`)
    context: int = 10  # frames in
    predict: int = 10  # frames out, all at once
    # model
    hid_s: int = 16  # encoder / decoder channels
    hid_t: int = 128  # translator channels
    n_t: int = 8  # translator residual blocks (8 beat 4 on held-out Moving MNIST: MSE 101.0 +- 0.5 over 3 seeds
    #               against 110.7 / 111.3 in 50 CPU minutes; docs/results.md section 4)
    decoder: str = "pixels"  # pixels (draw each future frame) | warp (move the last context frame's pixels)
    # training
    out: str = "runs/simvp"
    steps: int = 2000
    minutes: float = 0.0  # wall budget (0 = none): the lr anneals by steps or time, whichever is further along;
    #                       training stops, saves and records it when spent
    batch_size: int = 16
    lr: float = 1e-3
    warmup: int = 50
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    l1_weight: float = 0.0  # the loss adds l1_weight * L1 of the predicted frames (PredRNN trains with L1 + L2)
    ssim_weight: float = 0.0  # ... and ssim_weight * (1 - SSIM) (metrics.ssim: gaussian window, pixels in [0, 1])
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # CPU threads; 0 = measured at start-up (hardware.set_threads)
    prefetch: str = "auto"  # auto (on for CUDA) | on | off: the next batch drawn on a thread (train.Batches)
    log_every: int = 10
    ckpt_every: int = 200
    progress: bool = True
    overwrite: bool = False  # replace a run already in `out`

    def to_params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def simvp_config(params: dict[str, Any] | None = None) -> SimVPConfig:
    """A :class:`SimVPConfig` from flat parameters (``key=value`` strings or values); unknown names are
    rejected with the closest valid one, values are converted and range-checked."""
    cfg = dataclass_from_params(SimVPConfig, params)
    names = ("context", "predict", "hid_s", "hid_t", "n_t", "batch_size", "image_size", "log_every", "ckpt_every")
    ranges = {name: AT_LEAST_1 for name in names}
    check_ranges(cfg.to_params(), {**ranges, "steps": NON_NEGATIVE, "minutes": NON_NEGATIVE, "lr": POSITIVE,
                                   "l1_weight": NON_NEGATIVE, "ssim_weight": NON_NEGATIVE})
    if cfg.image_size % 4:
        raise ValueError(f"parameter image_size={cfg.image_size} must be divisible by 4 (the encoder downsamples 4x)")
    check_choices(cfg.to_params(), {"decoder": DECODERS, "prefetch": ("auto", "on", "off")})
    if cfg.hid_s % 4 or cfg.hid_t % 8:
        raise ValueError(f"hid_s={cfg.hid_s} must be divisible by 4 and hid_t={cfg.hid_t} by 8 (group norm)")
    return cfg


# ----------------------------------------------------------------------------------------------------- model
def _conv(cin: int, cout: int, stride: int = 1, groups: int = 4) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(groups, cout), nn.SiLU())


def _up(cin: int, cout: int, groups: int = 4) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.GroupNorm(groups, cout), nn.SiLU())


class _Res(nn.Module):
    """A residual block of two grouped 3x3 convs on the translator's stacked-time channels."""

    def __init__(self, dim: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(8, dim), nn.SiLU(), nn.Conv2d(dim, dim, 3, 1, 1, groups=8),
            nn.GroupNorm(8, dim), nn.SiLU(), nn.Conv2d(dim, dim, 1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def warp(image: torch.Tensor, disp: torch.Tensor) -> torch.Tensor:
    """Backward warp: ``out[..., y, x] = image`` sampled bilinearly at ``(y + disp_y, x + disp_x)``.

    ``image (N, C, H, W)``, ``disp (N, 2, H, W)`` in pixels, channel 0 along x, channel 1 along y; samples
    outside the frame take the nearest border pixel. Returns ``(N, C, H, W)``; ``disp = 0`` returns ``image``."""
    N, _, H, W = image.shape
    if disp.shape != (N, 2, H, W):
        raise ValueError(f"warp takes image (N, C, H, W) and disp (N, 2, H, W), got {tuple(image.shape)} and "
                         f"{tuple(disp.shape)}")
    ys, xs = torch.meshgrid(torch.arange(H, device=disp.device, dtype=disp.dtype),
                            torch.arange(W, device=disp.device, dtype=disp.dtype), indexing="ij")
    x = (2 * (xs + disp[:, 0] + 0.5) / W) - 1  # pixel centres in grid_sample's [-1, 1] (align_corners=False)
    y = (2 * (ys + disp[:, 1] + 0.5) / H) - 1
    return F.grid_sample(image, torch.stack([x, y], dim=-1), mode="bilinear", padding_mode="border",
                         align_corners=False)


def compose(total: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """Chain backward displacements ``(N, 2, H, W)``: one more frame ``step`` after ``total``,
    ``G(p) = step(p) + total(p + step(p))``, so ``warp(warp(x, total), step) ~= warp(x, compose(total, step))``
    with one resample instead of two."""
    return step + warp(total, step)


class SimVP(nn.Module):
    """Encoder / translator / decoder: ``(B, context, C, H, W)`` -> ``(B, predict, C, H, W)``, H, W divisible by 4.

    ``decoder="pixels"`` draws the future frames; ``"warp"`` moves the last context frame's pixels along chained
    one-frame displacements and blends in a drawn appearance (see the module docstring)."""

    def __init__(self, channels: int, context: int, predict: int, hid_s: int = SimVPConfig.hid_s,
                 hid_t: int = SimVPConfig.hid_t, n_t: int = SimVPConfig.n_t, decoder: str = SimVPConfig.decoder):
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError(f"decoder={decoder!r} is not one of {DECODERS}")
        self.channels, self.context, self.predict, self.decoder = channels, context, predict, decoder
        self.stem = _conv(channels, hid_s, 2)  # half resolution, also the decoder's skip
        self.down = nn.Sequential(_conv(hid_s, hid_s), _conv(hid_s, hid_s, 2))  # quarter resolution
        self.mix_in = nn.Conv2d(context * hid_s, hid_t, 1)
        self.translator = nn.Sequential(*[_Res(hid_t) for _ in range(n_t)])
        self.mix_out = nn.Conv2d(hid_t, predict * hid_s, 1)
        self.up = _up(hid_s, hid_s)  # back to half resolution
        self.fuse = _conv(2 * hid_s, hid_s)  # with the skip
        outs = channels + (3 if decoder == "warp" else 0)  # warp: + a displacement (2) and a mask logit (1)
        self.readout = nn.Sequential(nn.Conv2d(hid_s, 4 * outs, 3, 1, 1), nn.PixelShuffle(2))  # full resolution
        if decoder == "warp":  # start as copy-last: no move (channels 0-1), the mask at 0.98 (channel 2)
            with torch.no_grad():  # PixelShuffle(2): conv channels 4c .. 4c+3 make output channel c
                self.readout[0].weight[:8].zero_()
                self.readout[0].bias[:8].zero_()
                self.readout[0].bias[8:12].fill_(4.0)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        B, T, C, H, W = context.shape
        if T != self.context or C != self.channels or H % 4 or W % 4:
            raise ValueError(
                f"SimVP takes (B, {self.context}, {self.channels}, H, W) with H, W divisible by 4, got "
                f"{tuple(context.shape)}"
            )
        skip = self.stem(rearrange(context, "b t c h w -> (b t) c h w"))  # (B*T, hid_s, H/2, W/2)
        z = rearrange(self.down(skip), "(b t) c h w -> b (t c) h w", b=B)
        z = self.mix_out(self.translator(self.mix_in(z)))  # (B, predict*hid_s, H/4, W/4)
        y = self.up(rearrange(z, "b (t c) h w -> (b t) c h w", t=self.predict))
        last = rearrange(skip, "(b t) c h w -> b t c h w", b=B)[:, -1:]  # the last context frame's features
        last = last.expand(B, self.predict, *last.shape[2:]).reshape_as(y)
        out = rearrange(self.readout(self.fuse(torch.cat([y, last], dim=1))), "(b t) c h w -> b t c h w", b=B)
        if self.decoder == "pixels":
            return out
        step, mask, look = out[:, :, :2], torch.sigmoid(out[:, :, 2:3]), out[:, :, 3:]
        source, total, frames = context[:, -1], torch.zeros_like(step[:, 0]), []
        for k in range(self.predict):
            total = compose(total, step[:, k])
            frames.append(mask[:, k] * warp(source, total) + (1 - mask[:, k]) * look[:, k])
        return torch.stack(frames, dim=1)


def build_model(cfg: SimVPConfig, channels: int) -> SimVP:
    return SimVP(channels, cfg.context, cfg.predict, cfg.hid_s, cfg.hid_t, cfg.n_t, cfg.decoder)


@torch.no_grad()
def predict(model: SimVP, context: torch.Tensor, horizon: int) -> torch.Tensor:
    """``horizon`` future frames after ``context (B, >= model.context, C, H, W)``, in chunks of
    ``model.predict`` (each chunk is predicted from the last ``model.context`` frames, true or predicted),
    clamped to [-1, 1]: ``(B, horizon, C, H, W)``."""
    if context.shape[1] < model.context:
        raise ValueError(f"this SimVP run needs {model.context} context frames, got {context.shape[1]}")
    frames, out = context, []
    while sum(x.shape[1] for x in out) < horizon:
        new = model(frames[:, -model.context :]).clamp(-1, 1)
        out.append(new)
        frames = torch.cat([frames, new], dim=1)
    return torch.cat(out, dim=1)[:, :horizon]


# ----------------------------------------------------------------------------------------------------- training
def train_simvp(cfg: SimVPConfig | dict[str, Any] | None = None, **overrides: Any) -> tuple[SimVP, list[dict]]:
    """Train a :class:`SimVP` on ``cfg.data`` (the training split of real data); returns the model (eval mode)
    and the logged records. Writes ``out/last.pt`` and ``out/metrics.jsonl``."""
    from .train import Batches, sample_batch  # the same (seed, step) -> batch rule as VideoGPT training

    params = cfg.to_params() if isinstance(cfg, SimVPConfig) else dict(cfg or {})
    cfg = simvp_config({**params, **overrides})
    set_threads(cfg.threads)
    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    if (out / "last.pt").exists() and not cfg.overwrite:
        raise FileExistsError(f"{out} already holds a run (last.pt): replace it with overwrite=true or another out=")
    torch.manual_seed(cfg.seed)
    frames = cfg.context + cfg.predict
    dataset = make_dataset(cfg.data, frames, cfg.image_size, cfg.num_samples, cfg.seed, split="train")
    channels = dataset[0]["video"].shape[1]
    model = build_model(cfg, channels).to(device)
    opt = optim.make_optimizer(model, cfg.lr, cfg.weight_decay)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint.atomic_write(out / "metrics.jsonl", "")
    records: list[dict] = []

    def save(step: int, wall: float, stopped_by: str) -> None:
        state = {
            "kind": KIND,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "step": step,
            "config": cfg.to_params(),
            "channels": channels,
            "train_wall_s": wall,
            "stopped_by": stopped_by,
        }
        checkpoint.save(state, out / "last.pt")

    t0 = time.perf_counter()
    budget = cfg.minutes * 60 if cfg.minutes > 0 else math.inf
    bar = tqdm(range(cfg.steps), desc="simvp", disable=not cfg.progress)
    model.train()
    done, stopped_by = 0, "steps"
    ahead = cfg.prefetch == "on" or (cfg.prefetch == "auto" and device.type == "cuda")
    batches = Batches(lambda s: sample_batch(dataset, s, cfg.batch_size, frames, cfg.seed, slice(None)), cfg.steps,
                      ahead)
    for step in bar:
        video = batches(step)[0].to(device)
        lr_step = optim.schedule_step(step, cfg.steps, time.perf_counter() - t0, budget)  # as minivgpt.train
        lr = optim.lr_at(lr_step, cfg.lr, cfg.steps, cfg.warmup, cfg.min_lr_ratio)
        optim.set_lr(opt, lr)
        pred, target = model(video[:, : cfg.context]), video[:, cfg.context :]
        mse = F.mse_loss(pred, target)
        loss = mse
        if cfg.l1_weight:
            loss = loss + cfg.l1_weight * F.l1_loss(pred, target)
        if cfg.ssim_weight:
            loss = loss + cfg.ssim_weight * (1 - metrics.ssim((pred + 1) / 2, (target + 1) / 2, data_range=1.0))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip).item()
        if not (math.isfinite(loss.item()) and math.isfinite(grad_norm)):
            raise RuntimeError(
                f"loss {loss.item()} / gradient norm {grad_norm} at step {step}: stopped before updating the "
                f"weights; the last good checkpoint is {out / 'last.pt'} (lower lr=)"
            )
        opt.step()
        done = step + 1
        wall = time.perf_counter() - t0
        over = wall > budget
        if done % cfg.log_every == 0 or done == cfg.steps or over:
            rec = {"step": done, "loss": loss.item(), "mse": mse.item(), "lr": lr, "grad_norm": grad_norm,
                   "wall_s": round(wall, 2)}
            records.append(rec)
            checkpoint.append_jsonl(out / "metrics.jsonl", rec)
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if over:
            stopped_by = "minutes"
            print(f"simvp: the {cfg.minutes}-minute budget is spent after {done} of {cfg.steps} steps; saving")
            break
        if done % cfg.ckpt_every == 0 and done < cfg.steps:
            save(done, wall, "checkpoint")
    bar.close()
    batches.close()
    save(done, time.perf_counter() - t0, stopped_by)
    return model.eval(), records


def load_simvp(folder: str | os.PathLike, device: str = "cpu") -> tuple[SimVP, SimVPConfig]:
    """Load a SimVP run folder written by :func:`train_simvp`: the model (eval mode) and its config."""
    ckpt = checkpoint.load_latest(folder, map_location=device)
    if ckpt is None:
        raise checkpoint.CheckpointError(f"no checkpoint in {folder} (expected last.pt): train first")
    if ckpt.get("kind") != KIND:
        raise checkpoint.CheckpointError(f"{folder} holds a {ckpt.get('kind', 'videogpt')} run, not a SimVP run")
    cfg = simvp_config(ckpt["config"])
    model = build_model(cfg, int(ckpt["channels"]))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), cfg


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    exit_on_help(argv, lambda: cli_help(__doc__, {"parameters (SimVPConfig)": SimVPConfig()}))
    params = parse_cli(argv)
    _, records = train_simvp(params)
    if records:
        print(json.dumps(records[-1]))


if __name__ == "__main__":
    main()
