"""Check the CUDA paths on a GPU machine (not part of the test suite; CI has no GPU).

    python scripts/gpu_check.py [--out DIR]

1. FlexAttention (compiled) against dense SDPA inside the model: forward and gradients, fp32.
2. A short bf16-autocast training run through ``minivgpt.train`` (loss finite and falling).
3. The KV-cache rollout against recomputation on the GPU.
4. ``minivgpt.bench`` on the GPU (JSON written to OUT/bench_gpu.json).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from minivgpt.bench import run_all
from minivgpt.checkpoint import atomic_write
from minivgpt.config import ModelConfig
from minivgpt.model import VideoGPT
from minivgpt.rollout import rollout
from minivgpt.train import train


def check_flex(device) -> dict:
    torch.manual_seed(0)
    ref = VideoGPT(ModelConfig(width=128, depth=2, heads=4, attention="dense"), 48, (8, 8)).to(device)
    for name, p in ref.named_parameters():
        if "ada" in name or name.startswith("out."):
            torch.nn.init.normal_(p, std=0.02)
    flex = VideoGPT(ModelConfig(width=128, depth=2, heads=4, attention="flex"), 48, (8, 8)).to(device)
    flex.load_state_dict(ref.state_dict())
    x = torch.randn(2, 4, 2, 64, 48, device=device)
    n, t = torch.randn_like(x), torch.rand(2, 4, device=device)
    a, b = ref(n, x, t), flex(n, x, t)
    a.square().mean().backward()
    b.square().mean().backward()
    grad_diff = max((p.grad - q.grad).abs().max().item() for p, q in zip(ref.parameters(), flex.parameters()))
    return {"forward_max_abs_diff": (a - b).abs().max().item(), "grad_max_abs_diff": grad_diff}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("runs/gpu_check"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    assert torch.cuda.is_available(), "no CUDA device"
    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    res = {"device": torch.cuda.get_device_name(dev), "torch": torch.__version__, "flex": check_flex(dev)}
    print(json.dumps(res, indent=2), flush=True)
    t0 = time.perf_counter()
    run = train(steps=300, batch_size=32, image_size=32, patch_size=8, width=128, depth=4, heads=4,
                clips=4, frames_per_clip=2, device="cuda", amp="bf16", out=str(args.out / "train"), progress=False,
                log_every=50)
    res["train_bf16"] = {"wall_s": time.perf_counter() - t0, "first_loss": run.records[0]["loss"],
                         "last_loss": run.records[-1]["loss"], "tokens_per_s": run.records[-1]["tokens_per_s"]}
    print(json.dumps(res["train_bf16"]), flush=True)
    ctx = torch.randn(2, 3, 2, 16, 192, device=dev)
    a = rollout(run.ema, ctx, 4, steps=8, window=4, use_cache=True, generator=torch.Generator().manual_seed(0))
    b = rollout(run.ema, ctx, 4, steps=8, window=4, use_cache=False, generator=torch.Generator().manual_seed(0))
    res["rollout_cache_vs_recompute_max_abs_diff"] = (a - b).abs().max().item()
    res["bench"] = run_all("cuda")
    text = json.dumps(res, indent=2)
    print(text)
    atomic_write(args.out / "bench_gpu.json", text)


if __name__ == "__main__":
    main()
