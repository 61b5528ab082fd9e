import json

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
    with pytest.raises(NonFiniteLoss, match="loss is nan at step 2; stopped without saving"):
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
