"""torchrun on CPU (gloo): two processes end with the same parameters as one process (same global batch)."""

import subprocess
import sys

import pytest
import torch
from tiny import assert_same_params, cli

ARGS = cli(steps=4)
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
TORCHRUN += ["-m", "minivgpt.train"]


def _run(cmd, cwd):
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


@pytest.mark.slow
def test_ddp_two_ranks_equal_single_process(tmp_path):
    """Two ranks, each accumulating two micro-batches of 1, against one process with batches of 4."""
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    _run([sys.executable, "-m", "minivgpt.train", *ARGS, f"out={single}"], tmp_path)
    _run([*TORCHRUN, *ARGS, "grad_accum=2", f"out={ddp}"], tmp_path)
    assert_same_params(single / "last.pt", ddp / "last.pt", atol=1e-5)


@pytest.mark.slow
def test_ddp_resume_equals_uninterrupted_single_process(tmp_path):
    """A DDP run stopped after 2 of 4 steps and resumed under DDP ends where one uninterrupted process does."""
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    _run([sys.executable, "-m", "minivgpt.train", *ARGS, f"out={single}"], tmp_path)
    _run([*TORCHRUN, *ARGS, "stop_after=2", f"out={ddp}"], tmp_path)
    assert torch.load(ddp / "last.pt", weights_only=True)["step"] == 2
    _run([*TORCHRUN, *ARGS, "resume=true", f"out={ddp}"], tmp_path)
    assert_same_params(single / "last.pt", ddp / "last.pt", atol=1e-5)
