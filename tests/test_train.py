import json
import warnings

import pytest
import torch
from tiny import TINY as _BASE

from minivgpt import checkpoint
from minivgpt.config import from_params
from minivgpt.train import NonFiniteLoss, load_run, lr_at, stage_at, train

TINY = {**_BASE, "ema_decay": 0.9}


def params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_resume_equals_uninterrupted(tmp_path):
    full = train(TINY, steps=6, out=str(tmp_path / "full"))
    train(TINY, steps=6, ckpt_every=3, out=str(tmp_path / "half"), stop_after=3)
    res = train(TINY, steps=6, out=str(tmp_path / "half"), resume=True)
    assert torch.equal(params(full.model), params(res.model))
    assert torch.equal(params(full.ema), params(res.ema))
    steps = [json.loads(line)["step"] for line in (tmp_path / "half" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))


def test_checkpoint_contract_and_load_run(tmp_path):
    train(TINY, steps=2, out=str(tmp_path))
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert {"model", "step", "config", "ema", "optimizer"} <= set(ckpt) and ckpt["step"] == 2
    model, tok, cfg = load_run(tmp_path)
    assert cfg.train.steps == 2 and tok.grid == (2, 2)


def test_truncated_checkpoint_falls_back_to_previous(tmp_path):
    train(TINY, steps=4, ckpt_every=2, out=str(tmp_path))
    assert (tmp_path / "prev.pt").exists()
    data = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "last.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(checkpoint.CheckpointError, match="last.pt is unreadable or truncated"):
        checkpoint.load(tmp_path / "last.pt")
    with pytest.warns(UserWarning, match="falling back to the previous good checkpoint"):
        ckpt = checkpoint.load_latest(tmp_path)
    assert ckpt["step"] == 2


def test_nan_loss_stops_with_step(tmp_path, monkeypatch):
    from minivgpt.diffusion import RectifiedFlow

    real, calls = RectifiedFlow.loss, []

    def poisoned(self, *a, **kw):
        calls.append(1)
        loss = real(self, *a, **kw)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(RectifiedFlow, "loss", poisoned)
    with pytest.raises(NonFiniteLoss, match="loss is nan at step 2; stopped before updating the weights"):
        train(TINY, steps=5, ckpt_every=1, out=str(tmp_path))
    assert checkpoint.load(tmp_path / "last.pt")["step"] == 2  # the last good checkpoint is intact


def test_progressive_stages_and_schedule():
    stages = [(1, 1, 3), (2, 2, 5)]
    assert [stage_at(s, stages) for s in (0, 2, 3, 7, 9)] == [(0, 1, 1), (0, 1, 1), (1, 2, 2), (1, 2, 2), (1, 2, 2)]
    cfg = from_params({"lr": 1.0, "warmup": 10, "steps": 110, "min_lr_ratio": 0.1})
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(10, cfg) == pytest.approx(1.0)
    assert lr_at(110, cfg) == pytest.approx(0.1)


def test_staged_training_runs(tmp_path):
    res = train(TINY, steps=4, stages="1x1:2,2x2:2", out=str(tmp_path))
    assert [(r["clips"], r["frames_per_clip"]) for r in res.records] == [(1, 1), (1, 1), (2, 2), (2, 2)]


def test_load_run_ignores_config_keys_an_older_version_wrote(tmp_path):
    train(TINY, steps=1, out=str(tmp_path))
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    ckpt["config"]["retired_key"] = 3
    torch.save(ckpt, tmp_path / "last.pt")
    with pytest.warns(UserWarning, match=r"no longer has: \['retired_key'\]"):
        model, _, cfg = load_run(tmp_path)
    assert cfg.train.steps == 1


class _NaNGrad(torch.autograd.Function):
    """Identity forward (a finite loss), NaN backward: the case a loss-only check misses."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return torch.full_like(g, float("nan"))


def test_nan_gradient_with_finite_loss_is_never_saved(tmp_path, monkeypatch):
    from minivgpt.diffusion import RectifiedFlow

    real, calls = RectifiedFlow.loss, []

    def poisoned(self, *a, **kw):
        calls.append(1)
        loss = real(self, *a, **kw)
        return _NaNGrad.apply(loss) if len(calls) == 3 else loss

    monkeypatch.setattr(RectifiedFlow, "loss", poisoned)
    with pytest.raises(NonFiniteLoss, match="gradient norm is nan at step 2"):
        train(TINY, steps=5, ckpt_every=1, out=str(tmp_path))
    ckpt = checkpoint.load(tmp_path / "last.pt")
    assert ckpt["step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_fresh_run_refuses_to_overwrite_a_run(tmp_path):
    train(TINY, steps=2, out=str(tmp_path))
    before = (tmp_path / "metrics.jsonl").read_text()
    with pytest.raises(FileExistsError, match=r"already holds a run.*resume=true.*overwrite=true"):
        train(TINY, steps=2, out=str(tmp_path))
    assert (tmp_path / "metrics.jsonl").read_text() == before  # nothing was touched
    res = train(TINY, steps=3, out=str(tmp_path), overwrite=True)
    assert [r["step"] for r in res.records] == [1, 2, 3]


def test_resume_without_checkpoint_warns(tmp_path):
    with pytest.warns(UserWarning, match=r"resume=true but .*typo_dir holds no checkpoint"):
        res = train(TINY, steps=1, out=str(tmp_path / "typo_dir"), resume=True)
    assert res.records[0]["step"] == 1


def test_single_clip_training_warns_that_it_cannot_forecast(tmp_path):
    with pytest.warns(UserWarning, match=r"every stage trains on single clips \(stages=1x2:2\)"):
        train(TINY, steps=2, stages="1x2:2", out=str(tmp_path / "a"))
    with pytest.warns(UserWarning, match=r"single clips \(clips=1\)"):
        train(TINY, steps=1, clips=1, out=str(tmp_path / "b"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a schedule that ends on longer videos is not warned
        train(TINY, steps=2, stages="1x2:1,2x2:1", out=str(tmp_path / "c"))


def test_resume_refuses_a_different_config(tmp_path):
    train(TINY, steps=4, out=str(tmp_path), stop_after=2)
    with pytest.raises(ValueError, match=r"config differs in .*lr: saved 0.001 != now 0.002.*seed: saved 0 != now 1"):
        train(TINY, steps=4, out=str(tmp_path), resume=True, lr=2e-3, seed=1)
    res = train(TINY, steps=5, out=str(tmp_path), resume=True, log_every=5, threads=1)  # allowed changes
    assert res.records[-1]["step"] == 5


def test_time_budget_stops_saves_and_records(tmp_path):
    res = train(TINY, steps=10_000, out=str(tmp_path), minutes=1e-4, ckpt_every=10_000)
    assert res.stopped_by_budget
    done = checkpoint.load(tmp_path / "last.pt")["step"]
    assert 1 <= done < 10_000
    assert res.records[-1] == {"step": done, "stopped_by_budget_minutes": 1e-4}


def test_amp_auto_uses_fp32_where_bf16_measures_slower(tmp_path, monkeypatch):
    from minivgpt import hardware

    monkeypatch.setattr(hardware, "cpu_bf16_speedup", lambda *a, **k: 0.05)  # an AVX2-only CPU
    assert train(TINY, steps=1, out=str(tmp_path / "a"), amp="auto").precision == "fp32"
    with pytest.warns(UserWarning, match="amp=bf16 is 20.0x slower than fp32"):
        assert train(TINY, steps=1, out=str(tmp_path / "b"), amp="bf16").precision == "bf16"
    monkeypatch.setattr(hardware, "cpu_bf16_speedup", lambda *a, **k: 2.0)  # a CPU with bf16 units
    assert train(TINY, steps=1, out=str(tmp_path / "c"), amp="auto").precision == "bf16"


def test_cpu_bf16_speedup_is_measured_and_cached():
    from minivgpt.hardware import cpu_bf16_speedup

    first = cpu_bf16_speedup(1)
    assert 0 < first < 100 and cpu_bf16_speedup(1) == first


def test_device_cuda_without_gpu_is_a_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="device='cuda', but this machine has no usable CUDA GPU"):
        train(TINY, steps=1, out=str(tmp_path), device="cuda")


def test_schedule_step_follows_steps_or_the_clock_whichever_is_further():
    """The one rule of train and simvp under minutes=: no budget -> the step; a budget -> the step or the share
    of the time spent, times the steps, whichever is larger (capped at the last step)."""
    from minivgpt.optim import schedule_step

    assert schedule_step(10, 100, elapsed_s=999.0) == 10  # no budget
    assert schedule_step(10, 100, elapsed_s=30.0, budget_s=60.0) == 50  # half the time spent
    assert schedule_step(80, 100, elapsed_s=30.0, budget_s=60.0) == 80  # the steps are further along
    assert schedule_step(10, 100, elapsed_s=120.0, budget_s=60.0) == 100  # past the budget: fully annealed


def test_batches_drawn_ahead_are_the_batches_drawn_in_step():
    """train.Batches: drawn one step ahead on a thread, the batches and their order are those of the plain loop;
    a step asked out of order is still its own batch, and a draw's error reaches the caller."""
    from minivgpt.train import Batches

    calls = []

    def draw(step):
        calls.append(step)
        if step == 7:
            raise ValueError("step 7 cannot be drawn")
        return torch.full((2,), float(step))

    ahead = Batches(draw, last=5, ahead=True)
    got = [ahead(s)[0].item() for s in (0, 1, 2, 4, 3)]
    ahead.close()
    assert got == [0, 1, 2, 4, 3]
    assert 5 not in calls  # nothing is drawn past `last`
    with pytest.raises(ValueError, match="step 7"):
        Batches(draw, last=10, ahead=True)(7)
    plain = Batches(draw, last=5, ahead=False)
    assert [plain(s)[0].item() for s in range(3)] == [0, 1, 2]


def test_prefetch_trains_the_same_run(tmp_path):
    """prefetch=on (the next step's batch drawn on a thread; auto turns it on for CUDA) trains bit for bit the run
    of prefetch=off, through a progressive schedule with a random-cut stage, and a budget-free stop_after."""
    from tiny import assert_same_params

    kw = dict(TINY, steps=6, stages="2x2:2,6/1-3:*", ckpt_every=100)
    off = train(kw, prefetch="off", out=str(tmp_path / "off"))
    on = train(kw, prefetch="on", out=str(tmp_path / "on"))
    assert_same_params(tmp_path / "off" / "last.pt", tmp_path / "on" / "last.pt")
    assert [r["loss"] for r in off.records] == [r["loss"] for r in on.records]
    train(kw, prefetch="on", stop_after=3, out=str(tmp_path / "part"))
    part = train(kw, prefetch="on", resume=True, out=str(tmp_path / "part"))
    assert torch.equal(params(part.model), params(on.model))
    with pytest.raises(ValueError, match="prefetch='yes'.*auto, on, off"):
        train(kw, prefetch="yes", out=str(tmp_path / "bad"))
