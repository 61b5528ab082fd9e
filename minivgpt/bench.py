"""``python -m minivgpt.bench [key=value ...]``: the measurements, kept apart from the computation.

Derived in notebooks/03 (§6 density and compute, §7 timing). Training throughput and MFU, the attention
backends (idle and beside a competing busy process), and rollout with and without the KV cache. The loader
row (prepared shards against decoding a video folder, against what training consumes): notebooks/08.

Every figure goes through one timer (:func:`timer`: CUDA events after a synchronise on a GPU, the host
clock on CPU) and one interleaving loop (:func:`measure`: every round calls each contender once, so
background load hits them alike). Times are medians over rounds, with their spread; the figures to
compare are the ratios inside one run (a shared machine is noisy).

MFU is a ratio of two measurements made side by side: the useful FLOPs of a training step
(:func:`train_flops`) over its median time, against the median of a matmul "peak" timed with the
model's own linear shapes ``(tokens, width) @ (width, out)`` (and the two products of their backward)
in the training dtype, one peak round before every step round.

Parameters (``key=value``, unknown names rejected)::

    device=auto threads=0 quick=false size=small json=PATH repeats=5 clips=8 frames_per_clip=2 tokens_per_frame=64
    width=256 depth=6 heads=4 batch_size=4 sample_steps=20 compile=false attention_clips= contended=true
    loader=true video_folder=DIR

``size=large`` is the GPU bench at a realistic size (:data:`LARGE`): width 768, depth 12, 12 heads, training
sequences of L = 3,840 tokens (8 clips x 4 frames x 64 patches, the last clean clip dropped), batch 8,
bf16 autocast, the model compiled, FlexAttention compiled, and the attention rows at L = 4,096 and 8,192
(``attention_clips=8,16``). Explicit keys still win over a preset.

Output keys::

    {"train": {"tokens_per_s", "useful_flops_per_s", "matmul_peak_flops_per_s", "mfu", "step_s", "spread"...},
     "attention": {"seq_len", "dense_ms", "mask_aware_ms", "flex_ms", "speedup", "flex_speedup",
                   "computed_over_allowed", "contended": {... the same timings beside a busy process ...}},
     "attention_sweep": [{... the same row at each K of attention_clips ...}],
     "rollout": {"history_clips", "cache_s", "recompute_s", "speedup", "max_abs_diff"},
     "loader": {"shards_samples_per_s", "decode_samples_per_s", "train_samples_per_s", "shards_over_train",
                "shards_over_decode", "prepare_s", ...},
     "device": "...", "cpu_capability": "..."}
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .attention import MaskedAttention
from .checkpoint import atomic_write
from .config import AT_LEAST_1, ModelConfig, check_ranges, cli_help, dataclass_from_params, exit_on_help, parse_cli
from .diffusion import RectifiedFlow
from .hardware import resolve_device, set_threads
from .model import VideoGPT, attention_backend
from .rollout import rollout


# ------------------------------------------------------------------------------------------ the timer
def sync_device(device: torch.device) -> None:
    """Wait for queued CUDA work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timer(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds taken by one call of ``fn`` on ``device``: the one timer of every benchmark.

    On CUDA: a synchronise (nothing earlier is counted), then CUDA events around the call, read after the
    end event completes: the GPU's own clock, so the host's launch time is not mistaken for the work.
    On CPU: the host clock around the call.
    """
    if device.type == "cuda":
        sync_device(device)
        with torch.cuda.device(device):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(
    fns: dict[str, Callable[[], Any]], repeats: int, device: torch.device, warmup: int = 1
) -> dict[str, list[float]]:
    """Interleaved timing: each of ``warmup + repeats`` rounds calls every function once, in order.

    Returns the seconds of the last ``repeats`` rounds per name. Interleaving makes background load (a
    shared machine) and clock changes affect all contenders alike.
    """
    if repeats < 1:
        raise ValueError(f"repeats={repeats} must be >= 1")
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(warmup + repeats):
        for name, fn in fns.items():
            dt = timer(fn, device)
            if r >= warmup:
                times[name].append(dt)
    return times


def spread(xs: list[float]) -> dict[str, float]:
    """Median, quartiles (q1, q3) and extremes of repeated measurements."""
    q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1 else (xs[0],) * 3
    return {"median": statistics.median(xs), "q1": q1, "q3": q3, "min": min(xs), "max": max(xs), "n": len(xs)}


# ------------------------------------------------------------------------------------------ FLOPs
def attention_flops(
    num_clips: int, F: int, N: int, head_dim: int, heads: int, drop_last_clean: bool = False
) -> dict:
    """Forward attention FLOPs of one sequence: useful (allowed pairs), mask-aware and dense (all L^2 pairs).

    FLOPs = 2 matmuls (QK^T and PV) x 2 FLOPs per multiply-add x pairs x head_dim x heads; softmax and
    the backward (about 2x the forward) are not counted. ``mask_aware_pairs`` are the pairs the fused
    mask-aware path computes: the allowed ones plus the masked-out (later-frame) pairs inside each clean
    clip's frame-causal diagonal block, which its kernel computes and then masks. Returns ``{"seq_len",
    "allowed_pairs", "mask_aware_pairs", "dense_pairs", "density", "useful_flops", "mask_aware_flops",
    "dense_flops"}``.
    """
    S = F * N
    pairs = masked_in_diagonal = 0
    for k in range(num_clips):
        pairs += S * (k * S + S)  # noisy clip k: clean history + its own noisy copy
        if not (drop_last_clean and k == num_clips - 1):
            causal = N * N * F * (F + 1) // 2
            pairs += S * k * S + causal  # clean clip k: clean history + frame-causal self
            masked_in_diagonal += S * S - causal
    L = 2 * num_clips * S - (S if drop_last_clean else 0)
    per_pair = 2 * 2 * head_dim * heads
    computed = pairs + masked_in_diagonal
    return {
        "seq_len": L,
        "allowed_pairs": pairs,
        "mask_aware_pairs": computed,
        "dense_pairs": L * L,
        "density": pairs / (L * L),
        "useful_flops": pairs * per_pair,
        "mask_aware_flops": computed * per_pair,
        "dense_flops": L * L * per_pair,
    }


def linear_shapes(
    model: VideoGPT, K: int, F: int, N: int, batch: int, drop_last_clean: bool = True
) -> list[tuple[int, int, int]]:
    """``(tokens, in, out)`` of every per-token linear layer in one training forward of ``model``.

    The input projection and every block's qkv, proj and MLP layers see all L = 2*K*F*N (- F*N) tokens of
    each of ``batch`` sequences; the output head sees the K*F*N noisy tokens only. The conditioning layers
    (``t_mlp``, ``ada``, ``ada_out``) act on one row per segment, not per token, and are left out (well
    under 1% of the work at the bench size).
    """
    L = 2 * K * F * N - (F * N if drop_last_clean else 0)
    shapes = []
    for name, m in model.named_modules():
        if not isinstance(m, torch.nn.Linear) or name.startswith("t_mlp") or "ada" in name.split(".")[-1]:
            continue
        tokens = K * F * N if name == "out" else L
        shapes.append((batch * tokens, m.in_features, m.out_features))
    return shapes


def train_flops(model: VideoGPT, K: int, F: int, N: int, batch: int, drop_last_clean: bool = True) -> float:
    """Useful FLOPs of one training step: forward + backward = 3x the forward of the per-token linear
    layers (:func:`linear_shapes`, 2 FLOPs per multiply-add) and of attention over the allowed pairs only."""
    linear = sum(2 * t * i * o for t, i, o in linear_shapes(model, K, F, N, batch, drop_last_clean))
    cfg = model.cfg
    attn = attention_flops(K, F, N, cfg.width // cfg.heads, cfg.heads, drop_last_clean)["useful_flops"]
    return 3 * (linear + batch * cfg.depth * attn)


def matmul_workload(
    shapes: list[tuple[int, int, int]], device: torch.device, dtype: torch.dtype, seed: int = 0
) -> tuple[Callable[[], None], float]:
    """A function that runs the matmuls of a training step's linear layers once, and their FLOPs.

    For every ``(tokens, in, out)`` in ``shapes``: the forward ``(tokens, in) @ (in, out)`` and the two
    products of its backward, ``(tokens, out) @ (out, in)`` (input gradient) and ``(in, tokens) @
    (tokens, out)`` (weight gradient), as autograd issues them for ``nn.Linear``. Timed beside the
    training step, it gives the matmul throughput this machine reaches right now on the model's own
    shapes and dtype: the denominator of MFU.
    """
    g = torch.Generator().manual_seed(seed)
    operands = {}
    for t, i, o in set(shapes):
        a, b, c = (torch.randn(*shape, generator=g) for shape in ((t, i), (i, o), (t, o)))
        operands[(t, i, o)] = tuple(x.to(device, dtype) for x in (a, b, c))
    flops = float(sum(3 * 2 * t * i * o for t, i, o in shapes))

    def run() -> None:
        for s in shapes:
            a, b, c = operands[s]
            a @ b
            c @ b.T
            a.T @ c

    return run, flops


# ------------------------------------------------------------------------------------------ benchmarks
def bench_train(
    device: torch.device,
    K: int = 8,
    F: int = 2,
    N: int = 64,
    width: int = 256,
    depth: int = 6,
    heads: int = 4,
    batch: int = 4,
    repeats: int = 5,
    attention: str = "auto",
    compile: bool = False,
) -> dict:
    """Training step time and MFU: peak and step rounds interleaved (peak, step, peak, step, ...).

    bf16 autocast on CUDA (and a bf16 peak), fp32 on CPU; ``compile``: the model under ``torch.compile``
    (compiled in the warm-up round, not timed). Returns the medians and their spreads.
    """
    cfg = ModelConfig(width=width, depth=depth, heads=heads, attention=attention)
    torch.manual_seed(0)
    side = int(N**0.5)
    model = VideoGPT(cfg, in_dim=48, grid=(side, N // side)).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    net = torch.compile(model) if compile else model
    flow = RectifiedFlow()
    x = torch.randn(batch, K, F, N, 48, generator=torch.Generator().manual_seed(0)).to(device)
    g = torch.Generator().manual_seed(0)
    use_bf16 = device.type == "cuda"

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss = flow.loss(net, x, generator=g)
        loss.backward()
        opt.step()

    compile_error = None
    if compile:  # compile in an untimed step; a failure is reported and the eager model timed instead
        try:
            step()
        except Exception as e:  # noqa: BLE001
            compile_error, net = f"{type(e).__name__}: {str(e)[:300]}", model
    shapes = linear_shapes(model, K, F, N, batch)
    peak_fn, peak_flops = matmul_workload(shapes, device, torch.bfloat16 if use_bf16 else torch.float32)
    times = measure({"peak": peak_fn, "step": step}, repeats, device)
    step_s = spread(times["step"])
    peak = spread([peak_flops / t for t in times["peak"]])
    useful = train_flops(model, K, F, N, batch)
    L = 2 * K * F * N - F * N
    return {
        "tokens_per_s": batch * L / step_s["median"],
        "useful_flops_per_s": useful / step_s["median"],
        "matmul_peak_flops_per_s": peak["median"],
        "mfu": useful / step_s["median"] / peak["median"],
        "step_s": step_s["median"],
        "step_s_spread": step_s,
        "matmul_peak_spread": peak,
        "useful_flops_per_step": useful,
        "matmul_shapes": sorted(set(shapes)),
        "dtype": "bfloat16" if use_bf16 else "float32",
        "seq_len": L,
        "batch": batch,
        "width": width,
        "depth": depth,
        "heads": heads,
        "compiled": compile and compile_error is None,
        "compile_error": compile_error,
        "attention": attention_backend(attention, device),
    }


def benchmark_attention(
    num_clips: int = 8,
    F: int = 2,
    N: int = 64,
    heads: int = 4,
    head_dim: int = 64,
    batch: int = 1,
    repeats: int = 5,
    backward: bool = True,
    device: str | torch.device = "cpu",
) -> dict:
    """Milliseconds of one attention call per backend (median of interleaved rounds after two warm-ups),
    in bf16 on CUDA and fp32 on CPU.

    ``dense`` and ``mask_aware`` are timed forward + backward when ``backward`` (else forward under
    no_grad); ``flex`` is forward-only on CPU (it has no CPU backward) and ``None`` if it fails. Returns
    ``{"seq_len", "dense_ms", "mask_aware_ms", "flex_ms", "speedup", "computed_over_allowed", "spread_ms"}``
    with speedup = dense / mask_aware and computed_over_allowed the pairs the mask-aware path computes
    per allowed pair (:func:`attention_flops`).
    """
    device = torch.device(device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # each device's training dtype
    gen = torch.Generator(device="cpu").manual_seed(0)
    L = 2 * num_clips * F * N
    shape = (batch, heads, L, head_dim)
    q, k, v, g = (torch.randn(shape, generator=gen).to(device, dtype) for _ in range(4))
    for t in (q, k, v):
        t.requires_grad_(backward)

    def call(att: MaskedAttention, bwd: bool) -> Callable[[], None]:
        def run() -> None:
            if bwd:
                for t in (q, k, v):
                    t.grad = None
                att(q, k, v).backward(g)
            else:
                with torch.no_grad():
                    att(q, k, v)

        return run

    fns = {
        name: call(MaskedAttention(num_clips, F, N, backend=name, device=device), backward)
        for name in ("dense", "mask_aware")
    }
    try:  # FlexAttention may be unavailable here: report None
        flex = call(MaskedAttention(num_clips, F, N, backend="flex", device=device), backward and device.type == "cuda")
        flex()  # also compiles it on CUDA
        fns["flex"] = flex
    except Exception:  # noqa: BLE001
        pass
    ms = {name: [t * 1e3 for t in ts] for name, ts in measure(fns, repeats, device, warmup=2).items()}
    med = {name: statistics.median(ts) for name, ts in ms.items()}
    fl = attention_flops(num_clips, F, N, head_dim, heads)
    return {
        "seq_len": L,
        "dense_ms": med["dense"],
        "mask_aware_ms": med["mask_aware"],
        "flex_ms": med.get("flex"),
        "speedup": med["dense"] / med["mask_aware"],
        "flex_speedup": med["dense"] / med["flex"] if "flex" in med else None,
        "backward": backward,
        "dtype": str(dtype).removeprefix("torch."),
        "computed_over_allowed": fl["mask_aware_pairs"] / fl["allowed_pairs"],
        "spread_ms": {name: spread(ts) for name, ts in ms.items()},
        "threads": torch.get_num_threads(),
    }


def benchmark_attention_contended(**kwargs: Any) -> dict:
    """:func:`benchmark_attention` while a competing busy process (one spinning Python) runs beside it.

    On a machine with few cores this is the everyday case of a laptop doing something else; the process
    is started here and killed afterwards.
    """
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)  # let it get scheduled
        return benchmark_attention(**kwargs)
    finally:
        busy.kill()
        busy.wait()


def bench_rollout(
    device: torch.device,
    history: int = 8,
    F: int = 2,
    N: int = 64,
    width: int = 256,
    depth: int = 6,
    heads: int = 4,
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
        VideoGPT(ModelConfig(width=width, depth=depth, heads=heads), in_dim=48, grid=(side, N // side))
        .to(device)
        .eval()
    )
    for name, p in model.named_parameters():  # non-zero adaLN/output weights so the comparison means something
        if "ada" in name or name.startswith("out."):
            torch.nn.init.normal_(p, std=0.02)
    ctx = torch.randn(1, history, F, N, 48, generator=torch.Generator().manual_seed(0)).to(device)

    def run(use_cache: bool) -> torch.Tensor:
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
    times = measure({"cache": lambda: run(True), "recompute": lambda: run(False)}, repeats, device, warmup=0)
    cache_s, recompute_s = statistics.median(times["cache"]), statistics.median(times["recompute"])
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


def _write_demo_videos(root: Path, files: int, frames: int, size: int) -> None:
    """``files`` mp4 videos of ``frames`` frames of bouncing balls at ``size x size`` (PyAV, H.264)."""
    import av

    from .data import BouncingBalls

    balls = BouncingBalls(files, frames, size, max_balls=3, seed=0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        video = balls[i]["video"]  # (T, 3, S, S) in [-1, 1]
        rgb = ((video + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        with av.open(str(root / f"balls_{i:03d}.mp4"), "w") as out:
            stream = out.add_stream("libx264", rate=10)
            stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
            for img in rgb:
                out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
            out.mux(stream.encode())


def bench_loader(
    train_samples_per_s: float,
    frames: int = 16,
    image_size: int = 32,
    batch: int = 4,
    repeats: int = 5,
    folder: str = "",
    files: int = 4,
) -> dict:
    """Samples/s of a training batch from prepared shards vs decoding the same video folder on the fly,
    against ``train_samples_per_s``, what the bench's training step consumes (batch / step time).

    The folder is ``folder``, or ``files`` videos of ``4 * frames`` frames at twice ``image_size`` (so
    decoding includes the resize real footage needs) written with PyAV to a temporary folder. Both loaders
    return the same ``(batch, frames, 3, image_size, image_size)`` clips (:func:`minivgpt.data.video_batch`
    of the same random indices), timed interleaved; ``prepare_s`` is the one-off cost of
    ``python -m minivgpt.prepare`` in one process.
    """
    import tempfile
    import warnings

    from .data import VideoFolder, video_batch
    from .prepare import prepare
    from .shards import ShardDataset

    with tempfile.TemporaryDirectory(prefix="minivgpt-loader-") as tmp:
        root = Path(folder) if folder else Path(tmp) / "videos"
        if not folder:
            _write_demo_videos(root, files, 4 * frames, 2 * image_size)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # skipped files are reported by VideoFolder's count below
            prepare(f"folder:{root}", Path(tmp) / "shards", frames=frames, image_size=image_size, workers=1,
                    progress=False)
            prepare_s = time.perf_counter() - t0
            loaders = {"shards": ShardDataset(Path(tmp) / "shards", frames, image_size),
                       "decode": VideoFolder(root, frames, image_size)}
        n = len(loaders["decode"])
        g = torch.Generator().manual_seed(0)
        draws = [torch.randint(n, (batch,), generator=g).tolist() for _ in range(repeats + 1)]

        def load(name: str) -> Callable[[], None]:
            rounds = iter(draws)
            return lambda: video_batch(loaders[name], next(rounds))

        times = measure({name: load(name) for name in loaders}, repeats, torch.device("cpu"))
    per_s = {name: batch / statistics.median(ts) for name, ts in times.items()}
    return {
        "shards_samples_per_s": per_s["shards"],
        "decode_samples_per_s": per_s["decode"],
        "train_samples_per_s": train_samples_per_s,
        "shards_over_train": per_s["shards"] / train_samples_per_s,
        "decode_over_train": per_s["decode"] / train_samples_per_s,
        "shards_over_decode": per_s["shards"] / per_s["decode"],
        "prepare_s": prepare_s,
        "clips": n,
        "frames": frames,
        "image_size": image_size,
        "batch": batch,
        "spread_s": {name: spread(ts) for name, ts in times.items()},
    }


# ------------------------------------------------------------------------------------------ the command
@dataclass
class BenchConfig:
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # CPU threads; 0 = measured at start-up (hardware.set_threads)
    quick: bool = False  # tiny sizes (a smoke test, not a measurement); explicit keys still win
    size: str = "small"  # small (the CPU bench) | large (the GPU bench: LARGE); explicit keys still win
    json: str = ""  # also write the results to this JSON file
    repeats: int = 5  # timed rounds of every benchmark (after warm-up)
    clips: int = 8  # K of the training sequence and the rollout history
    frames_per_clip: int = 2
    tokens_per_frame: int = 64
    width: int = 256
    depth: int = 6
    heads: int = 4
    batch_size: int = 4  # training bench; the attention bench uses one sequence
    sample_steps: int = 20  # Euler steps of the rollout bench
    compile: bool = False  # the training bench's model under torch.compile
    attention_clips: str = ""  # also time attention at these K, e.g. "8,16" (L = 2 K F N each)
    contended: bool = True  # also time attention beside a competing busy process
    loader: bool = True  # loader throughput: prepared shards vs decoding a video folder vs training's consumption
    video_folder: str = ""  # the loader bench's videos; empty: a few generated ones in a temporary folder


QUICK = dict(clips=2, tokens_per_frame=16, width=64, depth=2, heads=2, batch_size=2, sample_steps=2, repeats=1)
# the GPU bench (python -m minivgpt.bench size=large): GPT-2-small width and depth at L ~ 4,096
LARGE = dict(
    clips=8, frames_per_clip=4, tokens_per_frame=64, width=768, depth=12, heads=12, batch_size=8, compile=True,
    attention_clips="8,16", sample_steps=10, contended=False, loader=False, repeats=10,
)
SIZES = {"small": {}, "large": LARGE}


def bench_config(params: dict[str, Any] | None = None) -> BenchConfig:
    """Flat ``key=value`` parameters -> :class:`BenchConfig` (unknown names rejected, ``quick`` applied first)."""
    params = dict(params or {})
    first = dataclass_from_params(BenchConfig, {k: params[k] for k in ("quick", "size") if k in params})
    if first.size not in SIZES:
        raise ValueError(f"parameter size={first.size!r}: expected one of {sorted(SIZES)}")
    base = {**SIZES[first.size], **(QUICK if first.quick else {})}
    cfg = dataclass_from_params(BenchConfig, params, base=base or None)
    names = ("repeats", "clips", "frames_per_clip", "tokens_per_frame", "width", "depth", "heads", "batch_size")
    check_ranges(asdict(cfg), {name: AT_LEAST_1 for name in names})
    if cfg.width % cfg.heads:
        raise ValueError(f"width={cfg.width} must be a multiple of heads={cfg.heads}")
    attention_clips(cfg)  # a clear error for a malformed list
    if cfg.device not in ("auto", "cpu", "cuda") and not cfg.device.startswith("cuda:"):
        raise ValueError(f"parameter device={cfg.device!r}: expected auto, cpu or cuda")
    resolve_device(cfg.device)  # a clear error for cuda without a GPU
    return cfg


def attention_clips(cfg: BenchConfig) -> list[int]:
    """The K of the attention sweep: ``attention_clips="8,16"`` -> ``[8, 16]`` (empty -> ``[]``)."""
    try:
        ks = [int(k) for k in cfg.attention_clips.replace(" ", "").split(",") if k]
    except ValueError:
        raise ValueError(f"parameter attention_clips={cfg.attention_clips!r}: expected integers, e.g. 8,16") from None
    if any(k < 1 for k in ks):
        raise ValueError(f"parameter attention_clips={cfg.attention_clips!r}: every K must be >= 1")
    return ks


def run_all(device: str = "auto", **params: Any) -> dict:
    """Every benchmark with the parameters of :class:`BenchConfig`; returns the result dict."""
    cfg = bench_config({"device": device, **params})
    set_threads(cfg.threads)
    dev = resolve_device(cfg.device)
    name = (
        torch.cuda.get_device_name(dev)
        if dev.type == "cuda"
        else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    )
    K, F, N = cfg.clips, cfg.frames_per_clip, cfg.tokens_per_frame
    model = dict(F=F, N=N, width=cfg.width, depth=cfg.depth, heads=cfg.heads, repeats=cfg.repeats)
    out: dict[str, Any] = {
        "device": name,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "config": asdict(cfg),
    }

    def partial() -> None:  # the JSON after every section, so a run stopped part-way keeps what it measured
        if cfg.json:
            atomic_write(cfg.json, json.dumps(out, indent=2))

    out["train"] = bench_train(dev, K=K, batch=cfg.batch_size, compile=cfg.compile, **model)
    partial()
    if cfg.loader:  # frames of the bench's tokens: 3 channels, patch 4 (in_dim 48), sqrt(N) patches a side
        consumed = cfg.batch_size / out["train"]["step_s"]
        out["loader"] = bench_loader(consumed, K * F, 4 * int(N**0.5), cfg.batch_size, cfg.repeats, cfg.video_folder)
    att = dict(num_clips=K, F=F, N=N, heads=cfg.heads, head_dim=cfg.width // cfg.heads, repeats=cfg.repeats, device=dev)
    out["attention"] = benchmark_attention(**att)
    partial()
    for k in attention_clips(cfg):
        out.setdefault("attention_sweep", []).append(benchmark_attention(**{**att, "num_clips": k}))
        partial()
    if cfg.contended:
        out["attention"]["contended"] = benchmark_attention_contended(**att)
        partial()
    out["rollout"] = bench_rollout(dev, history=K, steps=cfg.sample_steps, **model)
    return out


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    exit_on_help(argv, lambda: cli_help(__doc__, {"parameters (BenchConfig)": BenchConfig()}))
    params = parse_cli(argv)
    res = run_all(**params)
    text = json.dumps(res, indent=2)
    print(text)
    if res["config"]["json"]:
        atomic_write(res["config"]["json"], text)
    return res


if __name__ == "__main__":
    main()
