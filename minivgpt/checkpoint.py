"""Atomic checkpoints that survive interruption, load with ``weights_only=True``, and fall back safely.

``save`` writes ``PATH.tmp``, flushes it to disk, keeps the previous good file as ``prev.pt`` beside it,
then renames the new file onto ``PATH``: a crash at any moment leaves at least one complete checkpoint.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated or not a minivgpt checkpoint."""


def save(obj: dict[str, Any], path: str | os.PathLike) -> Path:
    """Atomically write ``obj`` to ``path`` (the old file is kept as ``prev.pt`` in the same folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    if path.exists():
        os.replace(path, path.with_name("prev.pt"))
    os.replace(tmp, path)
    return path


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; a clear :class:`CheckpointError` if it is bad."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist (train first, or check the out= folder)")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, wrong format, unpickling refused ...
        raise CheckpointError(f"checkpoint {path} is unreadable or truncated ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict) or "model" not in obj or "step" not in obj:
        raise CheckpointError(f"checkpoint {path} is not a minivgpt checkpoint (expected a dict with model, step)")
    return obj


def load_latest(folder: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """Load ``last.pt`` from ``folder``, or ``prev.pt`` with a warning if ``last.pt`` is damaged.

    Returns None when the folder holds no checkpoint at all.
    """
    folder = Path(folder)
    last, prev = folder / "last.pt", folder / "prev.pt"
    if not last.exists() and not prev.exists():
        return None
    try:
        return load(last, map_location)
    except CheckpointError as e:
        if not prev.exists():
            raise
        warnings.warn(f"{e}; falling back to the previous good checkpoint {prev}", stacklevel=2)
        return load(prev, map_location)
