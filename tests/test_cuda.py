"""The CUDA paths, skipped without a GPU (CI has none; they run when a GPU machine is lent):
compiled FlexAttention against the dense mask (forward and backward, bf16), bf16 training with flex
against dense, the exact KV cache on the GPU, the GPU bench, and FSDP over NCCL with a sharded resume."""

import subprocess
import sys

import pytest
import torch
from tiny import cli

from minivgpt import bench
from minivgpt.attention import MaskedAttention
from minivgpt.config import ModelConfig
from minivgpt.diffusion import RectifiedFlow
from minivgpt.model import VideoGPT
from minivgpt.rollout import rollout

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("K,F,N,drop", [(4, 2, 64, True), (3, (1, 3, 2), 64, False)])
def test_compiled_flex_equals_dense_forward_and_backward(K, F, N, drop):
    L = MaskedAttention(K, F, N, drop).seq_len
    gen = torch.Generator().manual_seed(0)
    q, k, v, g = (torch.randn(2, 4, L, 64, generator=gen).cuda().to(torch.bfloat16) for _ in range(4))
    outs = {}
    for backend in ("dense", "flex"):
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        y = MaskedAttention(K, F, N, drop, backend=backend, device="cuda")(*leaves)
        y.backward(g)
        outs[backend] = [y.float(), *(t.grad.float() for t in leaves)]
    for name, a, b in zip(("out", "dq", "dk", "dv"), outs["dense"], outs["flex"]):
        assert (a - b).abs().max() <= 2e-2 * a.abs().max(), name  # bf16: agreement to its precision


def test_bf16_training_loss_is_the_same_with_flex_and_dense():
    x = torch.randn(2, 3, 2, 16, 12, generator=torch.Generator().manual_seed(0)).cuda()
    grads = {}
    for backend in ("dense", "flex"):
        torch.manual_seed(0)
        model = VideoGPT(ModelConfig(width=64, depth=2, heads=2, attention=backend), in_dim=12, grid=(4, 4)).cuda()
        for name, p in model.named_parameters():  # non-zero adaLN/output weights so every path matters
            if "ada" in name or name.startswith("out."):
                torch.nn.init.normal_(p, std=0.02)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = RectifiedFlow().loss(model, x, generator=torch.Generator().manual_seed(1))
        loss.backward()
        grads[backend] = (loss.item(), torch.cat([p.grad.flatten() for p in model.parameters()]))
    (la, ga), (lb, gb) = grads["dense"], grads["flex"]
    assert abs(la - lb) <= 1e-2 * abs(la)
    assert torch.nn.functional.cosine_similarity(ga, gb, dim=0) > 0.99


def test_kv_cache_equals_recompute_on_the_gpu():
    torch.manual_seed(0)
    model = VideoGPT(ModelConfig(width=64, depth=2, heads=2), in_dim=12, grid=(4, 4)).cuda().eval()
    for name, p in model.named_parameters():
        if "ada" in name or name.startswith("out."):
            torch.nn.init.normal_(p, std=0.05)
    ctx = torch.randn(2, 2, 2, 16, 12, generator=torch.Generator().manual_seed(0)).cuda()
    a, b = (rollout(model, ctx, 2, steps=3, window=3, use_cache=c, generator=torch.Generator().manual_seed(3))
            for c in (True, False))
    assert torch.equal(a[:, :2], ctx) and (a - b).abs().max() <= 1e-4


def test_gpu_bench_reports_bf16_mfu_and_flex():
    res = bench.run_all(device="cuda", quick=True, repeats=2, attention_clips="2", loader=False)
    assert res["train"]["dtype"] == "bfloat16" and 0 < res["train"]["mfu"] <= 1
    assert res["attention"]["flex_ms"] is not None and res["attention"]["dtype"] == "bfloat16"
    assert res["rollout"]["max_abs_diff"] <= 1e-3 and len(res["attention_sweep"]) == 1


@pytest.mark.slow
def test_fsdp_over_nccl_bf16_resume_is_exact(tmp_path):
    """One GPU: one NCCL rank, bf16 mixed precision, a run stopped at step 2 and resumed from its sharded
    checkpoint ends with the parameters of the uninterrupted run."""
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
           "-m", "minivgpt.train", "parallel=fsdp", "device=cuda", "attention=dense", *cli(steps=4, amp="auto")]
    for out, extra in (("whole", []), ("cut", ["stop_after=2"]), ("cut", ["resume=true"])):
        proc = subprocess.run([*run, f"out={tmp_path / out}", *extra], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
    a, b = (torch.load(tmp_path / name / "last.pt", weights_only=True) for name in ("whole", "cut"))
    assert a["step"] == b["step"] == 4 and a["config"]["amp"] == "auto"
    for name in a["model"]:
        assert torch.allclose(a["model"][name], b["model"][name], rtol=0, atol=1e-6), name
