import dataclasses
import importlib

import pytest

from minivgpt import config
from minivgpt.config import Config, from_params, parse_cli, parse_stages


def test_from_params_converts_strings():
    cfg = from_params(parse_cli(["steps=12", "lr=3e-4", "resume=true", "data=moving_glyphs", "width=64"]))
    assert cfg.train.steps == 12 and cfg.train.lr == 3e-4 and cfg.train.resume is True
    assert cfg.data.data == "moving_glyphs" and cfg.model.width == 64


def test_round_trip_params():
    cfg = from_params({"steps": 7, "heads": 2, "history_noise": 1.0})
    assert from_params(cfg.to_params()) == cfg


def test_unknown_key_names_closest():
    with pytest.raises(ValueError, match="unknown parameter 'bach_size'; did you mean 'batch_size'"):
        from_params({"bach_size": 8})
    with pytest.raises(ValueError, match="unknown parameter 'zzzz'; valid names"):
        from_params({"zzzz": 1})


def test_bad_values():
    with pytest.raises(ValueError, match="expected int"):
        from_params({"steps": "ten"})
    with pytest.raises(ValueError, match="boolean"):
        from_params({"resume": "maybe"})
    with pytest.raises(ValueError, match="divisible by heads"):
        from_params({"width": 100, "heads": 3})
    with pytest.raises(ValueError, match="t_location=-1.0 moves the logit-normal t: add t_sampling=logit_normal"):
        from_params({"t_location": -1.0})
    assert from_params({"t_location": -1.0, "t_sampling": "logit_normal"}).diffusion.t_location == -1.0
    with pytest.raises(ValueError, match="key=value"):
        parse_cli(["steps"])


def test_stages():
    assert parse_stages("", 4, 2, 100) == [(4, 2, 100)]
    assert parse_stages("1x1:500, 4x2:1000", 4, 2, 0) == [(1, 1, 500), (4, 2, 1000)]
    assert parse_stages("1x1:30,4x2:*", 4, 2, 100) == [(1, 1, 30), (4, 2, 70)]
    with pytest.raises(ValueError, match="expected KxF:steps"):
        parse_stages("4-2:10", 4, 2, 10)
    with pytest.raises(ValueError, match="only the last stage"):
        parse_stages("1x1:*,4x2:10", 4, 2, 10)


def test_defaults_are_valid():
    assert isinstance(from_params({}), Config)


@pytest.mark.parametrize(
    "key, value, valid",
    [
        ("clips", 0, ">= 1"),
        ("ema_decay", 2.0, r"\[0, 1\)"),
        ("cond_drop", 1.5, r"\[0, 1\]"),
        ("lr", -1.0, "> 0"),
        ("depth", 0, ">= 1"),
        ("heads", 0, ">= 1"),
        ("frames_per_clip", 0, ">= 1"),
        ("history_noise", 1.5, r"\[0, 1\]"),
        ("minutes", -1.0, ">= 0"),
        ("head_hidden", -1, ">= 0"),
    ],
)
def test_out_of_range_values_name_key_value_and_range(key, value, valid):
    with pytest.raises(ValueError, match=rf"parameter {key}={value!r} is out of range: must be {valid}"):
        from_params({key: value})


def test_bad_choices_and_contradictions():
    with pytest.raises(ValueError, match="parameter head='conv': choose one of linear, mlp"):
        from_params({"head": "conv"})
    with pytest.raises(ValueError, match="parameter amp='fp16': choose one of auto, bf16, off"):
        from_params({"amp": "fp16"})
    with pytest.raises(ValueError, match="device='gpu'"):
        from_params({"device": "gpu"})
    with pytest.raises(ValueError, match="resume=true and overwrite=true"):
        from_params({"resume": True, "overwrite": True})
    with pytest.raises(ValueError, match="min_balls=3 must be <= max_balls=1"):
        from_params({"min_balls": 3})


def test_field_notes_read_the_comments_and_their_continuations():
    notes = config.field_notes(config.TrainConfig)
    assert notes["batch_size"].startswith("global batch")
    assert notes["steps"] == ""  # no comment
    assert notes["minutes"].endswith("(not bitwise repeatable when it binds)")  # a note over three lines
    from minivgpt.simvp import SimVPConfig

    simvp = config.field_notes(SimVPConfig)
    assert simvp["predict"] == "frames out, all at once"  # not followed by the `# model` label below it
    assert set(simvp) == {f.name for f in dataclasses.fields(SimVPConfig)}


@pytest.mark.parametrize(
    "module, keys",
    [
        ("train", ["lr=0.001", "batch_size=16", "stages=", "resume=false"]),
        ("demo", ["width=96", "eval_videos=256", "preset=backbone sets:", "mlp_ratio=4.0"]),
        ("simvp", ["hid_t=128", "decoder=pixels"]),
        ("recipe", ["minutes=4.0", "seeds=0,1"]),
        ("bench", ["quick=false", "size=small"]),
        ("evaluate", ["context=10", "samples=1"]),
        ("prepare", ["frames=16", "out="]),
    ],
)
def test_every_command_has_help(module, keys, capsys):
    """``-h`` / ``--help`` prints the command's description and every key with its default, and exits 0
    before any work (the first argument would otherwise be rejected or taken as a run / source)."""
    main = importlib.import_module(f"minivgpt.{module}").main
    for flag in ("--help", "-h"):
        with pytest.raises(SystemExit) as stop:
            main([flag, "steps=oops"])
        assert stop.value.code == 0
        out = capsys.readouterr().out
        assert "Arguments are key=value; the defaults are shown." in out
        for key in keys:
            assert key in out, (module, key)


def test_parse_options_of_the_scripts(capsys):
    assert config.parse_options(["seed=3", "videos=10"], ("videos", "seed"), "doc") == {"seed": "3", "videos": "10"}
    with pytest.raises(ValueError, match="did you mean 'videos'"):
        config.parse_options(["vidoes=10"], ("videos", "seed"), "doc")
    with pytest.raises(ValueError, match="key=value"):
        config.parse_options(["10"], ("videos",), "doc")
    with pytest.raises(SystemExit) as stop:
        config.parse_options(["-h"], ("videos",), "  What it measures.\n\n    python scripts/x.py [videos=6000]\n")
    assert stop.value.code == 0 and capsys.readouterr().out.startswith("What it measures.")
