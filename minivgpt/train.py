"""Train VideoGPT by next clip diffusion: ``python -m minivgpt.train key=value ...``.

The same :func:`train` is what notebooks call. One process, or ``torchrun --nproc_per_node N`` (DDP:
gloo on CPU, nccl on GPU); ``batch_size`` is the global batch and each rank takes its slice, so N
processes see the same samples and the same noise per step as one process. ``parallel=fsdp`` shards the
model, EMA and optimizer over the ranks instead of replicating them (:mod:`minivgpt.parallel`), with sharded
checkpoints in ``OUT/ckpt_fsdp`` and the full weights in ``OUT/last.pt`` for everything that loads a run.

Every step is a pure function of ``(seed, step)``: the batch indices, temporal crops and all diffusion
noise are drawn from a generator seeded with both. With atomic checkpoints that hold the model, EMA,
optimizer and step, ``resume=true`` continues exactly where a killed run stopped. (A wall-clock budget,
``minutes=``, is the one exception: when it binds, the schedule follows the clock.)

Runs are never mixed or overwritten silently: a fresh run refuses a folder that holds one (``resume=true``
or ``overwrite=true``), a resume refuses a config that differs in anything but :data:`RESUMABLE_CHANGES`,
and ``resume=true`` on an empty folder warns and starts at step 0 (so one command serves first start and
restart of a preemptible job). A NaN/inf loss or gradient norm stops the run before the weights change.

Derived in notebooks/04 (§ training) and notebooks/08 (stages, resume, torchrun).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import math
import os
import random
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from . import checkpoint, optim, parallel
from .autoencoder import IdentityAutoencoder, cached_autoencoder, load_autoencoder
from .config import (
    Config,
    DataConfig,
    RandomCut,
    config_help,
    exit_on_help,
    from_params,
    parse_cli,
    parse_stages,
    stage_frames,
    valid_keys,
)
from .data import make_dataset, video_batch
from .diagnostics import history_gain
from .diffusion import RectifiedFlow
from .hardware import resolve_amp, resolve_device, set_threads
from .model import VideoGPT
from .tokenizer import VideoTokenizer


class NonFiniteLoss(RuntimeError):
    """The loss or the gradient norm became NaN or inf; the run stopped before that step changed the weights,
    and nothing non-finite was saved."""


# settings that may change when a run is resumed; any other difference is refused (it would mix two runs)
RESUMABLE_CHANGES = frozenset(
    {"steps", "stop_after", "log_every", "ckpt_every", "progress", "threads", "device", "resume", "overwrite",
     "out", "minutes", "eval_every", "prefetch"}
)


@dataclass
class TrainResult:
    # under parallel=fsdp, model and ema are this rank's sharded modules; train.load_run(out) gives full ones
    model: VideoGPT  # raw weights
    ema: VideoGPT  # EMA weights (use these to sample)
    tokenizer: VideoTokenizer
    config: Config
    records: list[dict] = field(default_factory=list)
    out: Path | None = None
    precision: str = "fp32"  # what amp resolved to: "bf16" (autocast) or "fp32"
    stopped_by_budget: bool = False  # training ended early at the `minutes` budget
    history: list[dict] = field(default_factory=list)  # history diagnostics (eval_every), "type": "history"


# ----------------------------------------------------------------------------------------- building
def build_tokenizer(cfg: Config, channels: int) -> VideoTokenizer:
    """The frozen frame autoencoder + patching named by ``cfg.data.autoencoder``."""
    d = cfg.data
    ae = IdentityAutoencoder(channels) if d.autoencoder == "identity" else load_autoencoder(d.autoencoder)
    return VideoTokenizer(ae, d.patch_size, d.image_size)


def resolve_autoencoder(cfg: Config, num_frames: int, rank: int = 0, world: int = 1) -> Config:
    """``autoencoder=auto`` -> the path of the frame autoencoder cached for this data (trained once, on rank
    0, by :func:`minivgpt.autoencoder.cached_autoencoder`); any other value is returned unchanged. The run
    records the path, so ``load_run`` and a resume read the same file."""
    d = cfg.data
    if d.autoencoder != "auto":
        return cfg
    key = {"data": d.data, "image_size": d.image_size, "num_samples": d.num_samples, "frames": num_frames,
           "seed": cfg.train.seed, **data_kwargs(d)}
    path = [None]
    if rank == 0:  # the training frames are gathered only when the cache misses
        dataset = functools.partial(build_dataset, cfg, num_frames, cfg.train.seed, split="train")
        path[0] = cached_autoencoder(dataset, key, progress=cfg.train.progress)
    if world > 1:
        dist.broadcast_object_list(path, src=0)
    return from_params({"autoencoder": path[0]}, base=cfg)


def resolve_data_moments(
    cfg: Config, dataset, tokenizer: VideoTokenizer, device: torch.device, videos: int = 64
) -> Config:
    """For ``precond=edm`` with ``sigma_data=0``: measure the mean and spread of the clean tokens on the
    first ``videos`` training videos and return the config with them (``data_mean``, ``sigma_data``), so the
    run's saved config holds the values its model uses. Deterministic: every rank measures the same."""
    m = cfg.model
    if m.precond != "edm" or m.sigma_data > 0:
        return cfg
    x = tokenizer.encode(video_batch(dataset, range(min(videos, len(dataset))))["video"].to(device), 1).float()
    mean, std = float(x.mean()), float(x.std())
    return from_params({"data_mean": round(mean, 4), "sigma_data": round(max(std, 1e-3), 4)}, base=cfg)


def build_model(cfg: Config, tokenizer: VideoTokenizer) -> VideoGPT:
    return VideoGPT(cfg.model, in_dim=tokenizer.token_dim, grid=tokenizer.grid)


def build_dataset(cfg: Config, num_frames: int, seed: int, num_samples: int | None = None, split: str = "all"):
    """The dataset named by ``cfg.data``. Synthetic sets are split by seed (validation uses another seed);
    real data (files, digits) by index: ``split="train"`` never holds a ``split="val"`` sample."""
    d = cfg.data
    n = num_samples or d.num_samples
    return make_dataset(d.data, num_frames, d.image_size, n, seed, split=split, **data_kwargs(d))


def data_kwargs(d: DataConfig) -> dict[str, Any]:
    """The dataset-specific keys of ``d`` that :func:`minivgpt.data.make_dataset` takes (ball counts)."""
    return {"min_balls": d.min_balls, "max_balls": d.max_balls} if d.data == "bouncing_balls" else {}


def lr_at(step: int, cfg: Config) -> float:
    """The run's learning rate at ``step``: :func:`minivgpt.optim.lr_at` with the config's numbers."""
    t = cfg.train
    return optim.lr_at(step, t.lr, t.steps, t.warmup, t.min_lr_ratio)


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1 - decay)


def stage_at(step: int, stages: list[tuple[int, int | RandomCut, int]]) -> tuple[int, int, int | RandomCut]:
    """``(stage index, K, F)`` of the progressive schedule at ``step`` (F a :class:`RandomCut` for a random
    cut stage; :func:`cut_at` draws its cut)."""
    end = 0
    for i, (k, f, n) in enumerate(stages):
        end += n
        if step < end:
            return i, k, f
    return len(stages) - 1, stages[-1][0], stages[-1][1]


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def cut_at(cut: RandomCut, seed: int, step: int) -> tuple[int, ...]:
    """Step ``step``'s clip lengths in a random-cut stage: one cut for the whole (global) batch, drawn from
    ``(seed, step)`` apart from the batch and noise generator, so every rank and a resumed run cut alike."""
    return cut.draw(random.Random(f"cut:{seed}:{step}"))


def sample_batch(dataset, step: int, batch_size: int, num_frames: int, seed: int, shard: slice):
    """Step ``step``'s global batch, drawn from ``(seed, step)``: sample indices and a random temporal crop
    per sample. Only the ``shard`` that this rank trains on is loaded.

    Returns ``(video (b, num_frames, C, H, W), labels (b,), generator)``; the generator goes on to draw the
    step's diffusion noise for the whole global batch, so every rank's slice of it is what one process uses.
    """
    g = step_generator(seed, step)
    idx = torch.randint(len(dataset), (batch_size,), generator=g)
    starts = torch.randint(dataset.num_frames - num_frames + 1, (batch_size,), generator=g)
    batch = video_batch(dataset, idx[shard].tolist())
    video = torch.stack([v[s : s + num_frames] for v, s in zip(batch["video"], starts[shard].tolist())])
    return video, batch["label"], g


class Batches:
    """``batches(step)``: step ``step``'s batch from ``draw(step)``, drawn one step ahead on a background thread
    when ``ahead`` (the draw then overlaps the step's training; on one H200 drawing 128 Moving MNIST sequences
    took half of a training step). The batches are the same either way: ``draw`` is a pure function of the step
    (:func:`sample_batch`). ``last``: the step after the last one drawn ahead; call :meth:`close` at the end.
    """

    def __init__(self, draw: Callable[[int], Any], last: int, ahead: bool):
        self.draw, self.last = draw, last
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="minivgpt-batches") if ahead else None
        self.pending: dict[int, Future] = {}

    def __call__(self, step: int) -> Any:
        if self.pool is None:
            return self.draw(step)
        future = self.pending.pop(step, None) or self.pool.submit(self.draw, step)
        if step + 1 < self.last:
            self.pending[step + 1] = self.pool.submit(self.draw, step + 1)
        return future.result()

    def close(self) -> None:
        if self.pool is not None:
            for future in self.pending.values():
                future.cancel()
            self.pending.clear()
            self.pool.shutdown(wait=True)


# ----------------------------------------------------------------------------------------- distributed
def dist_info(parallel: str = "ddp", device: str = "auto") -> tuple[int, int]:
    """(rank, world size); initialises the process group under torchrun (``parallel=fsdp``: always).

    The backend follows the training device, not the machine: NCCL for ``device`` on CUDA, gloo for CPU
    training (also on a machine that has GPUs, where NCCL would refuse CPU tensors)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if parallel == "fsdp" and "MASTER_ADDR" not in os.environ and not dist.is_initialized():
        raise ValueError(
            "parallel=fsdp shards the model over torchrun processes: run python -m torch.distributed.run "
            "--nproc_per_node N -m minivgpt.train ... parallel=fsdp (or use parallel=ddp in one process)"
        )
    if (world > 1 or parallel == "fsdp") and not dist.is_initialized():
        on_cuda = resolve_device(device).type == "cuda"
        if on_cuda:  # before the process group, so NCCL binds this rank's GPU
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if on_cuda else "gloo")
    return (dist.get_rank(), world) if dist.is_initialized() else (0, 1)


def prepare_out(out: Path, resume: bool, overwrite: bool, delete: bool = True) -> None:
    """Refuse to overwrite a run by accident; say so when ``resume`` finds nothing to resume."""
    has_ckpt = any((out / name).exists() for name in ("last.pt", "prev.pt", checkpoint.SHARDED))
    has_run = has_ckpt or (out / "metrics.jsonl").exists()
    if resume and not has_ckpt:
        warnings.warn(f"resume=true but {out} holds no checkpoint: starting a new run at step 0", stacklevel=3)
    elif not resume and has_run:
        if not overwrite:
            raise FileExistsError(
                f"{out} already holds a run (last.pt / metrics.jsonl). Continue it with resume=true, replace it "
                f"with overwrite=true, or choose another out="
            )
        if delete:
            for name in ("last.pt", "prev.pt", "metrics.jsonl"):
                (out / name).unlink(missing_ok=True)
            shutil.rmtree(out / checkpoint.SHARDED, ignore_errors=True)


def check_resumable(saved: dict[str, Any], cfg: Config, out: Path) -> None:
    """Refuse to resume a run whose saved config differs from ``cfg`` in a key that changes the run."""
    now = cfg.to_params()
    diff = sorted(k for k in saved.keys() & now.keys() if k not in RESUMABLE_CHANGES and saved[k] != now[k])
    if diff:
        pairs = ", ".join(f"{k}: saved {saved[k]!r} != now {now[k]!r}" for k in diff)
        raise ValueError(
            f"cannot resume {out}: the config differs in {pairs}. Only {sorted(RESUMABLE_CHANGES)} may change on "
            f"resume; resume with the saved values, or start a new run (another out=, or overwrite=true)"
        )


def check_latent_shards(index: dict[str, Any], autoencoder: str) -> None:
    """Latent shards must have been encoded by the autoencoder this run decodes with (same file bytes)."""
    from .prepare import file_hash

    want = index.get("config", {}).get("autoencoder_sha256")
    if autoencoder == "identity" or not Path(autoencoder).is_file() or file_hash(autoencoder) != want:
        raise ValueError(
            f"these shards hold latents of another autoencoder than autoencoder={autoencoder!r}: pass the "
            "autoencoder= file they were prepared with (python -m minivgpt.prepare ... autoencoder=PATH)"
        )


def all_finite(module: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in module.parameters())


def load_resume(
    out: Path, cfg: Config, model: VideoGPT, ema: VideoGPT, opt: torch.optim.Optimizer, device: torch.device
) -> dict[str, Any] | None:
    """Load the run in ``out`` into ``model``, ``ema`` and ``opt`` (sharded ones from ``OUT/ckpt_fsdp`` under
    ``parallel=fsdp``); returns the checkpoint's record (step, config), or None when there is none."""
    fsdp = cfg.train.parallel == "fsdp"
    found = checkpoint.sharded_latest(out / checkpoint.SHARDED)
    ckpt = None if fsdp else checkpoint.load_latest(out, map_location=device)
    saved = [rec["config"] for _, rec in found] if fsdp else [ckpt["config"]] if ckpt is not None else []
    if not saved and (found or (out / "last.pt").exists() or (out / "prev.pt").exists()):
        other = "ddp" if fsdp else "fsdp"
        raise ValueError(
            f"cannot resume {out}: it holds a parallel={other} run; resume it with parallel={other}"
            + (" under torchrun" if other == "fsdp" else "")
        )
    for config in saved:
        check_resumable(config, cfg, out)
    if fsdp:
        record = parallel.load_sharded(found, model, ema, opt)
        if record is None and found:
            raise checkpoint.CheckpointError(f"no sharded checkpoint in {out / checkpoint.SHARDED} could be read")
        return record
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        opt.load_state_dict(ckpt["optimizer"])
    return ckpt


# ----------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(model, tokenizer, cfg: Config, num_clips: int, frames: int, batches: int = 4, batch_size: int = 16):
    """Validation loss on held-out videos (synthetic: seed + 1; real data: the validation split) with fixed
    noise, and the loss of the best constant predictor (the mean clean token of the held-out set), for scale."""
    device = next(model.parameters()).device
    d = cfg.diffusion
    flow = RectifiedFlow(d.history_noise, d.t_sampling, 0.0, t_location=d.t_location)
    n = batches * batch_size
    data = build_dataset(cfg, num_clips * frames, seed=cfg.train.seed + 1, num_samples=n, split="val")
    losses, xs = [], []
    for b in range(batches):
        batch = video_batch(data, [i % len(data) for i in range(b * batch_size, (b + 1) * batch_size)])
        x = tokenizer.encode(batch["video"][:, : num_clips * frames], frames).to(device)
        cond = batch["label"].to(device) if cfg.model.num_classes > 0 else None
        losses.append(flow.loss(model, x, cond, generator=step_generator(cfg.train.seed + 7, b)).item())
        xs.append(x)
    x = torch.cat(xs)
    const = (x - x.mean(dim=0, keepdim=True)).pow(2).mean().item()
    return {"val_loss": sum(losses) / len(losses), "const_loss": const}


def history_data(
    cfg: Config, stages: list, tokenizer: VideoTokenizer, device: torch.device, num_videos: int = 32
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Held-out tokens ``(num_videos, K, F, N, D)`` (and labels, for a class-conditional model) on which
    training logs the history diagnostic (:func:`minivgpt.diagnostics.history_gain`, ``eval_every=``).

    K x F is the last stage's (for a random-cut last stage: its T frames in clips of ``frames_per_clip``),
    so the records of one run are comparable across steps and stages.
    """
    k, f, _ = stages[-1]
    if isinstance(f, RandomCut):
        k, f = f.frames // cfg.train.frames_per_clip, cfg.train.frames_per_clip
    if k < 2:
        raise ValueError(f"eval_every needs a last stage of at least 2 clips (history), got {k}x{f}")
    data = build_dataset(cfg, k * f, seed=cfg.train.seed + 1, num_samples=num_videos, split="val")
    batch = video_batch(data, [i % len(data) for i in range(num_videos)])
    x = tokenizer.encode(batch["video"][:, : k * f].to(device), f)
    return x, batch["label"].to(device) if cfg.model.num_classes > 0 else None


# ----------------------------------------------------------------------------------------- training
def train(cfg: Config | dict[str, Any] | None = None, **overrides: Any) -> TrainResult:
    """Train (or resume) a VideoGPT; returns the model, its EMA, the tokenizer and the logged records.

    ``cfg`` is a :class:`Config` or flat parameters; keyword ``overrides`` are flat parameters too,
    e.g. ``train(steps=200, batch_size=8, out="runs/x")``.
    """
    if isinstance(cfg, Config):
        cfg = from_params(overrides, base=cfg)
    else:
        cfg = from_params({**(cfg or {}), **overrides})
    t = cfg.train
    rank, world = dist_info(t.parallel, t.device)
    fsdp = t.parallel == "fsdp"
    if t.batch_size % (world * t.grad_accum):
        raise ValueError(
            f"batch_size={t.batch_size} must be divisible by world size {world} x grad_accum {t.grad_accum}"
        )
    set_threads(t.threads)
    device = resolve_device(t.device)
    use_bf16 = resolve_amp(t.amp, device)
    stages = parse_stages(t.stages, t.clips, t.frames_per_clip, t.steps)
    if sum(n for _, _, n in stages) != t.steps and t.stages:
        raise ValueError(f"stages={t.stages!r} sum to {sum(n for *_, n in stages)} steps but steps={t.steps}")
    if all(k == 1 for k, _, _ in stages) and rank == 0:
        given = f"stages={t.stages}" if t.stages else f"clips={t.clips}"
        warnings.warn(
            f"every stage trains on single clips ({given}): the model never denoises a clip from a clean "
            "history, so its rollouts and forecasts mean nothing after the first clip; give a stage of 2 or "
            "more clips (e.g. stages=1x2:1000,4x2:*) to train a forecaster",
            stacklevel=2,
        )
    max_frames = max(stage_frames(k, f) for k, f, _ in stages)
    cfg = resolve_autoencoder(cfg, max_frames, rank, world)
    torch.manual_seed(t.seed)

    dataset = build_dataset(cfg, max_frames, t.seed, split="train")
    tokenizer = build_tokenizer(cfg, getattr(dataset, "channels", None) or dataset[0]["video"].shape[1]).to(device)
    if getattr(dataset, "latents", False):  # latent shards: the autoencoder already ran, once, in prepare
        check_latent_shards(dataset.index, cfg.data.autoencoder)
        tokenizer.latent_inputs = True
    cfg = resolve_data_moments(cfg, dataset, tokenizer, device)
    model = build_model(cfg, tokenizer)
    ema = copy.deepcopy(model).requires_grad_(False)
    if fsdp:  # shard the weights and, alike, the EMA, block by block on the way to the device
        parallel.wrap_model(model, device, bf16=use_bf16 and device.type == "cuda")
        parallel.wrap_model(ema, device)
    else:
        model, ema = model.to(device), ema.to(device)
    opt = optim.make_optimizer(model, t.lr, t.weight_decay, (t.beta1, t.beta2))
    d = cfg.diffusion
    flow = RectifiedFlow(d.history_noise, d.t_sampling, d.cond_drop, d.loss_weight, d.t_location)
    out = Path(t.out)
    start, records, history = 0, [], []
    prepare_out(out, t.resume, t.overwrite, delete=rank == 0)
    if world > 1:  # every rank has checked the folder before rank 0 writes to it
        dist.barrier()
    if t.resume:
        ckpt = load_resume(out, cfg, model, ema, opt, device)
        if ckpt is not None:
            start = int(ckpt["step"])
            saved = _read_records(out / "metrics.jsonl", upto=start)
            records = [r for r in saved if r.get("type") != "history"]
            history = [r for r in saved if r.get("type") == "history"]
    net = model
    if world > 1 and not fsdp:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if t.compile:
        net = torch.compile(net)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        _write_records(out / "metrics.jsonl", sorted(records + history, key=lambda r: r.get("step", 0)))
    # the history diagnostic runs the model: under FSDP every rank takes part (rank 0 records it)
    diag = history_data(cfg, stages, tokenizer, device) if t.eval_every and (rank == 0 or fsdp) else None

    def save(step: int) -> None:
        if fsdp:
            if not parallel.all_finite(model, ema):
                raise NonFiniteLoss(f"weights are not finite at step {step}; the checkpoints were not overwritten")
            full = {"model": parallel.full_weights(model), "ema": parallel.full_weights(ema)}
            record = {"step": step, "config": cfg.to_params(), "channels": tokenizer.channels}
            parallel.save_sharded(out / checkpoint.SHARDED, model, ema, opt, record)
            if rank == 0:  # full weights (no optimizer) for load_run, evaluate and notebooks
                checkpoint.save({**full, **record}, out / "last.pt")
            dist.barrier()
        elif rank == 0:
            if not (all_finite(model) and all_finite(ema)):  # never write non-finite weights as "last good"
                raise NonFiniteLoss(f"weights are not finite at step {step}; {out / 'last.pt'} was not overwritten")
            checkpoint.save(
                {
                    "model": model.state_dict(),
                    "ema": ema.state_dict(),
                    "optimizer": opt.state_dict(),
                    "step": step,
                    "config": cfg.to_params(),
                    "channels": tokenizer.channels,
                },
                out / "last.pt",
            )

    local = t.batch_size // world
    micro = local // t.grad_accum
    bar = tqdm(range(start, t.steps), initial=start, total=t.steps, desc="train", disable=not t.progress or rank != 0)
    t0, tokens_seen = time.perf_counter(), 0
    budget_s = t.minutes * 60 if t.minutes > 0 else math.inf
    stopped_by_budget = False
    model.train()
    shard = slice(rank * local, (rank + 1) * local)
    ahead = t.prefetch == "on" or (t.prefetch == "auto" and device.type == "cuda")
    batches = Batches(
        lambda s: sample_batch(dataset, s, t.batch_size, stage_frames(*stage_at(s, stages)[1:]), t.seed, shard),
        t.steps if not t.stop_after else min(t.steps, t.stop_after),
        ahead,
    )
    for step in bar:
        stage, K, Fr = stage_at(step, stages)
        lengths = cut_at(Fr, t.seed, step) if isinstance(Fr, RandomCut) else None
        video, labels, g = batches(step)
        if lengths is None:
            x_local = tokenizer.encode(video.to(device), Fr)
        else:  # a random cut: frames (b, T, N, D), clip k has lengths[k] of them
            K, Fr = len(lengths), list(lengths)
            x_local = tokenizer.encode(video.to(device), 1).flatten(1, 2)
        rand = {k: v[shard] for k, v in flow.draw((t.batch_size, *x_local.shape[1:]), g, lengths).items()}
        lr_step = step
        if budget_s < math.inf:  # anneal by whichever is further along, steps or the time budget
            elapsed = _max_over_ranks(time.perf_counter() - t0, world, device)
            lr_step = optim.schedule_step(step, t.steps, elapsed, budget_s)
        lr = lr_at(lr_step, cfg)
        optim.set_lr(opt, lr)
        opt.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for m in range(t.grad_accum):
            sl = slice(m * micro, (m + 1) * micro)
            x, r = x_local[sl], {k: v[sl] for k, v in rand.items()}
            cond = labels[sl].to(device) if cfg.model.num_classes > 0 else None
            last = m == t.grad_accum - 1  # DDP all-reduces (FSDP reduce-scatters) only on the last micro-batch
            ctx = net.no_sync() if world > 1 and not last and not fsdp else contextlib.nullcontext()
            if fsdp:
                model.set_requires_gradient_sync(last)
            with ctx, torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss = flow.loss(net, x, cond, r, lengths=lengths) / t.grad_accum
            loss.backward()
            loss_sum += loss.item()
        if world > 1:
            buf = torch.tensor([loss_sum], device=device)
            dist.all_reduce(buf)
            loss_sum = buf.item() / world
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip).item()
        for what, value in (("loss", loss_sum), ("gradient norm", grad_norm)):
            if not math.isfinite(value):
                raise NonFiniteLoss(
                    f"{what} is {value} at step {step}; stopped before updating the weights, without saving. The "
                    f"last good checkpoint is {out / 'last.pt'} (lower lr= or raise grad_clip=, then resume=true)"
                )
        opt.step()
        ema_update(ema, model, t.ema_decay if step >= t.warmup else 0.0)
        tokens_seen += t.batch_size * 2 * x_local[0].numel() // x_local.shape[-1]
        done = step + 1
        if rank == 0 and (done % t.log_every == 0 or done == t.steps):
            rec = {
                "step": done,
                "loss": loss_sum,
                "lr": lr,
                "grad_norm": grad_norm,
                "stage": stage,
                "clips": K,
                "frames_per_clip": Fr,
                "tokens_per_s": tokens_seen / (time.perf_counter() - t0),
            }
            records.append(rec)
            checkpoint.append_jsonl(out / "metrics.jsonl", rec)
            bar.set_postfix(loss=f"{loss_sum:.4f}", stage=f"{K}x{Fr}" if lengths is None else "+".join(map(str, Fr)))
        if diag is not None and (done % t.eval_every == 0 or done == t.steps):
            rec = history_gain(model, diag[0], cond=diag[1]).to_record(done)
            if rank == 0:
                history.append(rec)
                checkpoint.append_jsonl(out / "metrics.jsonl", rec)
        over_budget = budget_s < math.inf and _max_over_ranks(time.perf_counter() - t0, world, device) > budget_s
        if done % t.ckpt_every == 0 or done == t.steps or done == t.stop_after or over_budget:
            save(done)
        if over_budget and done < t.steps:
            stopped_by_budget = True
            if rank == 0:
                note = {"step": done, "stopped_by_budget_minutes": t.minutes}
                records.append(note)
                checkpoint.append_jsonl(out / "metrics.jsonl", note)
                bar.write(f"time budget minutes={t.minutes} reached: stopped at step {done} of {t.steps}")
            break
        if done == t.stop_after:
            break
    bar.close()
    batches.close()
    if world > 1:
        dist.barrier()
    model.eval()
    ema.eval()
    precision = "bf16" if use_bf16 else "fp32"
    return TrainResult(model, ema, tokenizer, cfg, records, out, precision, stopped_by_budget, history)


def _max_over_ranks(value: float, world: int, device: torch.device) -> float:
    """The largest ``value`` over all ranks (so every rank takes the same budget decisions)."""
    if world == 1:
        return value
    buf = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(buf, op=dist.ReduceOp.MAX)
    return float(buf.item())


def _read_records(path: Path, upto: int) -> list[dict]:
    if not path.exists():
        return []
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in recs if r.get("step", 0) <= upto]


def _write_records(path: Path, records: list[dict]) -> None:
    checkpoint.atomic_write(path, "".join(json.dumps(r) + "\n" for r in records))


def load_run(
    folder: str | os.PathLike, device: str = "cpu", use_ema: bool = True
) -> tuple[VideoGPT, VideoTokenizer, Config]:
    """Load a trained run (``OUT/last.pt``, or ``prev.pt`` if that is damaged): model, tokenizer, config."""
    ckpt = checkpoint.load_latest(folder, map_location=device)
    if ckpt is None:
        raise checkpoint.CheckpointError(f"no checkpoint in {folder} (expected last.pt): train first")
    return run_from_checkpoint(ckpt, folder, device, use_ema)


def run_from_checkpoint(
    ckpt: dict, folder: str | os.PathLike, device: str = "cpu", use_ema: bool = True
) -> tuple[VideoGPT, VideoTokenizer, Config]:
    """Model (eval mode), tokenizer and config of a loaded checkpoint dict (``folder`` only names it in warnings)."""
    known = valid_keys()
    stale = sorted(set(ckpt["config"]) - set(known))
    if stale:  # written by an older version: those settings no longer exist, the weights still load
        warnings.warn(f"{folder}: ignoring config keys this version no longer has: {stale}", stacklevel=2)
    cfg = from_params({k: v for k, v in ckpt["config"].items() if k in known})
    tokenizer = build_tokenizer(cfg, int(ckpt["channels"]))
    model = build_model(cfg, tokenizer)
    model.load_state_dict(ckpt["ema" if use_ema else "model"])
    return model.to(device).eval(), tokenizer.to(device), cfg


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    exit_on_help(argv, lambda: config_help(__doc__))
    params = parse_cli(argv)
    try:
        result = train(params)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if result.records:
        print(json.dumps(result.records[-1]))


if __name__ == "__main__":
    main()
