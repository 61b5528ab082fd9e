"""The learning-rate schedule and the optimizer builder, in plain numbers (as nanoGPT's ``get_lr`` and
``configure_optimizers``). Used by VideoGPT training, the frame autoencoder and the transfer heads.

Derived in notebooks/04 (§ training loop).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


def lr_at(step: int, lr: float, steps: int, warmup: int = 0, min_lr_ratio: float = 0.0) -> float:
    """Learning rate at ``step`` (0-based): linear warmup over ``warmup`` steps, then cosine decay from
    ``lr`` to ``lr * min_lr_ratio`` at ``steps``; constant at the floor after ``steps``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def schedule_step(step: int, steps: int, elapsed_s: float, budget_s: float = math.inf) -> int:
    """The step the schedule is read at under a wall-clock budget: ``step``, or further along when the time
    spent, ``elapsed_s`` of ``budget_s``, is (so the learning rate anneals by steps or by time, whichever
    is further along, and a run cut off by its budget ends annealed)."""
    if budget_s == math.inf:
        return step
    return max(step, round(min(1.0, elapsed_s / budget_s) * steps))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate to ``lr`` (times the group's ``lr_scale`` if it has one)."""
    for group in opt.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def make_optimizer(
    params: Iterable[torch.nn.Parameter] | torch.nn.Module,
    lr: float,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.95),
    lr_scale: float = 1.0,
    extra_groups: Iterable[dict] = (),
) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on biases, norm gains or other vectors).

    ``params`` is a module or an iterable of parameters (those without ``requires_grad`` are skipped);
    ``lr_scale`` multiplies the learning rate of these groups under :func:`set_lr`, and ``extra_groups`` are
    further AdamW parameter groups (e.g. a head with its own ``lr_scale``), split the same way.
    """
    groups = []
    for spec in [{"params": params, "lr_scale": lr_scale}, *extra_groups]:
        ps = spec["params"]
        ps = [p for p in (ps.parameters() if isinstance(ps, torch.nn.Module) else ps) if p.requires_grad]
        scale = spec.get("lr_scale", 1.0)
        wd = spec.get("weight_decay", weight_decay)
        groups.append({"params": [p for p in ps if p.ndim >= 2], "weight_decay": wd, "lr_scale": scale})
        groups.append({"params": [p for p in ps if p.ndim < 2], "weight_decay": 0.0, "lr_scale": scale})
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError("make_optimizer: no trainable parameters")
    return torch.optim.AdamW(groups, lr=lr, betas=betas)
