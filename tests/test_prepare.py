"""Prepared shards (minivgpt.prepare, minivgpt.shards): same samples and same training as the source,
byte-identical resume, skipped bad files, splits, latents, and errors that name the file."""

import hashlib
import json

import av
import numpy as np
import pytest
import torch
from tiny import TINY, assert_same_params

from minivgpt import prepare as prep
from minivgpt.autoencoder import build_autoencoder, save_autoencoder
from minivgpt.data import VideoFolder, make_dataset
from minivgpt.shards import ShardDataset
from minivgpt.train import train

SIZE = 16  # TINY's image_size: videos written at this size are stored exactly (no resize)


def write_video(path, n, size=SIZE, seed=0):
    """An n-frame video of a bright square moving over a coloured noise background."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 120, (size, size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
        for t in range(n):
            img = base.copy()
            x = (2 * t) % (size - 4)
            img[4:8, x : x + 4] = 255
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode())


@pytest.fixture
def folder(tmp_path):
    """Two classes, 4 usable files: 3 + 2 + 2 + 3 = 10 clips of 4 frames."""
    root = tmp_path / "videos"
    write_video(root / "cats" / "a_cat.mp4", 12, seed=1)
    write_video(root / "cats" / "b-cat.mp4", 9, seed=2)
    write_video(root / "dogs" / "c_dog.mp4", 8, seed=3)
    write_video(root / "dogs" / "deep" / "d.mp4", 13, seed=4)
    return root


def add_bad_files(root):
    good = (root / "cats" / "a_cat.mp4").read_bytes()
    (root / "cats" / "broken.mp4").write_bytes(good[: len(good) // 3])  # truncated
    write_video(root / "dogs" / "short.mp4", 3)  # fewer than 4 frames


def file_hashes(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_folder_shards_hold_exactly_the_video_folder_clips_per_split(folder, tmp_path):
    index = prep.prepare(f"folder:{folder}", tmp_path / "s", frames=4, image_size=SIZE, shard_size=3, workers=2,
                         progress=False)
    assert index["num_clips"] == 10 and index["splits"] == {"train": 9, "val": 1} and len(index["shards"]) == 2
    assert index["classes"] == ["cats", "dogs"] and index["dtype"] == "uint8"
    assert [c["source"] for c in index["clips"]][:4] == ["cats/a_cat.mp4"] * 3 + ["cats/b-cat.mp4"]
    assert [c["offset"] for c in index["clips"]][:4] == [0, 4, 8, 0]
    for split, n in (("all", 10), ("train", 9), ("val", 1)):
        ours, theirs = ShardDataset(tmp_path / "s", 4, SIZE, split=split), VideoFolder(folder, 4, SIZE, split=split)
        assert len(ours) == len(theirs) == n and ours.classes == theirs.classes
        for i in range(n):
            a, b = ours[i], theirs[i]
            assert torch.equal(a["video"], b["video"]), (split, i)  # bit for bit: stored at the source size
            assert (a["label"], a["caption"]) == (b["label"], b["caption"])
            assert a["masks"].shape == b["masks"].shape and not a["masks"].any()
    first = make_dataset(f"shards:{tmp_path / 's'}", 2, SIZE, split="train")[0]["video"]  # fewer frames: a prefix
    assert torch.equal(first, VideoFolder(folder, 4, SIZE)[0]["video"][:2])


def test_prepare_then_train_equals_training_on_the_source(folder, tmp_path):
    prep.prepare(f"folder:{folder}", tmp_path / "s", frames=4, image_size=SIZE, shard_size=2, workers=1,
                 progress=False)
    runs = {}
    for name, data in (("source", f"folder:{folder}"), ("shards", f"shards:{tmp_path / 's'}")):
        runs[name] = tmp_path / name
        train(**TINY, data=data, num_classes=2, steps=3, out=str(runs[name]))
    assert_same_params(runs["source"] / "last.pt", runs["shards"] / "last.pt")  # bit for bit


def test_generated_source_is_split_by_seed_and_quantized_within_half_a_level(tmp_path):
    index = prep.prepare("bouncing_balls", tmp_path / "s", frames=6, image_size=SIZE, num_samples=10, val_samples=3,
                         seed=5, shard_size=4, workers=1, progress=False)
    assert index["splits"] == {"train": 10, "val": 3} and len(index["shards"]) == 4
    train_set, val_set = (ShardDataset(tmp_path / "s", 6, SIZE, split=s) for s in ("train", "val"))
    src_train = make_dataset("bouncing_balls", 6, SIZE, 10, seed=5, min_balls=1, max_balls=1)
    src_val = make_dataset("bouncing_balls", 6, SIZE, 3, seed=6, min_balls=1, max_balls=1)  # validation: seed + 1
    for ours, theirs in ((train_set, src_train), (val_set, src_val)):
        assert len(ours) == len(theirs)
        for i in range(len(ours)):
            a, b = ours[i], theirs[i]
            assert (a["video"] - b["video"]).abs().max() <= 0.5 / 127.5 + 1e-6
            assert torch.equal(a["masks"], b["masks"]) and (a["label"], a["caption"]) == (b["label"], b["caption"])
    assert len(ShardDataset(tmp_path / "s")) == 13


def test_interrupted_prepare_resumes_to_the_same_bytes(tmp_path, monkeypatch):
    kw = dict(frames=4, image_size=SIZE, num_samples=12, seed=1, shard_size=3, workers=1, progress=False)
    prep.prepare("moving_glyphs", tmp_path / "clean", **kw)

    real, calls = prep.write_shard, []

    def dies_on_the_third_shard(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(prep, "write_shard", dies_on_the_third_shard)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare("moving_glyphs", tmp_path / "run", **kw)
    assert not (tmp_path / "run" / "index.json").exists() and (tmp_path / "run" / "shard_00001.json").exists()
    (tmp_path / "run" / ".shard_00002.frames.npy.abc.tmp").write_bytes(b"half a shard")  # as a kill leaves it
    done = (tmp_path / "run" / "shard_00000.frames.npy").stat().st_mtime_ns
    monkeypatch.setattr(prep, "write_shard", real)
    calls.clear()
    prep.prepare("moving_glyphs", tmp_path / "run", **kw)
    assert file_hashes(tmp_path / "run") == file_hashes(tmp_path / "clean")
    assert (tmp_path / "run" / "shard_00000.frames.npy").stat().st_mtime_ns == done  # finished shards skipped


def test_a_bad_file_is_skipped_with_a_counted_warning(folder, tmp_path):
    add_bad_files(folder)
    with pytest.warns(UserWarning, match=r"skipped 2 of 6 video files") as record:
        index = prep.prepare(f"folder:{folder}", tmp_path / "s", frames=4, image_size=SIZE, shard_size=2, workers=1,
                             progress=False)
    message = str(record[0].message)
    assert "broken.mp4" in message and "unreadable or truncated" in message and "has 3 frames, need 4" in message
    assert sorted(f for f, _ in index["skipped"]) == ["cats/broken.mp4", "dogs/short.mp4"]
    with pytest.warns(UserWarning, match="skipped 2 of 6"):
        theirs = VideoFolder(folder, 4, SIZE)
    ours = ShardDataset(tmp_path / "s", 4, SIZE)
    assert len(ours) == len(theirs) == 10
    assert all(torch.equal(ours[i]["video"], theirs[i]["video"]) for i in range(10))


def test_latent_shards_hold_the_autoencoder_latents_in_float16(tmp_path):
    torch.manual_seed(0)
    ae = build_autoencoder("conv", channels=1, latent_channels=2, hidden=8, downsample=4)
    save_autoencoder(ae, tmp_path / "ae.pt")
    index = prep.prepare("moving_glyphs", tmp_path / "s", frames=3, image_size=SIZE, num_samples=4, val_samples=1,
                         autoencoder=str(tmp_path / "ae.pt"), workers=1, progress=False)
    assert index["kind"] == "latents" and index["dtype"] == "float16" and index["clip_shape"] == [3, 2, 4, 4]
    ds = ShardDataset(tmp_path / "s", 3, SIZE, split="train")
    src = make_dataset("moving_glyphs", 3, SIZE, 4, seed=0)
    assert ds.latents and np.load(tmp_path / "s" / "shard_00000.frames.npy", mmap_mode="r").dtype == np.float16
    with torch.no_grad():
        want = ae.eval().encode(src[2]["video"])
    assert ds[2]["video"].shape == (3, 2, 4, 4)
    torch.testing.assert_close(ds[2]["video"], want.half().float(), rtol=0, atol=0)


def test_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"index\.json not found"):
        (tmp_path / "empty").mkdir() or make_dataset(f"shards:{tmp_path / 'empty'}", 4, SIZE)
    prep.prepare("moving_glyphs", tmp_path / "s", frames=4, image_size=SIZE, num_samples=3, workers=1, progress=False)
    with pytest.raises(ValueError, match="image_size=16"):
        ShardDataset(tmp_path / "s", 4, 32)
    with pytest.raises(ValueError, match="frames=5"):
        ShardDataset(tmp_path / "s", 5, SIZE)
    with pytest.raises(FileExistsError, match="another prepare config.*overwrite=true"):
        prep.prepare("moving_glyphs", tmp_path / "s", frames=4, image_size=SIZE, num_samples=5, progress=False)
    (tmp_path / "s" / "shard_00000.frames.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match=r"shard_00000\.frames\.npy"):
        ShardDataset(tmp_path / "s", 4, SIZE)[0]
    (tmp_path / "s" / "index.json").write_text('{"format": "minivgpt.shards/1", "clips": [')
    with pytest.raises(ValueError, match=r"s/index\.json is not a readable shard index"):
        make_dataset(f"shards:{tmp_path / 's'}", 4, SIZE)
    with pytest.raises(FileNotFoundError, match="video folder not found"):
        prep.prepare(f"folder:{tmp_path / 'nothing'}", tmp_path / "f", progress=False)


def test_command_line(tmp_path, capsys):
    prep.main(["moving_glyphs", f"out={tmp_path / 's'}", "frames=2", "image_size=16", "num_samples=4",
               "workers=1", "progress=false"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_clips"] == 5 and summary["splits"] == {"train": 4, "val": 1} and summary["skipped"] == 0
    with pytest.raises(ValueError, match="did you mean 'frames'"):
        prep.main(["moving_glyphs", f"out={tmp_path / 't'}", "frame=2"])
    with pytest.raises(ValueError, match="unknown dataset"):
        prep.main(["moving_glyph", f"out={tmp_path / 't'}"])


def test_training_on_latent_shards_skips_the_autoencoder_and_checks_it(tmp_path):
    """Latent shards train like the source with the same autoencoder (up to fp16 rounding of the latents),
    and refuse an autoencoder they were not prepared with."""
    torch.manual_seed(0)
    ae = build_autoencoder("conv", channels=1, latent_channels=2, hidden=8, downsample=4)
    save_autoencoder(ae, tmp_path / "ae.pt")
    prep.prepare("moving_glyphs", tmp_path / "s", frames=4, image_size=SIZE, num_samples=16, val_samples=4,
                 autoencoder=str(tmp_path / "ae.pt"), workers=1, progress=False)
    common = {**TINY, "patch_size": 2, "image_size": SIZE, "autoencoder": str(tmp_path / "ae.pt"), "steps": 2,
              "num_samples": 16}
    a = train(common, data=f"shards:{tmp_path / 's'}", out=str(tmp_path / "a"))
    b = train(common, data="moving_glyphs", out=str(tmp_path / "b"))
    assert a.tokenizer.latent_inputs and not b.tokenizer.latent_inputs
    assert [r["loss"] for r in a.records] == pytest.approx([r["loss"] for r in b.records], rel=1e-2)
    torch.manual_seed(1)
    save_autoencoder(build_autoencoder("conv", channels=1, latent_channels=2, hidden=8, downsample=4),
                     tmp_path / "other.pt")
    with pytest.raises(ValueError, match="latents of another autoencoder"):
        train(common, data=f"shards:{tmp_path / 's'}", autoencoder=str(tmp_path / "other.pt"), out=str(tmp_path / "c"))
