"""Atomic files and checkpoints that survive interruption, load with ``weights_only=True``, and fall back.

:func:`atomic_write` is the one way this project writes a file (checkpoints, the autoencoder, metrics,
bench JSON, GIFs): a temporary file in the same folder, flushed to disk, renamed onto the target, and the
folder synced, so a crash at any moment leaves either the old file or the new one, never half of one.
``save`` also keeps the previous good checkpoint as ``prev.pt`` beside ``last.pt``.
Sharded checkpoints (``parallel=fsdp``, written by :mod:`minivgpt.parallel`) keep the same guarantee for
a folder: it is written under a temporary name, renamed, and committed by atomically rewriting ``last.json``
(the old one kept as ``prev.json``), so the folder ``last.json`` names is always complete.

Derived in notebooks/08 (§ resume after a kill).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated or not a minivgpt checkpoint."""


def _fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(
    path: str | os.PathLike,
    data: bytes | str | Callable[[io.BufferedWriter], None],
    keep_previous: str | None = None,
) -> Path:
    """Write ``data`` to ``path`` atomically and durably; returns the path.

    Args:
        path: target file; its folder is created.
        data: bytes, text (UTF-8), or a function that writes into an open binary file (e.g.
            ``lambda f: torch.save(obj, f)``).
        keep_previous: if given and ``path`` exists, the old file is first renamed to this name in the same
            folder (``"prev.pt"`` for checkpoints), so one complete older copy always survives.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.exists():
            os.replace(path, path.with_name(keep_previous))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def cache_folder(record: dict[str, Any], root: str | os.PathLike) -> Path:
    """Where a result that ``record`` fully describes is cached: ``root/<12 hex digits>`` (absolute).

    The digits are the SHA-256 of ``record`` as sorted JSON, so equal records share a folder from any
    working directory and a change in any value gets a new one. Used by the cached frame autoencoder
    (:func:`minivgpt.autoencoder.cached_autoencoder`) and digit reader
    (:func:`minivgpt.legibility.cached_digit_reader`).
    """
    text = json.dumps(record, sort_keys=True, default=str)
    return Path(root).resolve() / hashlib.sha256(text.encode()).hexdigest()[:12]


def append_jsonl(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one JSON record as a line to ``path`` (a run's ``metrics.jsonl``), flushed to disk.

    Appends, unlike :func:`atomic_write`: a crash can at worst cut the last line short, and a resumed run
    rewrites the file atomically with the records up to its checkpoint.
    """
    import json

    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def save(obj: dict[str, Any], path: str | os.PathLike) -> Path:
    """Atomically write the checkpoint ``obj`` to ``path`` (the old file is kept as ``prev.pt`` beside it)."""
    return atomic_write(path, lambda f: torch.save(obj, f), keep_previous="prev.pt")


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


# ----------------------------------------------------------------------------------------- sharded checkpoints
SHARDED = "ckpt_fsdp"  # a run's folder of sharded checkpoints: last.json, prev.json, one sub-folder per save


def commit_folder(tmp: str | os.PathLike, record: dict[str, Any]) -> Path:
    """Make the complete folder ``tmp`` the latest sharded checkpoint of the folder that holds it.

    ``tmp`` is renamed to a fresh folder named by the step beside it (e.g. ``step_00000012``); then
    ``last.json`` (``record`` plus ``"folder"``, that name) is written atomically with the old one kept as
    ``prev.json``. That write is the commit: a crash before it leaves the previous checkpoint the latest,
    and a crash at any moment leaves a ``last.json`` or ``prev.json`` that names a complete folder. Folders
    named by neither are then deleted.
    Returns the new folder.
    """
    tmp = Path(tmp)
    root = tmp.parent
    name = base = f"step_{int(record['step']):08d}"
    n = 0
    while (root / name).exists():  # the same step saved again (e.g. after a fallback): never touch the old one
        n += 1
        name = f"{base}.{n}"
    _fsync_dir(tmp)
    os.replace(tmp, root / name)
    _fsync_dir(root)
    atomic_write(root / "last.json", json.dumps({**record, "folder": name}), keep_previous="prev.json")
    keep = {rec["folder"] for _, rec in sharded_latest(root)}
    for child in root.iterdir():
        if child.is_dir() and child.name not in keep:
            shutil.rmtree(child, ignore_errors=True)
    return root / name


def sharded_latest(root: str | os.PathLike) -> list[tuple[Path, dict[str, Any]]]:
    """The committed sharded checkpoints in ``root`` (``OUT/ckpt_fsdp``), newest first: ``(folder, record)``
    for ``last.json`` then ``prev.json``, each only if its json reads and its folder exists (empty if none)."""
    root = Path(root)
    found = []
    for pointer in ("last.json", "prev.json"):
        path = root / pointer
        if not path.exists():
            continue
        try:
            rec = json.loads(path.read_text())
            folder = root / rec["folder"]
        except (ValueError, KeyError, TypeError) as e:
            warnings.warn(f"{path} is unreadable ({type(e).__name__}: {e}); skipping it", stacklevel=2)
            continue
        if folder.is_dir() and all(folder != f for f, _ in found):
            found.append((folder, rec))
    return found
