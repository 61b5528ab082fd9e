"""The history diagnostic: error with and without history against t, and the history gain at t = 0."""

import json

import pytest
import torch

from minivgpt.diagnostics import DEFAULT_TS, HistoryDiagnostic, history_gain, history_records
from minivgpt.train import train


def static_videos(B=6, K=4, F=2, N=4, D=12, seed=0):
    """Clean tokens of static scenes: every frame is the same image plus a little per-frame noise."""
    g = torch.Generator().manual_seed(seed)
    scene = torch.randn(B, 1, 1, N, D, generator=g)
    return scene + 0.1 * torch.randn(B, K, F, N, D, generator=g)


def copy_last(noisy, clean, t, t_clean=None):
    """Predicts clip k as the clean clip k - 1 (the history); with no history, the noisy input itself."""
    out = noisy.clone()
    out[:, 1:] = clean[:, :-1]
    return out


def ignore_history(noisy, clean, t, t_clean=None):
    """Reads only the noisy clip: its own x_t rescaled."""
    return noisy * t[..., None, None, None]


def test_copying_the_history_gains_and_ignoring_it_does_not():
    x = static_videos()
    copy = history_gain(copy_last, x)
    assert copy.err_with.shape == copy.err_without.shape == (len(DEFAULT_TS), 4)
    assert copy.gain > 10  # from pure noise, the history is nearly the answer
    assert torch.allclose(copy.gain_per_clip[0], torch.tensor(1.0))  # clip 0 has no history either way
    ignore = history_gain(ignore_history, x)
    assert ignore.gain == 1.0 and torch.equal(ignore.err_with, ignore.err_without)


def test_shapes_and_errors_on_bad_input():
    x = static_videos(K=3)
    d = history_gain(copy_last, x, ts=(0.0, 0.5), batch_size=4)
    assert d.t == [0.0, 0.5] and d.err_with.shape == (2, 3)
    assert (d.err_with[1] < d.err_without[0]).all()  # a less noisy input is easier without history too
    with pytest.raises(ValueError, match="must include 0.0"):
        history_gain(copy_last, x, ts=(0.5,))
    with pytest.raises(ValueError, match="K >= 2"):
        history_gain(copy_last, x[:, :1])
    rec = d.to_record(step=7)
    back = HistoryDiagnostic.from_record(rec)
    assert back.step == 7 and back.gain == d.gain and torch.allclose(back.err_with, d.err_with)


def test_logged_during_training_for_trained_and_untrained_models(tmp_path):
    from tiny import TINY

    res = train(out=str(tmp_path / "r"), **dict(TINY, steps=4, eval_every=2, amp="off", ckpt_every=100))
    assert [h["step"] for h in res.history] == [2, 4]
    assert all("loss" in r for r in res.records)  # the loss records stay a list of loss records
    logged = history_records([json.loads(line) for line in open(tmp_path / "r" / "metrics.jsonl")])
    assert [d.step for d in logged] == [2, 4] and logged[-1].err_with.shape == (len(DEFAULT_TS), 2)
    val = torch.randn(3, 2, 2, res.ema.tokens_per_frame, res.ema.in_dim)
    trained = history_gain(res.model, val)
    untrained = history_gain(type(res.model)(res.model.cfg, res.model.in_dim, res.model.grid).eval(), val)
    assert untrained.gain == pytest.approx(1.0, abs=1e-5)  # zero-initialised output: predicts 0 either way
    assert trained.err_with.shape == untrained.err_with.shape == (len(DEFAULT_TS), 2)


def test_plot_helpers_draw_a_diagnostic_and_a_gain_curve():
    import matplotlib

    matplotlib.use("Agg")
    from minivgpt import viz

    d = history_gain(copy_last, static_videos(K=3))
    ax = viz.plot_history_diagnostic(d)
    assert len(ax.get_lines()) == 2 * 2  # clips 1 and 2, with and without history
    recs = [{"step": 1, "loss": 1.0}, d.to_record(5), d.to_record(10)]
    ax = viz.plot_history_gain(recs)
    assert list(ax.get_lines()[0].get_xdata()) == [5, 10]
    viz.plot_history_diagnostic(recs[1])
    matplotlib.pyplot.close("all")


class _Redrawer(torch.nn.Module):
    """A stand-in network whose clean prediction is its noisy input times ``gain`` (1 = a perfect redraw)."""

    def __init__(self, gain: float):
        super().__init__()
        self.gain = gain

    def prefill(self, history):
        return history

    def denoise(self, noisy, t, cache):
        return noisy * self.gain


def test_redraw_shape_is_one_for_a_perfect_redraw_and_sees_a_dimmed_one():
    from minivgpt.autoencoder import IdentityAutoencoder
    from minivgpt.data import BouncingBalls, video_batch
    from minivgpt.diagnostics import redraw_shape
    from minivgpt.tokenizer import VideoTokenizer

    videos = video_batch(BouncingBalls(8, 6, 16, 1, 1, seed=0), range(8))["video"]
    tok = VideoTokenizer(IdentityAutoencoder(3), 4, 16)
    perfect = redraw_shape(_Redrawer(1.0), tok, videos, 2, 2, t=0.999)
    assert len(perfect["area_ratio"]) == 2
    assert perfect["area_ratio"] == [1.0, 1.0]  # 0.1 % noise moves no pixel across the threshold
    assert all(abs(p - 1) < 1e-2 for p in perfect["peak_ratio"])  # ... and the peak by that much at most
    dim = redraw_shape(_Redrawer(0.5), tok, videos, 2, 2, t=0.999)  # pixels halved: every one moves toward 0
    assert all(a > 1.5 for a in dim["area_ratio"])  # the black background (-1) becomes grey: all foreground
    with pytest.raises(ValueError, match="T >= "):
        redraw_shape(_Redrawer(1.0), tok, videos[:, :5], 2, 2)
    with pytest.raises(ValueError, match="t in"):
        redraw_shape(_Redrawer(1.0), tok, videos, 2, 2, t=1.0)


def test_subspace_shape_is_exact_at_full_rank_and_softens_the_ball_below_it():
    from minivgpt.autoencoder import IdentityAutoencoder
    from minivgpt.data import BouncingBalls, video_batch
    from minivgpt.diagnostics import subspace_shape
    from minivgpt.tokenizer import VideoTokenizer

    fit = video_batch(BouncingBalls(64, 6, 16, 1, 1, seed=0), range(64))["video"]
    videos = video_batch(BouncingBalls(8, 6, 16, 1, 1, seed=1), range(8))["video"]
    tok = VideoTokenizer(IdentityAutoencoder(3), 4, 16)  # tokens of D = 4 * 4 * 3 = 48 values
    out = subspace_shape(tok, fit, videos, 2, [4, 48])
    assert out[48]["mse"] < 1e-10 and out[48]["area_ratio"] == [1.0] * 6  # the whole space: nothing lost
    assert out[4]["mse"] > 1e-3 and max(abs(a - 1) for a in out[4]["area_ratio"]) > 0.1  # 4 directions: a blur
    with pytest.raises(ValueError, match=r"ranks must be in \[1, D = 48\]"):
        subspace_shape(tok, fit, videos, 2, [49])
    with pytest.raises(ValueError, match="T a multiple of frames_per_clip=2"):
        subspace_shape(tok, fit, videos[:, :5], 2, [4])
