"""Tests for minivgpt.autoencoder: shapes, identity, checkpoints, a short training run, determinism."""

import math
import os

import pytest
import torch

from minivgpt.autoencoder import (
    FrameAutoencoder,
    IdentityAutoencoder,
    build_autoencoder,
    load_autoencoder,
    reconstruction_psnr,
    save_autoencoder,
    train_autoencoder,
)
from minivgpt.data import BouncingBalls


@pytest.fixture(scope="module")
def tiny_balls():
    return BouncingBalls(num_samples=8, num_frames=6, image_size=16, seed=0)


def _tiny_train(dataset, seed=0, steps=12):
    return train_autoencoder(
        dataset,
        steps=steps,
        batch_size=8,
        lr=3e-3,
        seed=seed,
        progress=False,
        hidden=8,
        warmup=2,
        log_every=1,
    )


@pytest.mark.parametrize("lead", [(), (5,), (2, 3), (2, 2, 3)])
def test_conv_shapes_any_leading_dims(lead):
    ae = FrameAutoencoder(in_channels=3, latent_channels=4, hidden=8, downsample=4).eval()
    x = torch.rand(*lead, 3, 16, 24) * 2 - 1
    z = ae.encode(x)
    assert z.shape == (*lead, 4, 4, 6)
    y = ae.decode(z)
    assert y.shape == x.shape
    assert y.min() >= -1 and y.max() <= 1
    assert ae.latent_shape(16, 24) == (4, 4, 6)


@pytest.mark.parametrize("downsample", [1, 2, 8])
def test_conv_other_downsample(downsample):
    ae = FrameAutoencoder(in_channels=1, latent_channels=2, hidden=8, downsample=downsample)
    z = ae.encode(torch.zeros(2, 1, 16, 16))
    assert z.shape == (2, 2, 16 // downsample, 16 // downsample)


def test_conv_rejects_bad_input():
    ae = FrameAutoencoder(hidden=8)
    with pytest.raises(ValueError, match="channels"):
        ae.encode(torch.zeros(2, 1, 16, 16))
    with pytest.raises(ValueError, match="divisible"):
        ae.encode(torch.zeros(2, 3, 18, 16))
    with pytest.raises(ValueError, match="power of two"):
        FrameAutoencoder(downsample=3)


def test_identity_is_exact():
    ae = build_autoencoder("identity", 3)
    assert isinstance(ae, IdentityAutoencoder)
    assert ae.downsample == 1 and ae.latent_channels == 3
    x = torch.randn(2, 3, 4, 3, 8, 8) * 3  # even outside [-1, 1]: no clamping
    assert torch.equal(ae.encode(x), x)
    assert torch.equal(ae.decode(ae.encode(x)), x)
    assert list(ae.parameters()) == []


def test_build_autoencoder():
    ae = build_autoencoder("conv", 1, latent_channels=2, hidden=8)
    assert isinstance(ae, FrameAutoencoder) and ae.in_channels == 1 and ae.latent_channels == 2
    with pytest.raises(ValueError, match="identity.*conv"):
        build_autoencoder("vae", 3)


def test_normalisation_does_not_change_reconstruction():
    ae = FrameAutoencoder(hidden=8).eval()
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    y1 = ae(x)
    raw = ae.encode_raw(x)
    assert torch.equal(ae.encode(x), raw)  # untrained: shift 0, scale 1
    ae.scale.fill_(3.0)
    ae.shift.copy_(torch.tensor([0.5, -1.0, 0.0, 2.0]))
    assert torch.allclose(ae.encode(x), 3.0 * (raw - ae.shift[:, None, None]))
    assert torch.allclose(ae(x), y1, atol=1e-5)


@pytest.mark.parametrize("kind", ["conv", "identity"])
def test_save_load_round_trip(tmp_path, kind):
    ae = build_autoencoder(kind, 3, **({"hidden": 8} if kind == "conv" else {})).eval()
    if kind == "conv":
        ae.scale.fill_(1.7)
        ae.shift.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    path = tmp_path / "sub" / "ae.pt"
    save_autoencoder(ae, path)
    assert os.listdir(path.parent) == ["ae.pt"]  # atomic: no temporary file left behind

    raw = torch.load(path, weights_only=True)
    assert raw["kind"] == kind and "state_dict" in raw and "kwargs" in raw
    assert raw["scale"] == pytest.approx(float(ae.scale))

    loaded = load_autoencoder(path)
    assert type(loaded) is type(ae) and not loaded.training
    assert float(loaded.scale) == pytest.approx(float(ae.scale))
    if kind == "conv":
        assert raw["shift"] == pytest.approx([0.1, 0.2, 0.3, 0.4])
        assert torch.equal(loaded.shift, ae.shift)
    x = torch.rand(2, 2, 3, 16, 16) * 2 - 1
    assert torch.equal(loaded.encode(x), ae.encode(x))
    assert torch.equal(loaded.decode(loaded.encode(x)), ae.decode(ae.encode(x)))


def test_load_missing_file_names_it(tmp_path):
    path = tmp_path / "nope" / "ae.pt"
    with pytest.raises(FileNotFoundError, match="ae.pt") as err:
        load_autoencoder(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "not_a_checkpoint"])
def test_load_corrupt_file_names_it(tmp_path, damage):
    path = tmp_path / "broken.pt"
    if damage == "garbage":
        path.write_bytes(b"this is not a torch file")
    elif damage == "truncated":
        save_autoencoder(FrameAutoencoder(hidden=8), path)
        path.write_bytes(path.read_bytes()[:200])
    else:
        torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(RuntimeError) as err:
        load_autoencoder(path)
    assert str(path) in str(err.value)


def test_short_training_lowers_loss_and_sets_scale(tiny_balls):
    model, history = _tiny_train(tiny_balls, steps=25)
    assert len(history) == 25 and history[0]["step"] == 1 and history[-1]["step"] == 25
    first = sum(h["loss"] for h in history[:3]) / 3
    last = sum(h["loss"] for h in history[-3:]) / 3
    assert last < 0.7 * first, (first, last)
    assert not model.training
    # shift and scale make the encoded latents of training frames about zero mean, unit std
    frames = torch.cat([tiny_balls[i]["video"] for i in range(len(tiny_balls))])
    with torch.no_grad():
        z = model.encode(frames)
    assert 0.8 < z.std().item() < 1.25, z.std().item()
    assert z.mean((0, 2, 3)).abs().max().item() < 0.2
    assert history[-1]["scale"] == pytest.approx(float(model.scale))


def test_training_beats_the_mean_frame(tiny_balls):
    """60 tiny steps already reconstruct better than the best constant frame (measured 17.1 vs 13.5 dB)."""
    model, _ = _tiny_train(tiny_balls, steps=60)
    frames = torch.cat([tiny_balls[i]["video"] for i in (0, 1)])
    mean_frame_mse = (frames - frames.mean((0, 2, 3), keepdim=True)).pow(2).mean().item()
    mean_frame_psnr = 10 * math.log10(4.0 / mean_frame_mse)
    psnr = reconstruction_psnr(model, tiny_balls, [0, 1])
    assert psnr > mean_frame_psnr + 2.5, (psnr, mean_frame_psnr)


def test_training_is_deterministic(tiny_balls):
    m1, h1 = _tiny_train(tiny_balls, seed=3, steps=6)
    m2, h2 = _tiny_train(tiny_balls, seed=3, steps=6)
    m3, _ = _tiny_train(tiny_balls, seed=4, steps=6)
    assert [h["loss"] for h in h1] == [h["loss"] for h in h2]
    s1, s2, s3 = m1.state_dict(), m2.state_dict(), m3.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert not all(torch.equal(s1[k], s3[k]) for k in s1)


def test_time_limit_stops_early(tiny_balls):
    _, history = train_autoencoder(
        tiny_balls, steps=10_000, batch_size=4, seed=0, progress=False, hidden=8, time_limit_s=0.5
    )
    assert history[-1]["step"] < 10_000 and history[-1]["stopped_early"] == 1.0


def test_reconstruction_psnr_identity_is_inf(tiny_balls):
    assert reconstruction_psnr(IdentityAutoencoder(3), tiny_balls, [0]) == float("inf")


def test_autoencoder_auto_is_trained_once_per_data_and_recorded(tmp_path, monkeypatch):
    """``autoencoder=auto``: trained on the first run, reused by the next run of the same data (no training),
    a new one for other data; the run records the path, so load_run and a resume read the same file."""
    from pathlib import Path

    from tiny import TINY

    import minivgpt.autoencoder as ae_mod
    from minivgpt.train import load_run, train

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ae_mod, "AUTO_SETTINGS", {**ae_mod.AUTO_SETTINGS, "steps": 3, "hidden": 8})
    params = {**TINY, "steps": 2, "autoencoder": "auto", "patch_size": 2, "out": "runs/a"}
    first = train(params).config.data.autoencoder
    assert Path(first).parent.parent == tmp_path / "runs" / "autoencoder" and Path(first).name == "autoencoder.pt"
    assert Path(first).exists() and Path(first).with_name("key.json").exists()

    def no_training(*args, **kwargs):
        raise AssertionError("the cached autoencoder should have been reused")

    real = ae_mod.train_autoencoder
    monkeypatch.setattr(ae_mod, "train_autoencoder", no_training)
    assert train({**params, "out": "runs/b"}).config.data.autoencoder == first
    train({**params, "out": "runs/b", "steps": 3, "resume": True})  # auto resolves to the recorded path
    _, tok, cfg = load_run("runs/b")
    assert cfg.data.autoencoder == first and tok.token_dim == 4 * 2 * 2  # 4 latent channels, patch 2
    with pytest.raises(AssertionError, match="reused"):  # other data (1-2 balls): another autoencoder
        train({**params, "out": "runs/c", "max_balls": 2})
    monkeypatch.setattr(ae_mod, "train_autoencoder", real)
    other = train({**params, "out": "runs/c", "max_balls": 2}).config.data.autoencoder
    assert other != first and Path(other).exists()
