"""``python -m minivgpt.bench --json PATH``: training throughput, useful FLOP/s against the matmul peak
measured in the same process, the attention backends, and rollout with and without the KV cache.

All times are medians of repeated runs in one process; the figures to compare are the ratios inside one
run (this machine is shared and noisy). Output keys (DESIGN.md)::

    {"train": {"tokens_per_s", "useful_flops_per_s", "matmul_peak_flops_per_s", "mfu"},
     "attention": {"seq_len", "dense_ms", "mask_aware_ms", "flex_ms", "speedup"},
     "rollout": {"history_clips", "cache_s", "recompute_s", "speedup", "max_abs_diff"},
     "device": "..."}
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from .attention import attention_flops, benchmark_attention, sync_device
from .checkpoint import atomic_write
from .config import ModelConfig
from .diffusion import RectifiedFlow
from .model import VideoGPT
from .rollout import rollout


def _median_time(fn, repeats: int, device: torch.device, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    sync_device(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync_device(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_peak(device: torch.device, n: int = 1024, dtype: torch.dtype = torch.float32, repeats: int = 10) -> float:
    """Achieved FLOP/s of a square matmul (the reference 'peak' for this process and dtype)."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / _median_time(lambda: a @ b, repeats, device, warmup=3)


def train_flops(model: VideoGPT, K: int, F: int, N: int, batch: int, drop_last_clean: bool = True) -> float:
    """Useful FLOPs of one training step (forward + backward = 3x forward): 2 per multiply-add in every
    linear layer for every token, plus attention over the pairs the mask allows only."""
    L = 2 * K * F * N - (F * N if drop_last_clean else 0)
    cfg = model.cfg
    linear = sum(
        m.weight.numel()
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and "ada" not in name and "t_mlp" not in name
    )
    attn = attention_flops(K, F, N, cfg.width // cfg.heads, cfg.heads, drop_last_clean)["useful_flops"]
    return 3 * batch * (2 * linear * L + cfg.depth * attn)


def bench_train(
    device: torch.device,
    K: int = 8,
    F: int = 2,
    N: int = 64,
    width: int = 256,
    depth: int = 6,
    heads: int = 4,
    batch: int = 4,
    repeats: int = 3,
    attention: str = "auto",
) -> dict:
    cfg = ModelConfig(width=width, depth=depth, heads=heads, attention=attention)
    model = VideoGPT(cfg, in_dim=48, grid=(int(N**0.5), N // int(N**0.5))).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    flow = RectifiedFlow()
    x = torch.randn(batch, K, F, N, 48, device=device)
    g = torch.Generator().manual_seed(0)
    use_bf16 = device.type == "cuda"

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss = flow.loss(model, x, generator=g)
        loss.backward()
        opt.step()

    sec = _median_time(step, repeats, device)
    peak = matmul_peak(device, dtype=torch.bfloat16 if use_bf16 else torch.float32)
    useful = train_flops(model, K, F, N, batch) / sec
    tokens = batch * (2 * K * F * N - F * N)
    return {
        "tokens_per_s": tokens / sec,
        "useful_flops_per_s": useful,
        "matmul_peak_flops_per_s": peak,
        "mfu": useful / peak,
        "step_s": sec,
        "seq_len": 2 * K * F * N - F * N,
        "batch": batch,
        "width": width,
        "depth": depth,
    }


def bench_rollout(
    device: torch.device,
    history: int = 8,
    F: int = 2,
    N: int = 64,
    width: int = 256,
    depth: int = 6,
    steps: int = 20,
    new_clips: int = 1,
    repeats: int = 3,
) -> dict:
    """Rollout of ``new_clips`` clips after a ``history``-clip context, cache vs recompute (same seed).

    The window holds the whole history (no clip leaves it), so the cache is filled once and appended to.
    """
    torch.manual_seed(0)
    side = int(N**0.5)
    model = (
        VideoGPT(ModelConfig(width=width, depth=depth, heads=4), in_dim=48, grid=(side, N // side)).to(device).eval()
    )
    for name, p in model.named_parameters():  # non-zero adaLN/output weights so the comparison means something
        if "ada" in name or name.startswith("out."):
            torch.nn.init.normal_(p, std=0.02)
    ctx = torch.randn(1, history, F, N, 48, device=device)

    def run(use_cache):
        return rollout(
            model,
            ctx,
            new_clips,
            steps=steps,
            window=history + new_clips,
            use_cache=use_cache,
            generator=torch.Generator().manual_seed(0),
        )

    a, b = run(True), run(False)
    cache_s = _median_time(lambda: run(True), repeats, device)
    recompute_s = _median_time(lambda: run(False), repeats, device)
    return {
        "history_clips": history,
        "history_tokens": history * F * N,
        "new_clips": new_clips,
        "euler_steps": steps,
        "window": history + new_clips,
        "cache_s": cache_s,
        "recompute_s": recompute_s,
        "speedup": recompute_s / cache_s,
        "max_abs_diff": (a - b).abs().max().item(),
    }


def run_all(device: str = "auto", quick: bool = False) -> dict:
    dev = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    )
    name = (
        torch.cuda.get_device_name(dev)
        if dev.type == "cuda"
        else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    )
    kw = {"K": 2, "F": 2, "N": 16, "width": 64, "depth": 2, "repeats": 1} if quick else {}
    out = {"device": name, "torch": torch.__version__}
    out["train"] = bench_train(dev, **kw)
    att_kw = {"num_clips": 2, "F": 2, "N": 16, "repeats": 1} if quick else {}
    out["attention"] = benchmark_attention(device=dev, **att_kw)
    out["rollout"] = bench_rollout(
        dev, **({"history": 2, "steps": 2, "N": 16, "width": 64, "depth": 2, "repeats": 1} if quick else {})
    )
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--json", type=Path, help="write the results to this JSON file")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test, not a measurement)")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch intra-op threads (0: torch's default); on a "
        "shared, loaded CPU 1 thread avoids OpenMP stalls that distort small-op timings",
    )
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    res = run_all(args.device, args.quick)
    text = json.dumps(res, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(args.json, text)
    return res


if __name__ == "__main__":
    main()
