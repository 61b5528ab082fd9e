"""Tests for the Moving MNIST generator (minivgpt.data.MovingMNISTDigits) on tiny hand-written IDX files."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch
from tiny import idx_bytes

from minivgpt.data import (
    IDX_IMAGES,
    IDX_LABELS,
    VAL_FRACTION,
    MovingMNISTDigits,
    find_mnist_files,
    make_dataset,
    read_idx,
)


def digit_images(n: int, side: int = 28) -> np.ndarray:
    """n distinct "digits": a filled square of side 8 + (i % 12) and brightness 100 + i, on black."""
    images = np.zeros((n, side, side), np.uint8)
    for i in range(n):
        w = 8 + i % 12
        images[i, 2 : 2 + w, 3 : 3 + w] = 100 + i
    return images


@pytest.fixture
def mnist_dir(tmp_path):
    """20 digits (gzipped images, raw labels) under names that do not say which is which."""
    root = tmp_path / "mnist"
    root.mkdir()
    (root / "a.gz").write_bytes(gzip.compress(idx_bytes(digit_images(20))))
    (root / "b.bin").write_bytes(idx_bytes(np.arange(20) % 10))
    (root / "README.txt").write_text("not an IDX file, ignored")
    return root


def test_find_files_by_magic_and_read(mnist_dir):
    images, labels = find_mnist_files(mnist_dir)
    assert [p.name for p in images] == ["a.gz"] and [p.name for p in labels] == ["b.bin"]
    assert read_idx(images[0], IDX_IMAGES).shape == (20, 28, 28)
    assert read_idx(labels[0], IDX_LABELS).tolist() == [i % 10 for i in range(20)]


def test_sample_format_and_determinism(mnist_dir):
    ds = MovingMNISTDigits(mnist_dir, num_samples=6, num_frames=20, seed=3)
    assert len(ds) == 6 and ds.channels == 1 and ds.num_classes == 10
    s = ds[2]
    assert s["video"].shape == (20, 1, 64, 64) and s["video"].dtype == torch.float32
    assert s["video"].min() == -1 and s["video"].max() <= 1
    assert s["masks"].shape == (20, 64, 64) and set(s["masks"].unique().tolist()) <= {0, 1, 2}
    assert 0 <= s["label"] < 10 and s["caption"].startswith("digits ")
    again = MovingMNISTDigits(mnist_dir, num_samples=6, num_frames=20, seed=3)
    backward = [again[i] for i in reversed(range(6))][::-1]
    for i in range(6):
        assert torch.equal(ds[i]["video"], backward[i]["video"]) and ds[i]["caption"] == backward[i]["caption"]
    other = MovingMNISTDigits(mnist_dir, num_samples=6, num_frames=20, seed=4)
    assert not any(torch.equal(other[i]["video"], ds[i]["video"]) for i in range(6))
    with pytest.raises(IndexError):
        ds[6]
    small = MovingMNISTDigits(mnist_dir, num_samples=2, num_frames=4, image_size=16)[0]
    assert small["video"].shape == (4, 1, 16, 16) and small["masks"].shape == (4, 16, 16)


def test_combined_by_maximum(tmp_path):
    (tmp_path / "img").write_bytes(idx_bytes(np.full((4, 28, 28), 200, np.uint8)))  # solid squares
    video = MovingMNISTDigits(tmp_path, num_samples=4, num_frames=10)[1]["video"]
    values = set(((video + 1) * 127.5).round().unique().tolist())
    assert values == {0, 200}  # overlaps stay at 200 (maximum), never 400 or clipped 255 (sum)
    assert ((video > -1).sum(dim=(1, 2, 3)) >= 28 * 28).all()  # each frame shows at least one whole digit


class FixedDraws:
    """A stand-in for numpy's Generator whose ``random`` returns the given values in order."""

    def __init__(self, *values: float):
        self.values = list(values)

    def random(self, size=None):
        if size is None:
            return self.values.pop(0)
        return np.array([self.values.pop(0) for _ in range(size)])


def test_bounce_stays_in_range_and_reverses(mnist_dir):
    ds = MovingMNISTDigits(mnist_dir, num_samples=64, num_frames=14)
    free = 64 - 28  # the range of a 28-pixel digit's top-left corner on the 64-pixel canvas
    # start at y = 0.5, x = 0.55 heading right (theta = 0) at 0.1 of the range per frame: the fifth step
    # would reach x = 1.05, so the digit is put on the wall (x = 1) and its velocity reversed
    path = ds.trajectory(FixedDraws(0.5, 0.55, 0.0))
    xs = [int(free * x) for x in (0.65, 0.75, 0.85, 0.95, 1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)]
    assert np.abs(path[:, 1] - np.array(xs)).max() <= 1  # reaches the right wall, then comes back
    assert path[4, 1] == free and (np.diff(path[:5, 1]) > 0).all() and (np.diff(path[4:, 1]) < 0).all()
    assert (path[:, 0] == int(free * 0.5)).all()  # no vertical motion
    # heading up-left (theta = 225 degrees) from a corner: both components reverse at the walls
    path = ds.trajectory(FixedDraws(0.05, 0.05, 225 / 360))
    assert path[0].tolist() == [0, 0] and (path[1:4] > 0).all() and (np.diff(path[1:6], axis=0) > 0).all()
    # random starts: always inside the canvas at constant speed
    for i in range(32):
        path = ds.trajectory(np.random.default_rng([0, i])).astype(float)
        assert path.min() >= 0 and path.max() <= free
        assert np.hypot(*np.diff(path, axis=0).T).max() <= 0.1 * free + 1.5  # 3.6 px (+ truncation)


def test_digit_split_is_disjoint(mnist_dir):
    train = MovingMNISTDigits(mnist_dir, num_samples=200, num_frames=2, split="train")
    val = MovingMNISTDigits(mnist_dir, num_samples=200, num_frames=2, split="val")
    n_val = int(np.ceil(VAL_FRACTION * 20))
    assert list(val.digit_indices) == list(range(20 - n_val, 20))
    assert list(train.digit_indices) == list(range(20 - n_val))
    # brightness 100 + i identifies digit i: training videos show only training digits, and vice versa
    def seen(ds):
        out = set()
        for i in range(len(ds)):
            out |= set(((ds[i]["video"] + 1) * 127.5).round().long().unique().tolist()) - {0}
        return {v - 100 for v in out}
    seen_train, seen_val = seen(train), seen(val)
    assert seen_train <= set(train.digit_indices) and seen_val <= set(val.digit_indices)
    assert seen_train and seen_val and not seen_train & seen_val
    assert len(MovingMNISTDigits(mnist_dir, num_frames=2, split="all").digit_indices) == 20
    with pytest.raises(ValueError, match="split='test'"):
        MovingMNISTDigits(mnist_dir, split="test")


def test_raw_and_gz_give_the_same_videos(tmp_path, mnist_dir):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "digits-idx3-ubyte").write_bytes(gzip.decompress((mnist_dir / "a.gz").read_bytes()))
    (raw / "labels.gz").write_bytes(gzip.compress((mnist_dir / "b.bin").read_bytes()))
    a, b = MovingMNISTDigits(mnist_dir, num_samples=3), MovingMNISTDigits(raw, num_samples=3)
    for i in range(3):
        assert torch.equal(a[i]["video"], b[i]["video"]) and a[i]["label"] == b[i]["label"]


def test_without_labels(tmp_path):
    (tmp_path / "img").write_bytes(idx_bytes(digit_images(5)))
    ds = MovingMNISTDigits(tmp_path, num_samples=2, num_frames=3)
    assert ds.num_classes == 0 and ds[0]["label"] == -1 and ds[0]["caption"] == ""


def test_idx_errors_name_the_file_and_what_was_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        MovingMNISTDigits(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello")
    with pytest.raises(FileNotFoundError, match=r"no MNIST image file.*0x00000803.*\(N, 28, 28\).*notes.txt"):
        MovingMNISTDigits(empty)

    def folder(name: str, data: bytes):
        d = tmp_path / name
        d.mkdir()
        (d / f"{name}-idx3-ubyte").write_bytes(data)
        return d

    bad_magic = folder("badmagic", struct.pack(">IIII", 0x00000903, 1, 28, 28) + bytes(784))
    with pytest.raises(ValueError, match=r"badmagic-idx3-ubyte.*expected magic 0x00000803"):
        MovingMNISTDigits(bad_magic)
    truncated = folder("truncated", idx_bytes(digit_images(3))[:-100])
    with pytest.raises(ValueError, match=r"truncated-idx3-ubyte.*shape \(3, 28, 28\).*2252 bytes"):
        MovingMNISTDigits(truncated)
    wrong_shape = folder("flat", idx_bytes(np.zeros((3, 784), np.uint8)))  # a 2-d array: magic 0x802
    with pytest.raises(ValueError, match=r"flat-idx3-ubyte.*0x00000802.*0x00000803"):
        MovingMNISTDigits(wrong_shape)
    bad_gz = folder("badgz", gzip.compress(idx_bytes(digit_images(3)))[:40])
    with pytest.raises(ValueError, match="badgz-idx3-ubyte"):
        MovingMNISTDigits(bad_gz)
    big = tmp_path / "big"
    big.mkdir()
    (big / "x").write_bytes(idx_bytes(np.zeros((2, 70, 70), np.uint8)))
    with pytest.raises(ValueError, match=r"x: images of shape \(2, 70, 70\); expected \(N, 28, 28\)"):
        MovingMNISTDigits(big)
    unpaired = tmp_path / "unpaired"
    unpaired.mkdir()
    (unpaired / "i").write_bytes(idx_bytes(digit_images(4)))
    (unpaired / "l").write_bytes(idx_bytes(np.arange(3)))
    with pytest.raises(ValueError, match=r"label files \['l'\].*do not pair"):
        MovingMNISTDigits(unpaired)
    with pytest.raises(FileNotFoundError, match="missing.idx"):
        read_idx(tmp_path / "missing.idx")


def test_make_dataset_registers_it(mnist_dir):
    ds = make_dataset(f"moving_mnist_digits:{mnist_dir}", num_frames=6, image_size=32, num_samples=5, seed=1)
    assert isinstance(ds, MovingMNISTDigits) and len(ds) == 5 and ds[0]["video"].shape == (6, 1, 32, 32)
    val = make_dataset(f"moving_mnist_digits:{mnist_dir}", 6, 32, 5, 1, split="val")
    assert val.split == "val" and len(val.digit_indices) == 2
    with pytest.raises(ValueError, match="needs a path: use moving_mnist_digits:DIR"):
        make_dataset("moving_mnist_digits", 6, 32)
