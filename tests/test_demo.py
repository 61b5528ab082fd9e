"""`make demo` end to end on a tiny budget: the report, the baselines, the pictures, the run-folder rules."""

import json

import pytest
from tiny import TINY

from minivgpt import demo

TINY_DEMO = {**TINY, "steps": 3, "max_balls": 1, "eval_videos": 4, "sample_steps": 2, "log_every": 1}


def _argv(**extra):
    return [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in {**TINY_DEMO, **extra}.items()]


def test_demo_reports_model_baselines_and_machine(tmp_path, capsys):
    report = demo.main(_argv(out=tmp_path / "d"))
    saved = json.loads((tmp_path / "d" / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(report))
    for row in ("model", "copy_last", "linear", "background", "constant_velocity", "constant_velocity_walls", "blank"):
        assert {"mse", "psnr", "ssim", "motion_iou"} <= set(saved[row])
    assert saved["precision"] in ("fp32", "bf16") and saved["cpu_capability"]
    assert saved["steps_done"] == 3 and saved["stopped_by_budget"] is False
    H = demo.EVAL["predict_clips"] * TINY["frames_per_clip"]
    assert saved["window"] == TINY["clips"] - 1 and saved["horizon_frames"] == H == 8
    # the forecast (temperature 0), a sample (temperature 1, the run's 20 steps) and the one-step mean
    assert saved["sampler"] == {"model": {"steps": 2, "temperature": 0.0},
                                "model_sample": {"steps": 20, "temperature": 1.0},
                                "model_mean": {"steps": 1, "temperature": 1.0}}
    assert len({saved[k]["mse"] for k in ("model", "model_sample", "model_mean")}) == 3
    for name in ("model", "model_sample", "model_mean", "constant_velocity", "constant_velocity_walls", "copy_last"):
        assert len(saved["per_frame_mse"][name]) == H
    for name in ("model", "model_sample", "model_mean", "constant_velocity"):
        assert len(saved["shape"][name]["area_ratio"]) == len(saved["shape"][name]["peak_ratio"]) == H
    F = TINY["frames_per_clip"]  # the true next clip redrawn from 1 % noise: the drawing floor, one value per frame
    assert len(saved["redrawn"]["area_ratio"]) == len(saved["redrawn"]["peak_ratio"]) == F
    tg = saved["targets"]
    assert tg["mse_vs_constant_velocity"] == pytest.approx(saved["model"]["mse"] / saved["constant_velocity"]["mse"])
    assert tg["mse_target_met"] == (tg["mse_vs_constant_velocity"] <= 0.8) and saved["balls"] == [1, 1]
    low, high = tg["mse_vs_constant_velocity_interval"]  # how far another held-out sample could move the ratio
    assert low <= high and low > 0
    walls = saved["mse_vs_constant_velocity_walls"]  # the stronger baseline, reported beside the targets
    assert walls == pytest.approx(saved["model"]["mse"] / saved["constant_velocity_walls"]["mse"])
    w_low, w_high = saved["mse_vs_constant_velocity_walls_interval"]
    assert 0 < w_low <= w_high
    for pic in ("rollout.png", "horizon.png"):
        assert (tmp_path / "d" / pic).stat().st_size > 0
    assert (tmp_path / "d" / "rollout.gif").exists()
    out = capsys.readouterr().out
    assert "constant_velocity" in out and "Trained 3 of 3 steps" in out and "targets: MSE / constant velocity" in out
    assert f"{low:.2f}-{high:.2f} in 90 % of resamples" in out
    assert "redraws the true next clip" in out
    assert f"MSE / constant velocity with walls = {walls:.3f} ({w_low:.2f}-{w_high:.2f})" in out


def test_demo_with_out_refuses_to_overwrite_a_run(tmp_path):
    demo.main(_argv(out=tmp_path / "d"))
    with pytest.raises(FileExistsError, match="overwrite=true"):
        demo.main(_argv(out=tmp_path / "d"))
    demo.main(_argv(out=tmp_path / "d", overwrite=True))


def test_demo_time_budget_is_printed_and_recorded(tmp_path, capsys):
    report = demo.main(_argv(out=tmp_path / "d", steps=10_000, minutes=1e-4))
    assert report["stopped_by_budget"] and report["steps_done"] < 10_000
    assert "stopped by the 0.0001-minute budget" in capsys.readouterr().out


def test_bad_evaluation_parameters_are_named_before_training(tmp_path):
    with pytest.raises(ValueError, match="temperature=-0.5 is out of range"):
        demo.main(_argv(out=tmp_path / "d", temperature=-0.5))
    with pytest.raises(ValueError, match="sample_steps='five' must be a int"):
        demo.main(_argv(out=tmp_path / "d", sample_steps="five"))
    assert not (tmp_path / "d").exists()  # nothing trained


def test_the_backbone_preset_is_make_pretrains_run_and_yields_to_given_keys():
    from minivgpt.config import from_params, parse_cli

    cli = "preset=backbone out=runs/pretrain overwrite=true".split()
    got = from_params(demo.demo_config(parse_cli(cli))).to_params()
    # the keys the Makefile spelled out before the preset existed
    spelled = ("max_balls=3 minutes=11 head=linear batch_size=16 steps=1500 width=128 mlp_ratio=4 head_hidden=0 "
               "out=runs/pretrain overwrite=true").split()
    assert got == from_params({**demo.DEFAULTS, **parse_cli(spelled)}).to_params()
    assert got != from_params(demo.demo_config({"out": "runs/pretrain"})).to_params()  # it is not the demo
    mine = from_params(demo.demo_config({"preset": "backbone", "width": "64", "out": "x"})).to_params()
    assert mine["width"] == 64 and mine["head"] == "linear"  # a key given beside the preset wins
    with pytest.raises(ValueError, match="preset='backbon' .*backbone"):
        demo.demo_config({"preset": "backbon"})
