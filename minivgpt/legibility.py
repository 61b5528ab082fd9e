"""Are the forecast digits recognisable? A digit reader reads each digit where it truly is.

On Moving MNIST, squared error rewards a grey blur where the digits might be, and SSIM rewards a blank
frame; neither says whether a reader could still tell which digits a forecast shows. This module makes
that a number. A small CNN (:class:`DigitReader`) is trained on 28x28 crops of *training* sequences, cut
at each digit's true top-left corner (so the other digit's strokes that overlap a crop are part of what it
learns to ignore). A forecast frame is then cropped at the true corners of that frame and read:
:func:`legibility` is the share of digits read as their true class, per frame. The truth's own legibility
is the ceiling (digits that overlap can hide each other), a blank frame's is near chance (0.1).

Used by :func:`minivgpt.evaluate.evaluate_run` on ``moving_mnist_digits`` data with label files.

Derived in notebooks/05 (§ evaluation by the standard protocol).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from .checkpoint import atomic_write, cache_folder
from .data import MovingMNISTDigits, video_batch
from .judge import fit_classifier

READER_FORMAT = 1  # the layout of a saved reader; bumped when it changes, so old caches are not read


class DigitReader(nn.Module):
    """A small CNN for 28x28 digit crops ``(B, 1, 28, 28)`` in [-1, 1] -> logits ``(B, 10)``."""

    def __init__(self, side: int = 28, classes: int = 10, width: int = 32):
        super().__init__()
        self.side = side
        self.kwargs = dict(side=side, classes=classes, width=width)  # what a saved reader is rebuilt from
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),  # 14x14
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),  # 7x7
            nn.Flatten(), nn.Linear(2 * width * (side // 4) ** 2, 128), nn.GELU(), nn.Linear(128, classes),
        )

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.net(crops)


def crop_digits(frames: torch.Tensor, corners: torch.Tensor, side: int = 28) -> torch.Tensor:
    """Cut every digit out of every frame at its corner.

    Args:
        frames: ``(B, T, 1, S, S)``; corners: ``(B, D, T, 2)`` int64 top-left (y, x) with
            ``0 <= y, x <= S - side``.
    Returns:
        ``(B, D, T, 1, side, side)``.
    """
    B, T, C, S, _ = frames.shape
    if corners.ndim != 4 or corners.shape[0] != B or corners.shape[2] != T or corners.shape[3] != 2:
        raise ValueError(f"corners must be (B, D, T, 2) for frames {tuple(frames.shape)}, got {tuple(corners.shape)}")
    if int(corners.min()) < 0 or int(corners.max()) > S - side:
        raise ValueError(f"corners must lie in [0, {S - side}] for {S}x{S} frames and {side}-pixel digits")
    ar = torch.arange(side, device=frames.device)
    rows = (corners[..., 0, None] + ar)[..., :, None]  # (B, D, T, side, 1)
    cols = (corners[..., 1, None] + ar)[..., None, :]  # (B, D, T, 1, side)
    b = torch.arange(B, device=frames.device)[:, None, None, None, None]
    t = torch.arange(T, device=frames.device)[None, None, :, None, None]
    return frames[:, :, 0][b, t, rows, cols].unsqueeze(-3)  # (B, D, T, 1, side, side)


def _check_readable(dataset: MovingMNISTDigits) -> None:
    """A reader needs the digits' classes (the label file) and frames on the canvas the corners refer to."""
    if dataset.labels is None:
        raise ValueError(f"{dataset.root}: reading digits needs the MNIST label file (IDX magic 0x00000801)")
    if dataset.canvas != dataset.image_size:
        raise ValueError(f"reading digits needs image_size={dataset.canvas} (the canvas), got {dataset.image_size}")


def train_digit_reader(
    dataset: MovingMNISTDigits, sequences: int = 512, steps: int = 600, batch_size: int = 128, lr: float = 2e-3,
    seed: int = 0,
) -> DigitReader:
    """Train :class:`DigitReader` on crops of the first ``sequences`` sequences of ``dataset`` (its training
    split: digits the evaluated sequences never show), every digit in every frame. Returns it frozen, in
    eval mode. About a minute on one CPU thread with the defaults."""
    _check_readable(dataset)
    batch = video_batch(dataset, range(min(sequences, len(dataset))))
    crops = crop_digits(batch["video"], batch["corners"]).flatten(0, 2)  # (N, 1, 28, 28)
    labels = batch["digits"][:, :, None].expand(-1, -1, batch["video"].shape[1]).flatten()  # (N,)
    return fit_classifier(DigitReader, crops, labels, steps, batch_size, lr, seed)


def cached_digit_reader(
    dataset: MovingMNISTDigits, sequences: int = 512, steps: int = 600, seed: int = 0,
    root: str | os.PathLike = "runs/digit_reader", progress: bool = True,
) -> tuple[DigitReader, Path]:
    """:func:`train_digit_reader` once per training set, then read from disk: ``(reader, path)``.

    The cache key holds everything the reader depends on: a SHA-256 of the digits and labels of
    ``dataset``'s split, the generator's settings (frames, digits, step length, canvas, seed) and the
    training settings (:func:`train_digit_reader`'s batch size and rate are fixed: a change of them bumps
    ``READER_FORMAT``), so ``root/<12 hex digits>/reader.pt`` (with ``key.json`` beside it) is reused only
    for the same reader, and new digit files or settings get a new one. Written atomically.
    """
    _check_readable(dataset)  # before the key, which hashes the labels
    idx = dataset.digit_indices
    digest = hashlib.sha256(dataset.images[idx].tobytes() + dataset.labels[idx].tobytes()).hexdigest()
    key = {
        "digits_sha256": digest, "split": dataset.split, "frames": dataset.num_frames, "digits": dataset.digits,
        "step_length": dataset.step_length, "canvas": dataset.canvas, "image_size": dataset.image_size,
        "data_seed": dataset.seed, "sequences": min(sequences, len(dataset)), "steps": steps, "seed": seed,
        "format": READER_FORMAT,
    }
    folder = cache_folder(key, root)
    path = folder / "reader.pt"
    if path.exists():
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            reader = DigitReader(**payload["kwargs"])
            reader.load_state_dict(payload["state_dict"])
            return reader.eval().requires_grad_(False), path
        except Exception as e:  # a cache, not a result: a damaged file is retrained and replaced, with a warning
            warnings.warn(f"{path}: unreadable cached digit reader ({type(e).__name__}: {e}); training it again",
                          stacklevel=2)
    if progress:
        print(f"legibility: training the digit reader on {sequences} training sequences (cached in {folder})")
    reader = train_digit_reader(dataset, sequences, steps, seed=seed)
    payload = {"format": READER_FORMAT, "kwargs": reader.kwargs, "state_dict": reader.state_dict()}
    atomic_write(path, lambda f: torch.save(payload, f))
    atomic_write(folder / "key.json", json.dumps(key, indent=2, sort_keys=True))
    return reader, path


@torch.no_grad()
def legibility(reader: DigitReader, frames: torch.Tensor, corners: torch.Tensor, digits: torch.Tensor) -> torch.Tensor:
    """Share of the digits read as their true class, per frame.

    Args:
        frames: ``(B, T, 1, S, S)`` in [-1, 1] (a forecast or the truth); corners: ``(B, D, T, 2)`` the
            true corners of those frames; digits: ``(B, D)`` their classes.
    Returns:
        ``(B, T)`` float in [0, 1].
    """
    if digits.shape != corners.shape[:2]:
        raise ValueError(f"digits must be (B, D) like corners {tuple(corners.shape)}, got {tuple(digits.shape)}")
    crops = crop_digits(frames.clamp(-1, 1), corners)  # (B, D, T, 1, 28, 28)
    read = reader(crops.flatten(0, 2)).argmax(1).view(crops.shape[:3])  # (B, D, T)
    return (read == digits[:, :, None]).float().mean(1)
