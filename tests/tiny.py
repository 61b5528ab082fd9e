"""The tiny training configuration shared by the training, distributed and robustness tests, and the IDX
writer of the tests that make their own MNIST files."""

import struct
from pathlib import Path

import numpy as np
import torch

TINY = dict(
    width=32,
    depth=1,
    heads=2,
    image_size=16,
    patch_size=8,
    num_samples=64,
    batch_size=4,
    clips=2,
    frames_per_clip=2,
    warmup=2,
    log_every=1,
    progress=False,
    threads=1,
    amp="off",  # fp32 on any CPU: amp=auto picks bf16 where the CPU has bf16 units, and one process
    #             against two then differs by bf16 rounding (3e-4 here), beyond the tests' 1e-5
)


def cli(**extra) -> list[str]:
    """``key=value`` arguments of ``python -m minivgpt.train`` for TINY plus ``extra``."""
    params = {**TINY, **extra}
    return [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in params.items()]


def assert_same_params(a: Path, b: Path, atol: float = 0.0) -> None:
    """The model weights of two ``last.pt`` files agree (bit for bit when ``atol`` is 0)."""
    sa = torch.load(a, weights_only=True)["model"]
    sb = torch.load(b, weights_only=True)["model"]
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.allclose(sa[name], sb[name], rtol=0.0, atol=atol), name


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """An IDX file's bytes for a uint8 array (magic 0x000008 + number of dims unless given)."""
    magic = 0x0800 + array.ndim if magic is None else magic
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()
