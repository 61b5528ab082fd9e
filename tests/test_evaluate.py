"""Tests for minivgpt.evaluate (OpenSTL's convention, baselines, report schema) and minivgpt.simvp."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch
from tiny import TINY, idx_bytes

from minivgpt import metrics
from minivgpt.data import make_dataset, video_batch
from minivgpt.evaluate import METRICS, evaluate_run, format_table, frame_scores, main, ssim_skimage
from minivgpt.simvp import SimVP, compose, load_simvp, predict, simvp_config, train_simvp, warp
from minivgpt.train import train


def test_openstl_convention_on_a_hand_made_pair():
    black = torch.full((1, 2, 1, 64, 64), -1.0)  # 0 in [0, 1]
    white = torch.ones(1, 2, 1, 64, 64)  # 1 in [0, 1]
    s = frame_scores(black, white)
    assert s["mse"].shape == (1, 2)
    assert torch.equal(s["mse"], torch.full((1, 2), 4096.0))  # summed over the 64x64 pixels, not averaged
    assert torch.equal(s["mae"], torch.full((1, 2), 4096.0))
    assert torch.allclose(s["psnr"], torch.zeros(1, 2))
    assert s["ssim"].max() < 1e-3
    grey = torch.zeros(1, 1, 3, 64, 64)  # 0.5 everywhere, 3 channels: (0.5)^2 * 3 * 4096
    assert frame_scores(grey, white[:, :1].expand(1, 1, 3, 64, 64))["mse"].item() == pytest.approx(3072.0)
    same = frame_scores(white, white)
    assert same["mse"].max() == 0 and torch.allclose(same["ssim"], torch.ones(1, 2)) and (same["psnr"] == 100).all()


def test_ssim_matches_a_direct_window_by_window_computation():
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 12, 10, generator=g), torch.rand(2, 12, 10, generator=g)
    y = 0.6 * x + 0.4 * y  # correlated
    ours = ssim_skimage(x, y).item()
    c1, c2, vals = 0.01**2, 0.03**2, []
    xa, ya = x.double().numpy(), y.double().numpy()
    for c in range(2):
        for i in range(12 - 6):
            for j in range(10 - 6):
                a, b = xa[c, i : i + 7, j : j + 7].ravel(), ya[c, i : i + 7, j : j + 7].ravel()
                cov = np.cov(a, b)  # sample covariance (N - 1), as scikit-image's default
                vals.append(
                    (2 * a.mean() * b.mean() + c1) * (2 * cov[0, 1] + c2)
                    / ((a.mean() ** 2 + b.mean() ** 2 + c1) * (cov[0, 0] + cov[1, 1] + c2))
                )
    assert ours == pytest.approx(float(np.mean(vals)), abs=1e-5)
    with pytest.raises(ValueError, match="smaller than the SSIM window"):
        ssim_skimage(torch.zeros(1, 5, 5), torch.zeros(1, 5, 5))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(TINY, steps=3, out=str(out), ckpt_every=3)
    return out


def test_evaluate_videogpt_run(tiny_run):
    report = evaluate_run(tiny_run, context=2, predict=2, samples=2, videos=5, batch_size=3, steps=2, progress=False)
    rows = report["rows"]
    assert set(rows) == {"model", "model_mean_of_n", "model_best_of_n", "model_ensemble", "copy_last",
                         "constant_velocity", "constant_velocity_walls", "blank"}
    for row in rows.values():
        assert set(row) == {*METRICS, "per_frame"}
        assert all(len(row["per_frame"][k]) == 2 for k in METRICS)
        assert all(np.isfinite(row[k]) for k in METRICS)
    assert rows["model_best_of_n"]["mse"] <= rows["model_mean_of_n"]["mse"] + 1e-4
    assert report["kind"] == "videogpt" and report["videos"] == 5 and report["samples"] == 2
    assert report["split"] == "val" and report["data"] == "bouncing_balls" and report["data_seed"] == 1000
    # the baselines, recomputed by hand on the same held-out sequences
    data = make_dataset("bouncing_balls", 4, 16, 5, 1000, min_balls=1, max_balls=1)
    video = video_batch(data, range(5))["video"]
    truth01 = (video[:, 2:] + 1) / 2
    assert rows["blank"]["mse"] == pytest.approx(float(truth01.pow(2).sum((2, 3, 4)).mean()), rel=1e-5)
    copy = (metrics.copy_last(video[:, :2], 2) + 1) / 2
    assert rows["copy_last"]["mse"] == pytest.approx(float((copy - truth01).pow(2).sum((2, 3, 4)).mean()), rel=1e-5)
    walls = (metrics.constant_velocity(video[:, :2], 2, walls=True) + 1) / 2
    assert rows["constant_velocity_walls"]["mse"] == pytest.approx(
        float((walls - truth01).pow(2).sum((2, 3, 4)).mean()), rel=1e-5)
    on_disk = json.loads((tiny_run / "evaluate.json").read_text())
    assert on_disk["rows"]["blank"] == rows["blank"] and on_disk["convention"].startswith("OpenSTL")
    assert (tiny_run / "evaluate.png").stat().st_size > 0 and (tiny_run / "evaluate_curves.png").stat().st_size > 0
    assert "constant_velocity" in format_table(report)


def test_evaluate_cli_and_errors(tiny_run, tmp_path, capsys):
    report = main([str(tiny_run), "context=2", "predict=2", "videos=2", "steps=1", "progress=false",
                   "pictures=false", f"out={tmp_path / 'e'}"])
    assert (tmp_path / "e.json").exists() and not (tmp_path / "e.png").exists()
    assert report["rows"]["model"]["mse"] >= 0 and "MSE" in capsys.readouterr().out
    with pytest.raises(ValueError, match="multiples of the run's frames_per_clip=2"):
        evaluate_run(tiny_run, context=3, predict=2, videos=1, progress=False)
    with pytest.raises(ValueError, match="did you mean 'samples'"):
        main([str(tiny_run), "sample=2"])
    with pytest.raises(Exception, match="no checkpoint"):
        evaluate_run(tmp_path / "nothing", progress=False)
    with pytest.raises(ValueError, match="temperature=-1"):
        evaluate_run(tiny_run, context=2, predict=2, videos=1, temperature=-1, progress=False)


def test_evaluate_at_temperature_zero_is_one_deterministic_forecast(tiny_run, tmp_path):
    kw = dict(context=2, predict=2, videos=3, steps=2, progress=False, pictures=False, temperature=0.0)
    a = evaluate_run(tiny_run, samples=3, out=tmp_path / "a", **kw)
    b = evaluate_run(tiny_run, samples=1, seed=1000, out=tmp_path / "b", **kw)
    assert a["samples"] == 1 and a["temperature"] == 0.0 and "model_best_of_n" not in a["rows"]
    assert a["rows"]["model"]["mse"] == b["rows"]["model"]["mse"]


def test_simvp_shapes_and_config():
    model = SimVP(channels=3, context=4, predict=3, hid_s=8, hid_t=16, n_t=1)
    assert model(torch.zeros(2, 4, 3, 16, 16)).shape == (2, 3, 3, 16, 16)
    assert predict(model, torch.zeros(2, 5, 3, 16, 16), 7).shape == (2, 7, 3, 16, 16)  # chunked
    with pytest.raises(ValueError, match=r"SimVP takes \(B, 4, 3, H, W\)"):
        model(torch.zeros(2, 3, 3, 16, 16))
    with pytest.raises(ValueError, match="did you mean 'batch_size'"):
        simvp_config({"batch_sise": 3})
    with pytest.raises(ValueError, match="image_size=30 must be divisible by 4"):
        simvp_config({"image_size": "30"})
    assert simvp_config({"steps": "5", "minutes": "0.5"}).minutes == 0.5
    for name in ("l1_weight", "ssim_weight"):
        with pytest.raises(ValueError, match=name):
            simvp_config({name: "-1"})


def test_warp_moves_pixels_and_compose_chains_moves():
    x = torch.randn(2, 3, 12, 12)
    right = torch.zeros(2, 2, 12, 12)
    right[:, 0] = -2.0  # each pixel samples 2 to its left: the content moves 2 pixels right
    assert torch.allclose(warp(x, torch.zeros_like(right)), x, atol=1e-5)
    assert torch.allclose(warp(x, right)[..., 2:], x[..., :-2], atol=1e-5)
    assert torch.allclose(warp(x, right)[..., :2], x[..., :1].expand(-1, -1, -1, 2), atol=1e-5)  # border
    down = torch.zeros(2, 2, 12, 12)
    down[:, 1] = -1.5  # half-pixel moves blend two rows
    assert torch.allclose(warp(x, down)[..., 2:, :], 0.5 * (x[..., :-2, :] + x[..., 1:-1, :]), atol=1e-5)
    swirl = torch.randn(2, 2, 12, 12) * 0.5
    for total, step in ((right, down), (swirl, right)):  # one resample with the chained moves = two resamples
        inner = (slice(None), slice(None), slice(4, -4), slice(4, -4))
        assert torch.allclose(warp(warp(x, total), step)[inner], warp(x, compose(total, step))[inner], atol=1e-4)
    with pytest.raises(ValueError, match=r"disp \(N, 2, H, W\)"):
        warp(x, torch.zeros(2, 2, 12, 11))


def test_warp_simvp_chains_its_moves_from_the_last_context_frame():
    """With the readout set by hand (a constant one-pixel move per frame, the mask at 1), the warp decoder gives
    the last context frame moved k pixels at future frame k; with no move it is copy-last."""
    torch.manual_seed(0)
    model = SimVP(channels=1, context=3, predict=4, hid_s=8, hid_t=16, n_t=1, decoder="warp").eval()
    conv = model.readout[0]  # PixelShuffle(2): conv channels 4c..4c+3 are output channel c
    context = torch.rand(2, 3, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        conv.bias[8:12] = 30.0  # channel 2: the mask logit -> the warped frame only
        assert torch.allclose(model(context), context[:, -1:].expand(-1, 4, -1, -1, -1), atol=1e-5)
        conv.bias[4:8] = -1.0  # channel 1: y displacement -1, each frame moves the content one pixel down
        out = model(context)
    for k in range(4):
        assert torch.allclose(out[:, k, :, k + 1 :], context[:, -1, :, : 15 - k], atol=1e-5)
    assert model(context).shape == (2, 4, 1, 16, 16)
    with pytest.raises(ValueError, match="parameter decoder='flow': choose one of pixels, warp"):
        simvp_config({"decoder": "flow"})


def _write_mnist(root, n=12):
    root.mkdir()
    images = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        images[i, 4 : 12 + i, 6:20] = 120 + 10 * i
    (root / "imgs.gz").write_bytes(gzip.compress(idx_bytes(images)))
    return root


@pytest.mark.parametrize("decoder", ["pixels", "warp"])
def test_simvp_trains_saves_and_evaluates(tmp_path, decoder):
    mnist = _write_mnist(tmp_path / "mnist")
    params = dict(data=f"moving_mnist_digits:{mnist}", image_size=16, context=2, predict=2, hid_s=8, hid_t=16,
                  n_t=1, decoder=decoder, batch_size=4, steps=4, log_every=1, progress=False, threads=1,
                  out=str(tmp_path / "run"))
    model, records = train_simvp(params)
    assert [r["step"] for r in records] == [1, 2, 3, 4] and all(np.isfinite(r["loss"]) for r in records)
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ckpt["kind"] == "simvp" and ckpt["step"] == 4 and ckpt["stopped_by"] == "steps"
    loaded, cfg = load_simvp(tmp_path / "run")
    x = torch.rand(1, 2, 1, 16, 16) * 2 - 1
    assert torch.equal(loaded(x), model(x)) and cfg.context == 2 and cfg.decoder == loaded.decoder == decoder
    if decoder == "pixels":  # the next batch drawn on a thread (prefetch=on; auto turns it on for CUDA): same run
        ahead, _ = train_simvp(params, prefetch="on", out=str(tmp_path / "ahead"))
        assert all(torch.equal(a, b) for a, b in zip(ahead.state_dict().values(), model.state_dict().values()))
        # l1_weight and ssim_weight add terms on the same prediction to the loss, and so change the update
        extra = {}
        for name, terms in {"l1": {"l1_weight": 0.5}, "ssim": {"ssim_weight": 2.0},
                            "both": {"l1_weight": 0.5, "ssim_weight": 2.0}}.items():
            other, rec = train_simvp(params, **terms, out=str(tmp_path / name))
            assert rec[0]["mse"] == records[0]["loss"] == records[0]["mse"]  # the same start and batch
            assert not torch.equal(other.readout[0].weight, model.readout[0].weight)
            extra[name] = rec[0]["loss"] - rec[0]["mse"]
        assert extra["l1"] > 0.05 and 0.05 < extra["ssim"] <= 4.0  # |error| ~ 1 at the start; 1 - SSIM <= 2
        assert extra["both"] == pytest.approx(extra["l1"] + extra["ssim"], rel=1e-5)
    with pytest.raises(FileExistsError, match="overwrite=true"):
        train_simvp(params)
    report = evaluate_run(tmp_path / "run", context=2, predict=3, videos=3, progress=False)
    assert report["kind"] == "simvp" and report["samples"] == 1 and report["split"] == "val"
    assert set(report["rows"]) == {"model", "copy_last", "constant_velocity", "constant_velocity_walls", "blank"}
    assert len(report["rows"]["model"]["per_frame"]["mse"]) == 3
    with pytest.raises(ValueError, match="trained with context=2"):
        evaluate_run(tmp_path / "run", context=4, predict=2, videos=1, progress=False)
    # a wall budget stops training early and says so
    _, records = train_simvp(params, steps=10_000, minutes=0.001, overwrite=True)
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ckpt["stopped_by"] == "minutes" and ckpt["step"] < 10_000 and records[-1]["step"] == ckpt["step"]


def test_a_latent_run_is_scored_beside_its_autoencoders_round_trip(tmp_path):
    """A run on an autoencoder's latents gets an ``autoencoder`` row: the true frames encoded and decoded, its
    ceiling; a pixel run (the other tests) has none."""
    from minivgpt.autoencoder import build_autoencoder, save_autoencoder

    torch.manual_seed(0)
    ae = build_autoencoder("conv", channels=3, latent_channels=4, hidden=8, downsample=2)
    save_autoencoder(ae, tmp_path / "ae.pt")
    train(TINY, steps=2, patch_size=2, autoencoder=str(tmp_path / "ae.pt"), out=str(tmp_path / "run"))
    report = evaluate_run(tmp_path / "run", context=2, predict=2, videos=3, steps=1, progress=False, pictures=False)
    truth = video_batch(make_dataset("bouncing_balls", 4, 16, 3, 1000, min_balls=1, max_balls=1), range(3))["video"]
    with torch.no_grad():
        latents = ae.eval().encode(truth[:, 2:].flatten(0, 1))
        recon = ae.decode(latents).view_as(truth[:, 2:]).clamp(-1, 1)
    want = frame_scores(recon, truth[:, 2:])["mse"].mean()
    assert report["rows"]["autoencoder"]["mse"] == pytest.approx(float(want), rel=1e-4)
    assert report["rows"]["autoencoder"]["mse"] > 0  # an untrained autoencoder: not the identity
    assert "autoencoder" in format_table(report)
