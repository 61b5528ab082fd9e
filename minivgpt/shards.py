"""Prepared data: clips stored once in memory-mapped shards, read back with O(1) random access.

``python -m minivgpt.prepare SOURCE out=DIR`` (:mod:`minivgpt.prepare`) writes a folder::

    DIR/index.json                   the index (written last: its presence means the folder is complete)
    DIR/shard_00000.frames.npy       (n, T, C, H, W) uint8 frames, or (n, T, c, h, w) float16 latents
    DIR/shard_00000.masks.npy        (n, T, H, W) uint8 object ids (sources that annotate objects only)
    DIR/shard_00000.json             the shard's part of the index (how a resumed prepare skips it)

``index.json`` holds ``format``, ``source``, ``config`` and its ``config_hash``, ``kind`` (``"frames"`` or
``"latents"``), ``dtype``, ``clip_shape`` (one clip's array shape), ``num_frames``, ``image_size``,
``channels`` (of the pixels), ``classes``, ``skipped`` source files, ``shards`` (file names and clip
counts) and ``clips``: one record per clip with its ``shard`` and ``row``, ``source`` (file or
``name#index``), ``offset`` (first frame in the source), ``label``, ``caption`` and ``split``.

:class:`ShardDataset` (``data=shards:DIR``) returns the sample dict of every dataset in
:mod:`minivgpt.data`: ``video`` float32 (T, C, H, W) in [-1, 1] (uint8 ``u`` read as ``u / 127.5 - 1``,
the same arithmetic as the decoders, so clips stored at their source size are bit-identical to the
source's samples), ``label``, ``caption``, ``masks`` int64 (T, H, W). Latent shards return the float32
latents (T, c, h, w) as ``video`` (``latents`` is True): the tokenizer must then patchify them without
encoding again. A sample is one array slice, so sampling stays a pure function of ``(seed, step)``.

Derived in notebooks/08 (§ Scaling out: prepared data).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .data import SPLITS

FORMAT = "minivgpt.shards/1"
INDEX = "index.json"


def shard_names(k: int) -> dict[str, str]:
    """File names of shard ``k``: its frames (or latents), its masks and its part of the index."""
    stem = f"shard_{k:05d}"
    return {"frames": f"{stem}.frames.npy", "masks": f"{stem}.masks.npy", "part": f"{stem}.json"}


def read_index(root: str | Path) -> dict:
    """The ``index.json`` of a prepared folder, checked; errors name the file and the fix."""
    root = Path(root)
    path = root / INDEX
    fix = f"run `python -m minivgpt.prepare SOURCE out={root}` (it resumes an interrupted run)"
    if not root.is_dir():
        raise FileNotFoundError(f"shard folder not found: {root}; {fix}")
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {root} is not a finished prepared folder; {fix}")
    try:
        index = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a readable shard index ({type(err).__name__}: {err}); {fix}") from err
    needed = ("format", "kind", "clip_shape", "num_frames", "image_size", "shards", "clips")
    missing = [k for k in needed if not isinstance(index, dict) or k not in index]
    if missing:
        raise ValueError(f"{path} is not a shard index (missing {missing}); {fix}")
    if index["format"] != FORMAT:
        raise ValueError(f"{path} has format {index['format']!r}, this version reads {FORMAT!r}; {fix}")
    return index


class ShardDataset(Dataset):
    """The clips of a prepared folder (see the module docstring), selected by ``split``.

    Args:
        root: the folder written by ``python -m minivgpt.prepare``.
        num_frames: frames per sample (the first ``num_frames`` of each stored clip); None = all of them.
        image_size: the frame size the caller expects; checked against the prepared size.
        split: ``"all"``, ``"train"`` or ``"val"``: the split recorded per clip by prepare (real data by index,
            the last ``VAL_FRACTION`` of the clips; generated data by seed).
    """

    def __init__(self, root: str | Path, num_frames: int | None = None, image_size: int | None = None, split="all"):
        if split not in SPLITS:
            raise ValueError(f"split={split!r}: choose one of {', '.join(SPLITS)}")
        self.root = Path(root)
        index = read_index(self.root)
        stored = int(index["num_frames"])
        num_frames = stored if num_frames is None else num_frames
        if not 1 <= num_frames <= stored:
            raise ValueError(
                f"{self.root / INDEX}: clips hold {stored} frames, but {num_frames} were asked for; prepare again "
                f"with frames={num_frames} (another out=)"
            )
        if image_size is not None and image_size != index["image_size"]:
            raise ValueError(
                f"{self.root / INDEX}: frames were prepared at {index['image_size']}x{index['image_size']}, but "
                f"image_size={image_size} was asked for; use image_size={index['image_size']} or prepare again"
            )
        self.index = index
        self.split = split
        self.num_frames = num_frames
        self.image_size = int(index["image_size"])
        self.channels = int(index["channels"])
        self.classes = list(index.get("classes", []))
        self.num_classes = len(self.classes)
        self.latents = index["kind"] == "latents"
        self.clip_shape = tuple(index["clip_shape"])
        clips = index["clips"]
        self.ids = np.array([i for i, c in enumerate(clips) if split == "all" or c["split"] == split], dtype=np.int64)
        if len(self.ids) == 0:
            raise ValueError(f"{self.root / INDEX}: no clip has split={split!r}")
        self._shard = np.array([c["shard"] for c in clips], dtype=np.int64)
        self._row = np.array([c["row"] for c in clips], dtype=np.int64)
        self._label = [int(c["label"]) for c in clips]
        self._caption = [c["caption"] for c in clips]
        self._files = [s["frames"] for s in index["shards"]]
        self._masks = [s.get("masks") for s in index["shards"]]
        self._counts = [int(s["clips"]) for s in index["shards"]]
        self._open: dict[tuple[str, int], np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def __getstate__(self) -> dict:  # DataLoader workers reopen the memory maps themselves
        return {**self.__dict__, "_open": {}}

    def _array(self, what: str, k: int) -> np.ndarray:
        """Shard ``k``'s frames or masks, memory-mapped (opened once, then cached)."""
        key = (what, k)
        if key not in self._open:
            path = self.root / (self._files[k] if what == "frames" else self._masks[k])
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as err:
                raise ValueError(
                    f"{path}: cannot read this shard ({type(err).__name__}: {err}); delete it and its .json part, "
                    f"then run `python -m minivgpt.prepare SOURCE out={self.root}` again to rewrite it"
                ) from err
            want = (self._counts[k], *(self.clip_shape if what == "frames" else self._mask_shape()))
            if arr.shape != want:
                raise ValueError(f"{path}: shape {arr.shape}, but {self.root / INDEX} says {want}; prepare again")
            self._open[key] = arr
        return self._open[key]

    def _mask_shape(self) -> tuple[int, ...]:
        return (self.clip_shape[0], self.image_size, self.image_size)

    def __getitem__(self, index: int) -> dict:
        """Clip ``index`` of the split: video (T, C, H, W) in [-1, 1] (latents (T, c, h, w)), label, caption,
        masks (T, H, W) int64."""
        if not 0 <= index < len(self.ids):
            raise IndexError(f"index {index} out of range for {len(self.ids)} clips (split={self.split!r})")
        g = int(self.ids[index])
        k, row, T = int(self._shard[g]), int(self._row[g]), self.num_frames
        clip = torch.from_numpy(np.array(self._array("frames", k)[row, :T]))
        video = clip.float() if self.latents else clip.float() / 127.5 - 1
        if self._masks[k]:
            masks = torch.from_numpy(np.array(self._array("masks", k)[row, :T])).long()
        else:
            masks = torch.zeros(T, self.image_size, self.image_size, dtype=torch.int64)
        return {"video": video, "label": self._label[g], "caption": self._caption[g], "masks": masks}
