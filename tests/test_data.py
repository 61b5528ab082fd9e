"""Tests for minivgpt.data: synthetic worlds, real-file loaders, factory and batching."""

from __future__ import annotations

import warnings

import av
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from minivgpt.data import (
    PALETTE,
    BouncingBalls,
    MovingGlyphs,
    MovingMNIST,
    VideoFolder,
    collate,
    draw_digit,
    make_dataset,
    video_batch,
)

SYNTHETIC = [BouncingBalls, MovingGlyphs]


# ---------------------------------------------------------------------------------------------------
# Synthetic datasets


@pytest.mark.parametrize("cls", SYNTHETIC)
@pytest.mark.parametrize("size", [32, 64])
def test_synthetic_sample_format(cls, size):
    ds = cls(num_samples=8, num_frames=6, image_size=size)
    assert len(ds) == 8
    for i in range(len(ds)):
        s = ds[i]
        assert set(s) == {"video", "label", "caption", "masks"}
        v, m = s["video"], s["masks"]
        assert v.shape == (6, ds.channels, size, size) and v.dtype == torch.float32
        assert v.min() >= -1 and v.max() <= 1 and v.min() == -1  # black background
        assert m.shape == (6, size, size) and m.dtype == torch.int64
        assert isinstance(s["label"], int) and 0 <= s["label"] < ds.num_classes == len(ds.classes)
        assert isinstance(s["caption"], str) and s["caption"]
    with pytest.raises(IndexError):
        ds[8]


def test_glyph_channels_option():
    s = MovingGlyphs(num_samples=2, num_frames=4, channels=3)[0]
    assert s["video"].shape == (4, 3, 64, 64)
    assert torch.equal(s["video"][:, 0], s["video"][:, 2])


@pytest.mark.parametrize("cls", SYNTHETIC)
def test_synthetic_determinism(cls):
    a, b = cls(num_samples=6, seed=3), cls(num_samples=6, seed=3)
    forward = [a[i] for i in range(6)]
    backward = [b[i] for i in reversed(range(6))][::-1]
    for x, y in zip(forward, backward):
        assert torch.equal(x["video"], y["video"]) and torch.equal(x["masks"], y["masks"])
        assert x["label"] == y["label"] and x["caption"] == y["caption"]
    other = cls(num_samples=6, seed=4)
    assert not any(torch.equal(other[i]["video"], forward[i]["video"]) for i in range(6))
    assert not torch.equal(forward[0]["video"], forward[1]["video"])


@pytest.mark.parametrize("cls", SYNTHETIC)
def test_labels_and_captions_vary(cls):
    ds = cls(num_samples=64, num_frames=8)
    samples = [ds[i] for i in range(len(ds))]
    labels = {s["label"] for s in samples}
    assert len(labels) > 2 and all(0 <= y < ds.num_classes for y in labels)
    assert len({s["caption"] for s in samples}) > 32


def test_ball_labels_masks_and_captions_agree():
    ds = BouncingBalls(num_samples=40, num_frames=10, image_size=32)
    assert ds.num_classes == 6
    words = {1: "one ball", 2: "two balls", 3: "three balls"}
    for i in range(len(ds)):
        sim, s = ds.simulate(i), ds[i]
        n = sim["pos"].shape[1]
        assert s["label"] // 2 == n - 1
        drift_right = sim["pos"][-1, :, 0].mean() > sim["pos"][0, :, 0].mean()
        assert s["label"] % 2 == int(drift_right)
        assert ds.classes[s["label"]].startswith(f"{n} ball")
        assert s["caption"].startswith(words[n]) and s["caption"].endswith("right" if drift_right else "left")
        names = [ds.colour_names[c] for c in sim["colours"]]
        assert len(set(names)) == n and all(name in s["caption"] for name in names)
        for t in range(10):  # every ball is visible in every frame, ids are 0..n
            assert np.unique(s["masks"][t].numpy()).tolist() == list(range(n + 1))
        # the pixels of ball k carry its colour
        for k in range(n):
            colour = s["video"].permute(0, 2, 3, 1)[s["masks"] == k + 1].mean(0)
            expected = torch.tensor(PALETTE[names[k]]) * 2 - 1
            assert (colour - expected).abs().max() < 0.35


def test_balls_move_visibly():
    for size in (32, 64):
        ds = BouncingBalls(num_samples=32, num_frames=16, image_size=size)
        video = torch.stack([ds[i]["video"] for i in range(len(ds))])
        frame_diff = (video[:, 1:] - video[:, :-1]).abs().mean()
        assert frame_diff > 0.04, frame_diff  # copying the last frame is a poor predictor
        for i in range(len(ds)):  # every scene moves at least ~1 px per frame on average
            pos = ds.simulate(i)["pos"] * size
            assert np.linalg.norm(np.diff(pos, axis=0), axis=-1).mean() > 1.0


@pytest.mark.parametrize("equal_mass", [False, True])
def test_ball_physics(equal_mass):
    ds = BouncingBalls(num_samples=40, num_frames=24, min_balls=2, equal_mass=equal_mass)
    for i in range(len(ds)):
        sim = ds.simulate(i)
        r = sim["radius"][None, :, None]
        assert ((sim["pos"] >= r - 1e-9) & (sim["pos"] <= 1 - r + 1e-9)).all()  # inside the box
        m = sim["mass"]
        energy = (0.5 * m * (sim["vel"] ** 2).sum(-1) + m * ds.gravity * (1 - sim["pos"][..., 1])).sum(-1)
        assert np.abs(energy / energy[0] - 1).max() < 0.05
    # without gravity, walls and elastic collisions conserve kinetic energy exactly
    ds = BouncingBalls(num_samples=30, num_frames=24, min_balls=3, gravity=0.0, equal_mass=equal_mass)
    collisions = 0
    for i in range(len(ds)):
        sim = ds.simulate(i)
        ke = (0.5 * sim["mass"] * (sim["vel"] ** 2).sum(-1)).sum(-1)
        np.testing.assert_allclose(ke, ke[0], rtol=1e-9)
        collisions += sum(kind == "ball" for _, kind, _, _ in sim["events"])
    assert collisions > 0


def test_ball_render_is_vectorised():
    """Rendering is array work, not a per-pixel Python loop: count the Python-level calls it makes.

    (A wall-clock bound would be flaky on a shared machine; the work done is what matters.)"""
    import cProfile
    import pstats

    ds = BouncingBalls(num_samples=4, num_frames=16, image_size=32, min_balls=3)
    sims = [ds.simulate(i) for i in range(4)]
    prof = cProfile.Profile()
    prof.enable()
    for sim in sims:
        video, masks = ds.render(sim)
    prof.disable()
    calls = pstats.Stats(prof).total_calls / len(sims)
    # 16 frames x 3 balls: a loop over pixels would make >= 16 * 32 * 32 = 16,384 calls per video
    assert calls < 2_000, f"render made {calls:.0f} Python calls per video"
    assert video.shape == (16, 3, 32, 32)


def test_glyphs_label_caption_masks():
    ds = MovingGlyphs(num_samples=40, num_frames=8)
    for i in range(len(ds)):
        s = ds[i]
        digit = str(s["label"])
        assert s["caption"].startswith(f"digit {digit}") or s["caption"].startswith(f"digits {digit}")
        n = 1 if s["caption"].startswith("digit ") else 2
        assert set(np.unique(s["masks"].numpy()).tolist()) <= set(range(n + 1)) and s["masks"].max() >= 1
        assert (s["video"][:, 0][s["masks"] > 0] > 0).all()  # masked pixels are bright
        assert (s["video"][1:] - s["video"][:-1]).abs().mean() > 0.01  # glyphs move


def test_draw_digit():
    glyphs = [draw_digit(d, 28) for d in range(10)]
    for g in glyphs:
        assert g.shape == (28, 28) and g.dtype == np.float32 and 0 <= g.min() and g.max() <= 1
        assert 0.08 < (g > 0.5).mean() < 0.5
    diffs = [np.abs(a - b).mean() for i, a in enumerate(glyphs) for b in glyphs[i + 1 :]]
    assert min(diffs) > 0.03  # all ten digits look different


# ---------------------------------------------------------------------------------------------------
# Moving MNIST .npy


def test_moving_mnist(tmp_path):
    rng = np.random.default_rng(0)
    data = (rng.random((20, 3, 64, 64)) > 0.9).astype(np.uint8) * rng.integers(
        1, 256, (20, 3, 64, 64), dtype=np.uint8
    )
    path = tmp_path / "mnist_test_seq.npy"
    np.save(path, data)
    ds = MovingMNIST(path, num_frames=10)
    assert len(ds) == 3 and ds.channels == 1
    s = ds[1]
    assert s["video"].shape == (10, 1, 64, 64) and s["video"].dtype == torch.float32
    assert torch.equal(s["video"][:, 0], torch.from_numpy(data[:10, 1]).float() / 127.5 - 1)
    assert torch.equal(s["masks"], torch.from_numpy(data[:10, 1] > 0).long())
    assert s["label"] == -1 and s["caption"] == ""
    assert MovingMNIST(path)[0]["video"].shape == (20, 1, 64, 64)
    small = MovingMNIST(path, num_frames=4, image_size=32)[0]
    assert small["video"].shape == (4, 1, 32, 32) and small["masks"].shape == (4, 32, 32)
    assert small["video"].min() >= -1 and small["video"].max() <= 1


def test_moving_mnist_errors(tmp_path):
    missing = tmp_path / "nope.npy"
    with pytest.raises(FileNotFoundError, match="nope.npy"):
        MovingMNIST(missing)
    cases = {
        "text.npy": None,  # not an .npy file at all
        "small.npy": np.zeros((20, 3, 32, 32), np.uint8),
        "flat.npy": np.zeros((20, 64, 64), np.uint8),
        "float.npy": np.zeros((20, 3, 64, 64), np.float32),
    }
    for name, array in cases.items():
        path = tmp_path / name
        if array is None:
            path.write_text("hello, I am not an array")
        else:
            np.save(path, array)
        with pytest.raises(ValueError, match=name):
            MovingMNIST(path)
    good = tmp_path / "good.npy"
    np.save(good, np.zeros((20, 2, 64, 64), np.uint8))
    with pytest.raises(ValueError, match="good.npy.*20 frames"):
        MovingMNIST(good, num_frames=30)


# ---------------------------------------------------------------------------------------------------
# Video folder


def _frames(n, h=32, w=48):
    """n distinct RGB frames: a red background with a white bar moving right."""
    frames = []
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[..., 0] = 200
        img[..., 1:] = 30
        img[:, (3 * i) % (w - 6) : (3 * i) % (w - 6) + 6] = 255
        frames.append(img)
    return frames


def write_video(path, n, codec="libx264"):
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        for img in _frames(n):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode())


def write_gif(path, n):
    images = [Image.fromarray(f) for f in _frames(n)]
    images[0].save(path, save_all=True, append_images=images[1:], duration=100, loop=0)


@pytest.fixture
def video_root(tmp_path):
    root = tmp_path / "videos"
    (root / "cats").mkdir(parents=True)
    (root / "dogs" / "nested").mkdir(parents=True)
    write_video(root / "cats" / "clip_one.mp4", 16)  # 2 clips of 8 frames
    write_gif(root / "dogs" / "my-gif.gif", 10)  # 1 clip
    write_video(root / "dogs" / "nested" / "old.avi", 9, codec="mpeg4")  # 1 clip
    write_video(root / "dogs" / "short.mp4", 5)  # too short
    good = (root / "cats" / "clip_one.mp4").read_bytes()
    (root / "cats" / "broken.mp4").write_bytes(good[: len(good) // 2])  # truncated
    return root


def test_video_folder(video_root):
    with pytest.warns(UserWarning, match=r"skipped 2 of 5 video files") as record:
        ds = VideoFolder(video_root, frames=8, size=16)
    assert len(record) == 1
    message = str(record[0].message)
    assert "broken.mp4" in message and "short.mp4" in message and "has 5 frames, need 8" in message
    assert ds.classes == ["cats", "dogs"] and ds.num_classes == 2
    assert len(ds) == 4
    samples = [ds[i] for i in range(len(ds))]
    assert [s["label"] for s in samples] == [0, 0, 1, 1]
    assert [s["caption"] for s in samples] == ["clip one", "clip one", "my gif", "old"]
    for s in samples:
        assert s["video"].shape == (8, 3, 16, 16) and s["video"].dtype == torch.float32
        assert s["video"].min() >= -1 and s["video"].max() <= 1
        assert s["masks"].shape == (8, 16, 16) and not s["masks"].any()
        mean = s["video"].mean((0, 2, 3))
        assert mean[0] > mean[1] + 0.3 and mean[0] > mean[2] + 0.3  # red background, RGB order kept
    assert not torch.equal(samples[0]["video"], samples[1]["video"])  # the two clips of one file differ
    batch = video_batch(ds, [0, 2])
    assert batch["video"].shape == (2, 8, 3, 16, 16) and batch["label"].tolist() == [0, 1]


def test_video_folder_flat_and_clip_limit(tmp_path):
    write_video(tmp_path / "a_b-c.mp4", 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning when every file is usable
        ds = VideoFolder(tmp_path, frames=4, size=8, clips_per_file=2)
    assert len(ds) == 2 and ds.num_classes == 1
    assert ds[1]["label"] == 0 and ds[1]["caption"] == "a b c" and ds[1]["video"].shape == (4, 3, 8, 8)


def test_video_folder_strict_and_errors(video_root, tmp_path):
    with pytest.raises(ValueError, match=r"broken\.mp4.*(unreadable|truncated)"):
        VideoFolder(video_root, frames=8, size=16, strict=True)
    short_only = tmp_path / "short_only"
    short_only.mkdir()
    (video_root / "dogs" / "short.mp4").rename(short_only / "short.mp4")
    with pytest.raises(ValueError, match=r"short\.mp4: has 5 frames, need 8"):
        VideoFolder(short_only, frames=8, size=16, strict=True)
    with pytest.raises(ValueError, match="no usable video under .*short_only"):
        VideoFolder(short_only, frames=8, size=16)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no usable video under .*empty"):
        VideoFolder(empty, frames=8, size=16)
    with pytest.raises(FileNotFoundError, match="missing_dir"):
        VideoFolder(tmp_path / "missing_dir", frames=8, size=16)


# ---------------------------------------------------------------------------------------------------
# Factory and batching


def test_make_dataset(tmp_path):
    ds = make_dataset("bouncing_balls", num_frames=4, image_size=32, num_samples=5, seed=1)
    assert isinstance(ds, BouncingBalls) and len(ds) == 5 and ds[0]["video"].shape == (4, 3, 32, 32)
    ds = make_dataset("moving_glyphs", num_frames=4, image_size=64, num_samples=5, seed=1, channels=3)
    assert isinstance(ds, MovingGlyphs) and ds[0]["video"].shape == (4, 3, 64, 64)
    path = tmp_path / "seq.npy"
    np.save(path, np.zeros((20, 2, 64, 64), np.uint8))
    ds = make_dataset(f"moving_mnist:{path}", num_frames=8, image_size=32, num_samples=5, seed=0)
    assert isinstance(ds, MovingMNIST) and ds[0]["video"].shape == (8, 1, 32, 32)
    write_video(tmp_path / "v.mp4", 8)
    ds = make_dataset(f"folder:{tmp_path}", num_frames=8, image_size=16, num_samples=5, seed=0)
    assert isinstance(ds, VideoFolder) and len(ds) == 1
    with pytest.raises(ValueError, match=r"bouncing_balls.*did you mean 'bouncing_balls'"):
        make_dataset("bouncing_ball", num_frames=4, image_size=32, num_samples=5, seed=0)
    with pytest.raises(ValueError, match="needs a path"):
        make_dataset("moving_mnist", num_frames=4, image_size=32, num_samples=5, seed=0)


def test_video_batch_and_collate():
    ds = BouncingBalls(num_samples=6, num_frames=4)
    batch = video_batch(ds, torch.tensor([0, 3, 5]))
    assert batch["video"].shape == (3, 4, 3, 32, 32) and batch["masks"].shape == (3, 4, 32, 32)
    assert batch["label"].dtype == torch.int64 and batch["label"].shape == (3,)
    assert batch["caption"] == [ds[i]["caption"] for i in (0, 3, 5)]
    loaded = next(iter(DataLoader(ds, batch_size=3, collate_fn=collate)))
    assert torch.equal(loaded["video"], video_batch(ds, [0, 1, 2])["video"])


# ---------------------------------------------------------------------------------------------------
# Train / validation split of real data


def test_split_indices():
    from minivgpt.data import VAL_FRACTION, split_indices

    assert VAL_FRACTION == 0.1
    assert list(split_indices(20, "val")) == [18, 19] and list(split_indices(20, "train")) == list(range(18))
    assert list(split_indices(5, "val")) == [4] and list(split_indices(2, "train")) == [0]
    assert list(split_indices(3, "all")) == [0, 1, 2]
    with pytest.raises(ValueError, match="at least 2"):
        split_indices(1, "val")
    with pytest.raises(ValueError, match="split='test'"):
        split_indices(10, "test")


def test_moving_mnist_split_is_held_out(tmp_path):
    data = np.broadcast_to(np.arange(20, dtype=np.uint8)[None, :, None, None], (4, 20, 64, 64)).copy()
    path = tmp_path / "seq.npy"
    np.save(path, data)  # sequence i is filled with the value i
    train, val = MovingMNIST(path, split="train"), MovingMNIST(path, split="val")
    assert len(train) == 18 and len(val) == 2 and len(MovingMNIST(path)) == 20
    ids = lambda ds: {int(round((ds[i]["video"][0, 0, 0, 0].item() + 1) * 127.5)) for i in range(len(ds))}  # noqa: E731
    assert ids(train) == set(range(18)) and ids(val) == {18, 19}
    with pytest.raises(IndexError):
        val[2]
    assert len(make_dataset(f"moving_mnist:{path}", 4, 64, split="val")) == 2


def test_video_folder_split_is_held_out(tmp_path):
    for name in ("a", "b", "c"):
        write_video(tmp_path / f"{name}.mp4", 8)  # 2 clips of 4 frames each
    everything = VideoFolder(tmp_path, frames=4, size=8)
    train = VideoFolder(tmp_path, frames=4, size=8, split="train")
    val = make_dataset(f"folder:{tmp_path}", 4, 8, split="val")
    assert len(everything) == 6 and len(train) == 5 and len(val) == 1
    assert set(train.clips).isdisjoint(val.clips) and set(train.clips) | set(val.clips) == set(everything.clips)
    assert val.clips == [everything.clips[-1]]
    with pytest.raises(ValueError, match="split='valid'"):
        VideoFolder(tmp_path, frames=4, size=8, split="valid")
