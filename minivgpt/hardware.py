"""Choices about the machine: which device (:func:`resolve_device`), how many CPU threads
(:func:`set_threads`) and which number format to train in (:func:`resolve_amp`: bf16 autocast where it is
faster, fp32 where it is not).

Threads: on a 2-core machine that something else keeps busy, 2 OpenMP threads can run a training step
5x slower than 1 thread (each parallel region waits for the thread that lost its core), while on an idle
machine 2 threads are faster. ``threads=0`` therefore measures a small attention + MLP step with 1 thread
and with torch's default count at start-up and keeps the faster (cached for the process).

On CUDA bf16 autocast is always faster. On a CPU it depends on the chip: one with AVX512-BF16 or AMX
units runs bf16 matmuls about as fast as fp32 or faster, while an AVX2-only CPU (most laptops) emulates
them and runs 20-30x slower. ``amp=auto`` therefore measures on CPUs: a short fp32 against bf16 timing of
a small MLP's forward and backward, interleaved, once per process (about 0.1-1 s), and uses bf16 only where
it wins. ``amp=bf16`` forces bf16 and warns when the measurement says it is slower.
(``ONEDNN_MAX_CPU_ISA=AVX2`` makes a bf16-capable CPU behave like an AVX2-only one, to check this.)

Derived in notebooks/04 (§ training loop).
"""

from __future__ import annotations

import os
import statistics
import time
import warnings
from functools import cache

import torch


def resolve_device(name: str) -> torch.device:
    """``auto`` -> this rank's GPU if there is one (``LOCAL_RANK`` under torchrun), else the CPU;
    ``cuda`` without a GPU is an error that names the fix."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"parameter device={name!r}, but this machine has no usable CUDA GPU: use device=cpu or auto")
    return torch.device(name)


def _probe_step() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(128, 512), torch.nn.GELU(), torch.nn.Linear(512, 128))
        return net, torch.randn(512, 128), torch.randn(2, 4, 256, 32)


def _time_step(net: torch.nn.Module, x: torch.Tensor, qkv: torch.Tensor, bf16: bool = False) -> float:
    """One forward+backward of an MLP and a small attention, in seconds."""
    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        y = net(x)
        a = torch.nn.functional.scaled_dot_product_attention(qkv, qkv, qkv.requires_grad_())
    (y.float().square().mean() + a.float().square().mean()).backward()
    qkv.grad = None
    return time.perf_counter() - t0


@cache
def measured_threads(repeats: int = 5) -> int:
    """1 or torch's default thread count, whichever runs the probe step faster here (median, interleaved)."""
    default = torch.get_num_threads()
    if default <= 1:
        return default
    net, x, qkv = _probe_step()
    times: dict[int, list[float]] = {1: [], default: []}
    try:
        for n in times:  # warm up both
            torch.set_num_threads(n)
            _time_step(net, x, qkv)
        for _ in range(repeats):
            for n in times:
                torch.set_num_threads(n)
                times[n].append(_time_step(net, x, qkv))
    finally:
        torch.set_num_threads(default)
    return min(times, key=lambda n: statistics.median(times[n]))


def set_threads(threads: int) -> int:
    """Set torch's CPU thread count: ``threads > 0`` as given, ``0`` measured (:func:`measured_threads`).
    Returns the count in use."""
    if threads < 0:
        raise ValueError(f"parameter threads={threads} is out of range: must be >= 0 (0 = measured)")
    torch.set_num_threads(threads if threads > 0 else measured_threads())
    return torch.get_num_threads()


@cache
def cpu_bf16_speedup(threads: int | None = None, repeats: int = 5) -> float:
    """fp32 time / bf16-autocast time of the probe step (MLP + attention, forward+backward) on this CPU
    (> 1: bf16 is faster).

    Cached per thread count for the life of the process. ``threads`` defaults to torch's current count.
    """
    threads = threads or torch.get_num_threads()
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        net, x, qkv = _probe_step()
        _time_step(net, x, qkv, False), _time_step(net, x, qkv, True)  # warm up both paths
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(repeats):  # interleaved, so a burst of load hits both formats alike
            for bf16 in (False, True):
                times[bf16].append(_time_step(net, x, qkv, bf16))
        return statistics.median(times[False]) / statistics.median(times[True])
    finally:
        torch.set_num_threads(old)


def resolve_amp(amp: str, device: torch.device) -> bool:
    """Whether to train under bf16 autocast for ``amp`` in ``auto | bf16 | off`` on ``device``."""
    if amp not in ("auto", "bf16", "off"):
        raise ValueError(f"amp={amp!r}: choose auto, bf16 or off")
    if amp == "off":
        return False
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return amp == "bf16"
    speedup = cpu_bf16_speedup()
    cap = torch.backends.cpu.get_cpu_capability()
    if amp == "bf16":
        if speedup < 1.0:
            warnings.warn(
                f"amp=bf16 is {1 / speedup:.1f}x slower than fp32 on this CPU ({cap}); amp=auto or amp=off "
                "would train faster",
                stacklevel=2,
            )
        return True
    return speedup > 1.1  # a clear win only: fp32 is the safer default on a tie
