"""parallel=fsdp on CPU (2 gloo processes): the same parameters as one process, an exact resume from sharded
checkpoints (also from the previous one when the newest is damaged), and runs that load like any other."""

import json
import subprocess
import sys
import warnings

import pytest
import torch
from tiny import assert_same_params, cli

from minivgpt import checkpoint
from minivgpt.train import load_run, train

# grad_clip=0.1 binds at every step of this run (gradient norms ~0.5), so the clipping of sharded gradients
# is part of what is compared
ARGS = cli(steps=4, grad_clip=0.1)
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
TORCHRUN += ["-m", "minivgpt.train", "parallel=fsdp"]


def _run(cmd, cwd):
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def _single(tmp_path):
    single = tmp_path / "single"
    _run([sys.executable, "-m", "minivgpt.train", *ARGS, f"out={single}"], tmp_path)
    return single


def _records(out):
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "loss" in r]


@pytest.mark.slow
def test_fsdp_two_ranks_equal_single_process_and_load_run(tmp_path):
    """Two FSDP ranks, each accumulating two micro-batches of 1, against one process with batches of 4."""
    single, fsdp = _single(tmp_path), tmp_path / "fsdp"
    _run([*TORCHRUN, *ARGS, "grad_accum=2", f"out={fsdp}"], tmp_path)
    assert_same_params(single / "last.pt", fsdp / "last.pt", atol=1e-5)
    a, b = _records(single), _records(fsdp)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4]
    assert all(r["grad_norm"] > 0.1 for r in a), "the clipping must bind for this test to check it"
    for ra, rb in zip(a, b):  # the global gradient norm, reduced over the shards, and the loss
        assert abs(ra["grad_norm"] - rb["grad_norm"]) < 1e-5 and abs(ra["loss"] - rb["loss"]) < 1e-5
    # the run loads in one process like any other (full weights in last.pt; EMA by default)
    m1, tok1, _ = load_run(single)
    m2, tok2, cfg = load_run(fsdp)
    assert cfg.train.parallel == "fsdp" and tok2.channels == tok1.channels
    for (name, p1), p2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.allclose(p1, p2, rtol=0.0, atol=1e-5), name
    # the sharded checkpoint is committed: last.json names a complete folder, the same step as last.pt
    (folder, record), *_ = checkpoint.sharded_latest(fsdp / checkpoint.SHARDED)
    assert record["step"] == 4 and (folder / ".metadata").exists()


@pytest.mark.slow
def test_fsdp_resume_equals_uninterrupted_single_process(tmp_path):
    """An FSDP run stopped after 2 of 4 steps and resumed under FSDP ends where one uninterrupted process does;
    resuming it without FSDP is refused."""
    single, fsdp = _single(tmp_path), tmp_path / "fsdp"
    _run([*TORCHRUN, *ARGS, "stop_after=2", f"out={fsdp}"], tmp_path)
    assert torch.load(fsdp / "last.pt", weights_only=True)["step"] == 2
    _run([*TORCHRUN, *ARGS, "resume=true", f"out={fsdp}"], tmp_path)
    assert_same_params(single / "last.pt", fsdp / "last.pt", atol=1e-5)
    steps = [r["step"] for r in _records(fsdp)]
    assert steps == [1, 2, 3, 4], "metrics.jsonl has gaps or duplicates after the resume"
    with pytest.raises(ValueError, match="parallel: saved 'fsdp' != now 'ddp'"):
        train(dict(arg.split("=", 1) for arg in ARGS), out=str(fsdp), resume=True, steps=6)


@pytest.mark.slow
def test_fsdp_resume_falls_back_to_the_previous_checkpoint(tmp_path):
    """The newest sharded checkpoint loses a shard: the resume warns, loads the previous one (step 1) and still
    ends where one uninterrupted process does."""
    single, fsdp = _single(tmp_path), tmp_path / "fsdp"
    _run([*TORCHRUN, *ARGS, "stop_after=2", "ckpt_every=1", f"out={fsdp}"], tmp_path)
    (last, rec_last), (prev, rec_prev) = checkpoint.sharded_latest(fsdp / checkpoint.SHARDED)
    assert (rec_last["step"], rec_prev["step"]) == (2, 1)
    for shard in last.glob("*.distcp"):
        shard.unlink()
    proc = subprocess.run([*TORCHRUN, *ARGS, "resume=true", f"out={fsdp}"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "is unreadable" in proc.stderr
    assert_same_params(single / "last.pt", fsdp / "last.pt", atol=1e-5)


def test_commit_folder_keeps_last_and_previous(tmp_path):
    """Committing sharded folders: last.json names the newest, prev.json the one before, older ones go."""
    root = tmp_path / checkpoint.SHARDED
    for step in (1, 2, 2, 3):  # step 2 twice (a re-save after a fallback) gets a fresh name
        tmp = root / ".tmp"
        tmp.mkdir(parents=True)
        (tmp / "shard").write_text(str(step))
        checkpoint.commit_folder(tmp, {"step": step})
    found = checkpoint.sharded_latest(root)
    assert [(f.name, r["step"]) for f, r in found] == [("step_00000003", 3), ("step_00000002.1", 2)]
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["step_00000002.1", "step_00000003"]
    (root / "last.json").write_text("{not json")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert [f.name for f, _ in checkpoint.sharded_latest(root)] == ["step_00000002.1"]
    assert any("unreadable" in str(w.message) for w in caught)


def test_fsdp_needs_torchrun(tmp_path):
    with pytest.raises(ValueError, match="parallel=fsdp shards the model over torchrun processes"):
        train(dict(arg.split("=", 1) for arg in ARGS), out=str(tmp_path / "x"), parallel="fsdp")
