"""The digit reader of minivgpt.legibility on tiny IDX files the tests write (never on real MNIST files)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import idx_bytes

from minivgpt import evaluate, legibility
from minivgpt.data import BouncingBalls, MovingMNISTDigits, video_batch
from minivgpt.simvp import train_simvp


def _mnist(root, n=20):
    """n "digits": bars whose angle and position tell the class (i % 10), with labels; gzipped and raw."""
    root.mkdir()
    images = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        c = i % 10
        if c < 5:
            images[i, 3 + 4 * c : 7 + 4 * c, 2:26] = 200 + i  # a horizontal bar at row 3 + 4c
        else:
            images[i, 2:26, 3 + 4 * (c - 5) : 7 + 4 * (c - 5)] = 200 + i  # a vertical bar
    (root / "imgs.gz").write_bytes(gzip.compress(idx_bytes(images)))
    (root / "labels").write_bytes(idx_bytes(np.arange(n) % 10))
    return root


def test_corners_and_crops_recover_each_digit(tmp_path):
    """With one digit per sequence the crop at the sample's corners is exactly the digit image, every frame."""
    ds = MovingMNISTDigits(_mnist(tmp_path / "m"), num_samples=3, num_frames=6, digits=1, seed=2)
    batch = video_batch(ds, range(3))
    assert batch["corners"].shape == (3, 1, 6, 2) and batch["digits"].shape == (3, 1)
    crops = legibility.crop_digits(batch["video"], batch["corners"])  # (3, 1, 6, 1, 28, 28)
    for b in range(3):
        digit = batch["digits"][b, 0].item()
        match = [i for i in range(len(ds.images)) if i % 10 == digit
                 and torch.equal(crops[b, 0, 0, 0], torch.from_numpy(ds.images[i]).float() / 127.5 - 1)]
        assert match, "the crop at the corner is one of the digit images of its class"
        assert all(torch.equal(crops[b, 0, t], crops[b, 0, 0]) for t in range(6))  # the digit moves, whole
    assert len(set(map(tuple, batch["corners"][0, 0].tolist()))) > 1  # it does move
    with pytest.raises(ValueError, match=r"corners must lie in \[0, 36\]"):
        legibility.crop_digits(batch["video"], batch["corners"] + 40)
    with pytest.raises(ValueError, match=r"corners must be \(B, D, T, 2\)"):
        legibility.crop_digits(batch["video"], batch["corners"][:, :, :3])


def test_reader_reads_true_frames_not_blank_ones(tmp_path):
    root = _mnist(tmp_path / "m")
    train_set = MovingMNISTDigits(root, num_samples=64, num_frames=4, seed=0, split="train")
    reader = legibility.train_digit_reader(train_set, sequences=64, steps=150, batch_size=64)
    assert not any(p.requires_grad for p in reader.parameters())
    b = video_batch(MovingMNISTDigits(root, num_samples=16, num_frames=4, seed=5, split="train"), range(16))
    truth = legibility.legibility(reader, b["video"], b["corners"], b["digits"])
    assert truth.shape == (16, 4) and truth.mean() > 0.8
    blank = legibility.legibility(reader, torch.full_like(b["video"], -1.0), b["corners"], b["digits"])
    assert blank.mean() < 0.3  # one answer for every empty crop: at most the share of its class
    with pytest.raises(ValueError, match="digits must be"):
        legibility.legibility(reader, b["video"], b["corners"], b["digits"][:, :1])
    unlabelled = tmp_path / "u"
    unlabelled.mkdir()
    (unlabelled / "imgs.gz").write_bytes((root / "imgs.gz").read_bytes())
    with pytest.raises(ValueError, match="needs the MNIST label file"):
        legibility.train_digit_reader(MovingMNISTDigits(unlabelled, num_samples=2, num_frames=2))


def test_evaluate_reports_legibility_on_labelled_digits(tmp_path, monkeypatch):
    root = _mnist(tmp_path / "m")
    params = dict(data=f"moving_mnist_digits:{root}", image_size=64, context=2, predict=2, hid_s=4, hid_t=8,
                  n_t=1, batch_size=2, steps=2, progress=False, threads=1, out=str(tmp_path / "run"))
    train_simvp(params)
    monkeypatch.setitem(evaluate.READER, "steps", 150)
    monkeypatch.setitem(evaluate.READER, "sequences", 64)
    monkeypatch.setitem(evaluate.READER, "root", str(tmp_path / "readers"))
    report = evaluate.evaluate_run(tmp_path / "run", context=2, predict=2, videos=4, progress=False,
                                   out=tmp_path / "e")
    rows = report["rows"]
    assert all(len(row["per_frame"]["legible"]) == 2 and 0 <= row["legible"] <= 1 for row in rows.values())
    assert report["legibility_truth"]["legible"] > rows["blank"]["legible"]
    assert "LEGIBLE" in evaluate.format_table(report) and "legibility_absent" not in report
    # the reader was trained once and cached; a second evaluation reads it from disk, with the same figures
    cached = Path(report["digit_reader"])
    assert [p.name for p in (tmp_path / "readers").iterdir()] == [cached.parent.name]
    assert sorted(p.name for p in cached.parent.iterdir()) == ["key.json", "reader.pt"]
    stamp = cached.stat().st_mtime_ns
    again = evaluate.evaluate_run(tmp_path / "run", context=2, predict=2, videos=4, progress=False,
                                  pictures=False, out=tmp_path / "e2")
    assert again["digit_reader"] == report["digit_reader"]
    assert cached.stat().st_mtime_ns == stamp  # read, not retrained
    assert again["rows"]["model"]["legible"] == rows["model"]["legible"]
    assert again["legibility_truth"] == report["legibility_truth"]
    # one instrument for every run: a run trained with another seed is read by the same cached reader
    train_simvp({**params, "seed": 1, "out": str(tmp_path / "run1")})
    other_seed = evaluate.evaluate_run(tmp_path / "run1", context=2, predict=2, videos=4, progress=False,
                                       pictures=False, out=tmp_path / "e1")
    assert other_seed["digit_reader"] == report["digit_reader"]
    assert other_seed["data_seed"] == report["data_seed"] + 1  # its held-out sequences are still its own
    # digits without their label file (like the fixed test file): no legibility, the rest unchanged
    unlabelled = tmp_path / "u"
    unlabelled.mkdir()
    (unlabelled / "imgs.gz").write_bytes((root / "imgs.gz").read_bytes())
    other = evaluate.evaluate_run(tmp_path / "run", data=f"moving_mnist_digits:{unlabelled}", context=2,
                                  predict=2, videos=2, progress=False, pictures=False, out=tmp_path / "b")
    assert "legibility_truth" not in other and "legible" not in other["rows"]["model"]
    assert "no label file" in other["legibility_absent"]
    assert "digits not read (no legibility)" in evaluate.format_table(other)
    # the other reasons, named: not Moving MNIST digits; digits resized off the reader's 64x64 canvas
    none, _, why = evaluate._digit_reader("bouncing_balls", 4, BouncingBalls(num_samples=2, num_frames=4), False)
    assert none is None and "is not moving_mnist_digits" in why
    resized = MovingMNISTDigits(root, num_samples=2, num_frames=2, image_size=32)
    assert "32x32" in evaluate._digit_reader(f"moving_mnist_digits:{root}", 2, resized, False)[2]


def test_cached_reader_is_keyed_by_its_digits_and_survives_a_damaged_file(tmp_path):
    root = _mnist(tmp_path / "m")
    train_set = MovingMNISTDigits(root, num_samples=8, num_frames=2, seed=0, split="train")
    cache = tmp_path / "readers"
    first, path = legibility.cached_digit_reader(train_set, sequences=8, steps=3, root=cache, progress=False)
    again, same = legibility.cached_digit_reader(train_set, sequences=8, steps=3, root=cache, progress=False)
    assert same == path and all(torch.equal(a, b) for a, b in zip(first.state_dict().values(),
                                                                     again.state_dict().values()))
    assert not any(p.requires_grad for p in again.parameters()) and not again.training
    # other digits (one pixel changed), other training settings: each gets its own reader
    other = _mnist(tmp_path / "m2")
    raw = bytearray(gzip.decompress((other / "imgs.gz").read_bytes()))
    raw[16 + 5] ^= 1
    (other / "imgs.gz").write_bytes(gzip.compress(bytes(raw)))
    changed = MovingMNISTDigits(other, num_samples=8, num_frames=2, seed=0, split="train")
    assert legibility.cached_digit_reader(changed, sequences=8, steps=3, root=cache, progress=False)[1] != path
    assert legibility.cached_digit_reader(train_set, sequences=8, steps=4, root=cache, progress=False)[1] != path
    path.write_bytes(b"not a checkpoint")  # a damaged cache is retrained, with a warning, not trusted
    with pytest.warns(UserWarning, match="unreadable cached digit reader"):
        legibility.cached_digit_reader(train_set, sequences=8, steps=3, root=cache, progress=False)
    assert legibility.cached_digit_reader(train_set, sequences=8, steps=3, root=cache, progress=False)[1] == path


def test_a_report_names_paths_under_the_working_directory_relatively(tmp_path, monkeypatch):
    """A committed report must not carry one machine's absolute paths: the digit reader under the working
    directory is named ``runs/...``; a path elsewhere stays absolute."""
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    assert evaluate._shown(tmp_path / "work" / "runs" / "reader.pt") == str(Path("runs") / "reader.pt")
    assert evaluate._shown(Path("runs/reader.pt")) == str(Path("runs") / "reader.pt")
    assert evaluate._shown(tmp_path / "elsewhere.pt") == str((tmp_path / "elsewhere.pt").resolve())
