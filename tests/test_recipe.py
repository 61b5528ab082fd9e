"""The recipe table (minivgpt.recipe): every variant is a valid training config; a tiny table trains,
scores and re-scores; summaries and the dot plot."""

import json

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from minivgpt import demo, recipe, viz  # noqa: E402
from minivgpt.config import from_params  # noqa: E402


def test_every_variant_is_a_valid_config_that_differs_from_the_base():
    base = from_params({**recipe.BASE}).to_params()
    for name, keys in recipe.VARIANTS.items():
        params = from_params({**recipe.BASE, **keys}).to_params()
        changed = {k for k in params if params[k] != base[k]}
        assert changed == set(keys) or name == "pixel", name
    assert set(recipe.RECIPE) <= set(recipe.VARIANTS) and recipe.RECIPE[0] == "pixel"
    # the base is the demo's recipe with the linear head, batch 16 and the network the table was measured with
    measured_with = {"head": "linear", "head_hidden": 0, "batch_size": 16, "width": 128, "mlp_ratio": 4.0}
    assert {k for k in base if base[k] != from_params({**demo.DEFAULTS}).to_params()[k]} == set(measured_with)
    assert {**demo.DEFAULTS, **measured_with} == recipe.BASE
    narrow = {"batch_size": 8, "width": 96, "mlp_ratio": 2.0, "head_hidden": 384}  # the demo's since 2026-11-29
    assert {**recipe.BASE, **recipe.VARIANTS["mlp_head"], **narrow} == demo.DEFAULTS


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="did you mean 'variants'"):
        recipe.main(["variant=edm"])
    with pytest.raises(ValueError, match="unknown variant 'foo'"):
        recipe.main(["variants=pixel,foo"])
    with pytest.raises(ValueError, match="minutes"):
        recipe.main(["minutes=0"])


def test_summarize_mean_sd_and_missing_keys():
    rows = [{"variant": "a", "mse": 1.0, "ssim": 0.5}, {"variant": "a", "mse": 3.0},
            {"variant": "b", "mse": 2.0, "ssim": 0.7}]
    s = recipe.summarize(rows, keys=("mse", "ssim"))
    assert list(s) == ["a", "b"]
    assert s["a"]["mse"] == pytest.approx((2.0, 2**0.5, 2)) and s["a"]["ssim"] == (0.5, 0.0, 1)
    assert s["b"]["mse"] == (2.0, 0.0, 1)
    ax = viz.plot_recipe([{**r, "ratio": r["mse"]} for r in rows], key="ratio")
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]


def test_a_tiny_table_trains_scores_and_rescores(tmp_path, monkeypatch):
    tiny = {**demo.DEFAULTS, "width": 16, "depth": 1, "heads": 2, "batch_size": 4, "log_every": 1, "ckpt_every": 5,
            "warmup": 1, "num_samples": 16}
    monkeypatch.setattr(demo, "DEFAULTS", tiny)
    monkeypatch.setattr(recipe, "BASE", {**tiny, "head": "linear"})
    monkeypatch.setattr(demo, "EVAL", {**demo.EVAL, "eval_videos": 4, "sample_steps": 2})
    monkeypatch.setattr(recipe, "EVAL_VIDEOS", 4)  # the table's own held-out count (64), apart from the demo's
    out = tmp_path / "table"
    rows = recipe.main(["minutes=0.03", "seeds=0", "variants=pixel,edm", f"out={out}", "euler=1"])
    assert [(r["variant"], r["sample_steps"], r["temperature"]) for r in rows] == [
        ("pixel", 2, 0.0), ("pixel_sample", 20, 1.0), ("euler1", 1, 1.0), ("edm", 2, 0.0), ("edm_sample", 20, 1.0)]
    saved = json.loads((out / "table.json").read_text())
    assert saved["rows"] == rows and saved["cpu_capability"] and saved["minutes"] == 0.03
    assert rows[3]["params"] == {"precond": "edm"} and all(r["steps"] >= 1 and r["mse"] > 0 for r in rows)
    assert rows[0]["mse"] != rows[1]["mse"]  # the forecast (temperature 0) and the sample differ
    # re-scoring the pixel run with another step count keeps every other row and the training figures
    again = recipe.main(["seeds=0", "variants=pixel", f"out={out}", "euler=3,20", "score_only=true", "threads=2"])
    assert sorted((r["variant"], r["sample_steps"]) for r in again) == [
        ("edm", 2), ("edm_sample", 20), ("euler1", 1), ("euler20", 20), ("euler3", 3), ("pixel", 2),
        ("pixel_sample", 20)]
    by = {r["variant"]: r for r in again}  # an Euler row at the sample's step count is that sample, to the bit
    for key in ("mse", "ssim", "area_ratio", "peak_ratio"):
        assert by["euler20"][key] == by["pixel_sample"][key]
    pixel = [r for r in again if r["variant"] == "pixel"][0]
    assert pixel["steps"] == rows[0]["steps"] and pixel["mse"] == pytest.approx(rows[0]["mse"])
    saved = json.loads((out / "table.json").read_text())
    assert saved["minutes"] == 0.03 and saved["threads"] == 1  # the training's, not the re-scoring's threads=2


def test_readings_split_forecasts_from_samples():
    rows = [{"variant": "pixel", "x": 1}, {"variant": "pixel_sample", "x": 2}, {"variant": "euler1", "x": 3},
            {"variant": "edm", "x": 4}, {"variant": "edm_sample", "x": 5}]
    forecasts, samples = recipe.readings(rows)
    assert [(r["variant"], r["x"]) for r in forecasts] == [("pixel", 1), ("edm", 4)]
    assert [(r["variant"], r["x"]) for r in samples] == [("pixel", 2), ("edm", 5)]
