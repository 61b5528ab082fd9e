"""FSDP for training (``parallel=fsdp``): shard every block and the root, save and load sharded checkpoints.

Used by :func:`minivgpt.train.train` under ``torchrun ... parallel=fsdp``; it extends the DDP path derived in
notebooks/08 (§4, two processes, one run): the same global batch sliced over ranks, the same result.

- **Sharding** (PyTorch's FSDP2, ``fully_shard``): every transformer block, then the root (embeddings,
  output head), becomes a unit whose parameters are DTensors sharded on dim 0, so each of N ranks holds
  1/N of every weight, gradient and AdamW moment. A unit's full weights exist only while it runs (all-gathered
  before, freed after); gradients are reduce-scattered (averaged, as DDP's all-reduce). On CUDA with bf16
  the unit computes in bf16 and reduces in fp32 (``MixedPrecisionPolicy``); the sharded master weights stay
  fp32. ``torch.nn.utils.clip_grad_norm_`` reduces the norm over the shards (a test checks it against one
  process).
- **EMA**: sharded alike, so the update ``lerp`` runs on each rank's own shard with no communication and
  the EMA costs 1/N of a model per rank, as the weights do (a full copy per rank would undo the point of
  FSDP for a model that does not fit one GPU).
- **Checkpoints** (``torch.distributed.checkpoint``): every rank writes its shards of the model, the EMA and
  the optimizer into ``OUT/ckpt_fsdp/.tmp``, then rank 0 commits the folder
  (:func:`minivgpt.checkpoint.commit_folder`: rename, then ``last.json`` atomically, the previous one kept).
  A resume loads the newest readable one, falling back to the previous; DCP reshards on load, so a run may
  resume on another number of ranks (the result then differs by float rounding only). Ranks on several
  nodes need ``out=`` on a shared filesystem.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from . import checkpoint


def wrap_model(model: torch.nn.Module, device: torch.device, bf16: bool = False) -> torch.nn.Module:
    """Shard ``model`` in place over all ranks: each block of ``model.blocks``, then the root; returns it.

    ``bf16``: compute in bf16 and reduce gradients in fp32 (use on CUDA); otherwise all fp32. Call before
    building the optimizer (it must hold the sharded parameters) and before loading a sharded checkpoint.
    """
    # FSDP warns when a unit returns a view (an in-place op on it would skip the unit's backward hook); the
    # blocks and the model only ever use their outputs out of place
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else None
    kw: dict[str, Any] = {"mesh": mesh} | ({"mp_policy": mp} if mp is not None else {})
    for block in model.blocks:
        fully_shard(block, **kw)
    fully_shard(model, **kw)
    return model


def all_finite(*modules: torch.nn.Module) -> bool:
    """Whether every parameter of ``modules`` is finite on every rank (a collective: call on all ranks)."""
    ok = all(bool(torch.isfinite(_local(p)).all()) for m in modules for p in m.parameters())
    flag = torch.tensor([float(ok)], device=next(modules[0].parameters()).device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def full_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The full (unsharded) state dict of a sharded ``model`` on CPU on rank 0 ({} on other ranks); a
    collective. Rank 0 needs host memory for the whole model, not GPU memory."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def save_sharded(
    root: Path, model: torch.nn.Module, ema: torch.nn.Module, opt: torch.optim.Optimizer, record: dict[str, Any]
) -> None:
    """Write the sharded model, EMA and optimizer of every rank into a new folder of ``root``
    (``OUT/ckpt_fsdp``) and commit it with ``record`` (step, config) as the latest checkpoint; all ranks call it.
    """
    root = Path(root)
    tmp = root / ".tmp"
    if dist.get_rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)  # left by a run killed mid-save
        root.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    dcp.save(_state(model, ema, opt), checkpoint_id=tmp)  # returns on every rank once all shards are written
    if dist.get_rank() == 0:
        checkpoint.commit_folder(tmp, record)
    dist.barrier()


def load_sharded(
    found: list[tuple[Path, dict[str, Any]]],
    model: torch.nn.Module,
    ema: torch.nn.Module,
    opt: torch.optim.Optimizer,
) -> dict[str, Any] | None:
    """Load the first readable checkpoint of ``found`` (:func:`minivgpt.checkpoint.sharded_latest`) into the
    sharded ``model``, ``ema`` and ``opt``; returns its record (step, config), or None if none reads.
    All ranks call it; a damaged newest checkpoint falls back to the previous one with a warning."""
    for folder, record in found:
        state = _state(model, ema, opt)
        try:
            dcp.load(state, checkpoint_id=folder)
        except (Exception, CheckpointException) as e:  # a missing or bad shard: DCP raises on every rank alike
            warnings.warn(f"sharded checkpoint {folder} is unreadable ({type(e).__name__}); trying the previous one",
                          stacklevel=2)
            continue
        set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
        set_model_state_dict(ema, state["ema"])
        return record
    return None


def _state(model: torch.nn.Module, ema: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    """The sharded state dicts DCP saves and loads in place: ``{"model", "ema", "optimizer"}``."""
    msd, osd = get_state_dict(model, opt)
    return {"model": msd, "ema": get_model_state_dict(ema), "optimizer": osd}


def _local(p: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor parameter (the tensor itself otherwise)."""
    return p.to_local() if hasattr(p, "to_local") else p
