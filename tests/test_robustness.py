"""Kill a training process with SIGKILL mid-run, resume, and end with the parameters of an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from tiny import assert_same_params, cli

ARGS = cli(ckpt_every=1)
STEPS = 40


def _train(out, *extra):
    return [sys.executable, "-m", "minivgpt.train", *ARGS, f"steps={STEPS}", f"out={out}", *extra]


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    proc = subprocess.Popen(_train(killed), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline:  # wait until a few checkpoints exist, then kill without warning
        if (killed / "prev.pt").exists() and proc.poll() is None:
            time.sleep(0.5)
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed; raise STEPS"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    step_at_kill = torch.load(killed / "prev.pt", weights_only=True)["step"]
    assert step_at_kill < STEPS
    subprocess.run(_train(killed, "resume=true"), check=True, capture_output=True, timeout=600)
    subprocess.run(_train(ref), check=True, capture_output=True, timeout=600)
    a = torch.load(ref / "last.pt", weights_only=True)
    b = torch.load(killed / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == STEPS
    assert_same_params(ref / "last.pt", killed / "last.pt")  # bit for bit
    steps = [
        int(line.split('"step": ')[1].split(",")[0]) for line in (killed / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == list(range(1, STEPS + 1)), "metrics.jsonl has gaps or duplicates after the resume"
