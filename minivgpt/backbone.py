"""The backbone that transfer starts from: the pretrained VideoGPT, its random twin, and running it in chunks.

Derived in notebooks/06 (§1 backbone and data) and notebooks/07 (§1 the backbone, §2 the random baseline).

- :func:`load_or_train_backbone`: ``make pretrain``'s run or notebook 04's, whichever exists first, else a
  short pretraining.
- :func:`random_backbone`: the same shape with random weights **and open adaLN gates**. VideoGPT starts
  adaLN-Zero (every block's gates are zero, so a fresh model is the identity plus an embedding); a random
  baseline that is an identity map would measure the pixels again, not random features.
- :func:`batched`: apply a frozen network to many inputs in chunks, without gradients.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from . import checkpoint
from .config import Config
from .model import VideoGPT
from .tokenizer import VideoTokenizer
from .train import run_from_checkpoint, train


def load_or_train_backbone(
    folders: str | os.PathLike | Sequence[str | os.PathLike], fallback_out: str | os.PathLike, steps: int = 200,
    **params: Any,
) -> tuple[VideoGPT, VideoTokenizer, Config, str]:
    """The pretrained backbone: the run in the first of ``folders`` that holds a ``last.pt`` (e.g.
    ``runs/pretrain`` of ``make pretrain``, then notebook 04's run), else a short run here. A damaged
    ``last.pt`` falls back to that run's ``prev.pt`` with a warning, as :func:`minivgpt.train.load_run` does.

    The fallback trains ``steps`` steps with :func:`minivgpt.train.train` (flat ``params``, e.g.
    ``width=64``) into ``fallback_out``, replacing what an earlier fallback left there (it is a scratch
    run, repeatable from its seed). Returns the EMA model (eval mode), tokenizer, config and where it came
    from (a sentence for the notebook).
    """
    candidates = [folders] if isinstance(folders, (str, os.PathLike)) else list(folders)
    for folder in map(Path, candidates):
        if (folder / "last.pt").exists():
            ckpt = checkpoint.load_latest(folder)  # read once; prev.pt (with a warning) if last.pt is damaged
            model, tok, cfg = run_from_checkpoint(ckpt, folder)
            return model, tok, cfg, f"loaded the run in {folder} (step {ckpt['step']} of {cfg.train.steps})"
    run = {"steps": steps, "out": str(fallback_out), "progress": False, "overwrite": True, **params}
    result = train(run)
    names = ", ".join(str(Path(f) / "last.pt") for f in candidates)
    return result.ema, result.tokenizer, result.config, f"none of {names} exists: trained {steps} steps here"


def random_backbone(model: VideoGPT, seed: int = 0) -> VideoGPT:
    """A randomly initialised model of the same shape whose blocks are open: a plain pre-norm transformer.

    Every weight gets PyTorch's default initialisation (the output projection included), and the adaLN
    modulation is set to the identity with open gates: shift 0, scale 0 and gate 1 in every block (the
    gate biases are 1, the modulation weights 0), so each block computes ``x + attn(norm(x))`` then
    ``x + mlp(norm(x))`` with random weights, for every diffusion time. (A fresh :class:`VideoGPT` has
    zero gates: its hidden states are the input embedding, a random linear map of the pixels.)
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = VideoGPT(model.cfg, model.in_dim, model.grid)
        W = model.cfg.width
        with torch.no_grad():
            for block in net.blocks:
                block.ada.weight.zero_()
                block.ada.bias.zero_()
                block.ada.bias[2 * W : 3 * W] = 1.0  # g1: attention gate (chunks: sh1, sc1, g1, sh2, sc2, g2)
                block.ada.bias[5 * W :] = 1.0  # g2: MLP gate
            net.out.reset_parameters()
    return net.eval().requires_grad_(False)


@torch.no_grad()
def batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Apply ``fn`` to ``x`` in chunks along dim 0, without gradients, and concatenate: ``(M, ...) -> (M, ...)``."""
    return torch.cat([fn(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
