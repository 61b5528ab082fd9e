"""Prepare a dataset once: ``python -m minivgpt.prepare SOURCE out=DIR [key=value ...]``.

Like nanoGPT's ``data/*/prepare.py`` writing ``train.bin``: decode (or generate) every clip once, in
parallel worker processes with a progress bar, and store them in memory-mapped shards that training
reads with O(1) random access (``data=shards:DIR``, :class:`minivgpt.shards.ShardDataset`; the folder
layout and the index are described in :mod:`minivgpt.shards`).

``SOURCE`` is any dataset name of :func:`minivgpt.data.make_dataset`:

- ``folder:DIR``: every clip of ``frames`` frames of every video file, in the order of
  :class:`~minivgpt.data.VideoFolder` (which it reproduces: same classes, labels, captions, skips);
- ``moving_mnist:PATH.npy``: every sequence (its first ``frames`` frames);
- ``moving_mnist_digits:DIR``, ``bouncing_balls``, ``moving_glyphs`` (generated): ``num_samples``
  training samples from ``seed`` (split ``train``) and ``val_samples`` validation samples from ``seed + 1``
  (split ``val``; the digits of the validation split), as training and its evaluation draw them.

Real data is split by index as the loaders do it: the last ``VAL_FRACTION`` of the clips are ``val``.

Frames are stored as uint8 (``round((x + 1) * 127.5)``: exact for sources that are uint8 at the stored
size, within half a grey level otherwise), or, with ``autoencoder=PATH``, encoded by that frame
autoencoder and stored as float16 latents. Each shard holds ``shard_size`` source items (video files for
a folder, samples or sequences otherwise) and is written atomically, then its part of the index; a
rerun skips finished shards (resumable), and ``index.json`` is written last. A video that cannot be
decoded, or is too short, is skipped with one warning that counts them, as ``VideoFolder`` does.

Parameters (``key=value``, unknown names rejected)::

    out=DIR frames=16 image_size=32 num_samples=4096 val_samples=-1 seed=0 min_balls=1 max_balls=1
    autoencoder=PATH shard_size=64 workers=0 progress=true overwrite=false

Derived in notebooks/08 (§ Scaling out: prepared data).
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing as mp
import os
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .checkpoint import atomic_write
from .config import cli_help, dataclass_from_params, exit_on_help, parse_cli
from .data import VAL_FRACTION, VIDEO_EXTENSIONS, _open_video, _square_resize, make_dataset, split_indices
from .shards import FORMAT, INDEX, shard_names

GENERATED = ("bouncing_balls", "moving_glyphs", "moving_mnist_digits")  # sampled from (seed, index)
FIXED = ("folder", "moving_mnist")  # every clip of fixed files
WITH_MASKS = ("bouncing_balls", "moving_glyphs", "moving_mnist_digits", "moving_mnist")  # others are all zeros


@dataclass
class PrepareConfig:
    source: str = ""  # a data= name: folder:DIR, moving_mnist:PATH.npy, moving_mnist_digits:DIR, bouncing_balls...
    out: str = ""  # the folder to write (required)
    frames: int = 16  # frames per clip
    image_size: int = 32  # frames are centre-cropped / resized to image_size x image_size
    num_samples: int = 4096  # generated sources: training samples, drawn from `seed`
    val_samples: int = -1  # generated sources: validation samples from `seed + 1`; -1 = 10% of num_samples
    seed: int = 0
    min_balls: int = 1  # bouncing_balls only (the training defaults)
    max_balls: int = 1
    autoencoder: str = ""  # PATH of a frame autoencoder: store its float16 latents; empty: uint8 frames
    shard_size: int = 64  # source items per shard (video files, sequences or samples)
    workers: int = 0  # worker processes; 0 = one per CPU core; 1 = in this process
    progress: bool = True
    overwrite: bool = False  # replace a folder prepared with another config


# ------------------------------------------------------------------------------------------ planning
def _video_files(root: Path) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """``(files, classes, skipped)`` of a video folder, as :class:`~minivgpt.data.VideoFolder` lists them:
    relative paths in sorted order, the class subfolders, and the files lying beside them (no class)."""
    if not root.is_dir():
        raise FileNotFoundError(f"video folder not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
    subfolders = sorted({p.relative_to(root).parts[0] for p in files if p.parent != root})
    keep = [p for p in files if not (subfolders and p.parent == root)]
    skipped = [(str(p.relative_to(root)), "not inside a class subfolder") for p in files if p not in keep]
    return [str(p.relative_to(root)) for p in keep], subfolders or [root.name], skipped


def file_hash(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def plan(cfg: PrepareConfig) -> dict[str, Any]:
    """What to write: the source's items cut into shards, the clip shape, classes, and the config hash.

    Returns ``{"name", "arg", "units" (list of item lists, one per shard), "classes", "channels",
    "clip_shape", "masks", "skipped", "config", "config_hash"}``. Nothing is decoded here.
    """
    name, _, arg = cfg.source.partition(":")
    if name not in GENERATED + FIXED:
        make_dataset(cfg.source, cfg.frames, cfg.image_size, 1)  # raises the loaders' own error for a bad name
        raise ValueError(f"source {cfg.source!r}: prepare reads {', '.join(GENERATED + FIXED)}")
    fingerprint: Any = None
    skipped: list[tuple[str, str]] = []
    if name == "folder":
        items, classes, skipped = _video_files(Path(arg))
        channels = 3
        fingerprint = [(f, (Path(arg) / f).stat().st_size) for f in items]
        unit = "file"
    else:
        ds = _source(cfg, "train" if name in GENERATED else "all")
        classes, channels = list(ds.classes), int(ds.channels)
        if name == "moving_mnist":
            items = [["all", i] for i in range(len(ds))]
            fingerprint = Path(arg).stat().st_size
        else:
            items = [["train", i] for i in range(cfg.num_samples)] + [["val", i] for i in range(_val_samples(cfg))]
        unit = "sample"
    ae_hash = ""
    clip_shape = [cfg.frames, channels, cfg.image_size, cfg.image_size]
    if cfg.autoencoder:
        if not Path(cfg.autoencoder).is_file():
            raise FileNotFoundError(f"autoencoder={cfg.autoencoder}: no such checkpoint (save_autoencoder writes one)")
        ae = _autoencoder(cfg.autoencoder)
        if ae.in_channels != channels:
            raise ValueError(
                f"autoencoder={cfg.autoencoder} reads {ae.in_channels} channels, but {cfg.source} has {channels}"
            )
        clip_shape = [cfg.frames, *ae.latent_shape(cfg.image_size, cfg.image_size)]
        ae_hash = file_hash(cfg.autoencoder)
    config = {k: v for k, v in asdict(cfg).items() if k not in ("out", "workers", "progress", "overwrite")}
    if name != "bouncing_balls":
        config.pop("min_balls"), config.pop("max_balls")
    if name in FIXED:
        for k in ("num_samples", "val_samples", "seed"):
            config.pop(k)
    config.update(format=FORMAT, autoencoder_sha256=ae_hash, source_fingerprint=fingerprint)
    config_hash = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    units = [items[i : i + cfg.shard_size] for i in range(0, len(items), cfg.shard_size)]
    return {
        "name": name,
        "arg": arg,
        "image_size": cfg.image_size,
        "units": units,
        "unit": unit,
        "classes": classes,
        "channels": channels,
        "clip_shape": clip_shape,
        "masks": name in WITH_MASKS,
        "skipped": skipped,
        "config": config,
        "config_hash": config_hash,
    }


def _val_samples(cfg: PrepareConfig) -> int:
    return math.ceil(VAL_FRACTION * cfg.num_samples) if cfg.val_samples < 0 else cfg.val_samples


# ------------------------------------------------------------------------------------------ workers
_CACHE: dict[Any, Any] = {}  # per process: the source datasets and the autoencoder, built once


def _source(cfg: PrepareConfig, split: str):
    """The source dataset of ``split`` (generated: train from ``seed``, val from ``seed + 1``)."""
    key = ("source", cfg.source, cfg.frames, cfg.image_size, cfg.num_samples, cfg.val_samples, cfg.seed,
           cfg.min_balls, cfg.max_balls, split)
    if key not in _CACHE:
        name = cfg.source.partition(":")[0]
        kw = {"min_balls": cfg.min_balls, "max_balls": cfg.max_balls} if name == "bouncing_balls" else {}
        n, seed = (cfg.num_samples, cfg.seed) if split != "val" else (max(1, _val_samples(cfg)), cfg.seed + 1)
        _CACHE[key] = make_dataset(cfg.source, cfg.frames, cfg.image_size, n, seed, split=split, **kw)
    return _CACHE[key]


def _autoencoder(path: str):
    stat = os.stat(path)
    key = ("autoencoder", path, stat.st_mtime_ns, stat.st_size)  # a rewritten file is loaded again
    if key not in _CACHE:
        from .autoencoder import load_autoencoder

        _CACHE[key] = load_autoencoder(path).requires_grad_(False)
    return _CACHE[key]


def quantize(video: torch.Tensor) -> np.ndarray:
    """Frames in [-1, 1] -> uint8 ``round((x + 1) * 127.5)`` (the inverse of ``u / 127.5 - 1``), same shape."""
    return torch.round((video + 1) * 127.5).clamp_(0, 255).to(torch.uint8).numpy()


def _store(cfg: PrepareConfig, video: torch.Tensor) -> np.ndarray:
    """One clip (T, C, H, W) in [-1, 1] as stored: uint8 frames, or float16 latents (T, c, h, w)."""
    if not cfg.autoencoder:
        return quantize(video)
    with torch.no_grad():
        return _autoencoder(cfg.autoencoder).encode(video).to(torch.float16).numpy()


def _folder_clips(path: Path, frames: int, size: int) -> list[torch.Tensor]:
    """Decode ``path`` once, streaming: its consecutive clips of ``frames`` frames, (frames, 3, size, size) in
    [-1, 1] (what ``VideoFolder`` returns for them). Raises ``ValueError`` for a file with too few frames."""
    clips, buf, count = [], [], 0
    with _open_video(path) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        for frame in container.decode(video=0):
            buf.append(frame.to_ndarray(format="rgb24"))
            count += 1
            if len(buf) == frames:
                clips.append(_square_resize(np.stack(buf), size))
                buf = []
    if count < frames:
        raise _TooShort(f"has {count} frames, need {frames}")
    return clips


class _TooShort(ValueError):
    pass


def _shard_clips(cfg: PrepareConfig, p: dict, items: list) -> tuple[list[dict], list, list, list]:
    """Decode / generate the clips of one shard: ``(records, stored arrays, masks, skipped files)``."""
    records, arrays, masks, skipped = [], [], [], []
    if p["name"] == "folder":
        root = Path(p["arg"])
        for rel in items:
            path = root / rel
            try:
                clips = _folder_clips(path, cfg.frames, cfg.image_size)
            except _TooShort as err:
                skipped.append([rel, str(err)])
                continue
            except Exception as err:  # noqa: BLE001 - any decoder failure: skip the file, as VideoFolder does
                skipped.append([rel, f"unreadable or truncated ({type(err).__name__}: {err})"])
                continue
            parts = Path(rel).parts
            label = 0 if len(parts) == 1 else p["classes"].index(parts[0])
            caption = path.stem.replace("_", " ").replace("-", " ")
            for c, video in enumerate(clips):
                arrays.append(_store(cfg, video))
                records.append({"source": rel, "item": c, "offset": c * cfg.frames, "label": label,
                                "caption": caption, "split": None})
    else:
        for split, i in items:
            s = _source(cfg, split)[i]
            arrays.append(_store(cfg, s["video"]))
            if p["masks"]:
                if int(s["masks"].max()) > 255:
                    raise ValueError(f"{cfg.source}[{i}]: {int(s['masks'].max())} objects do not fit uint8 masks")
                masks.append(s["masks"].to(torch.uint8).numpy())
            records.append({"source": cfg.source, "item": i, "offset": 0, "label": int(s["label"]),
                            "caption": s["caption"], "split": None if split == "all" else split})
    return records, arrays, masks, skipped


def write_shard(out: Path, k: int, arrays: list[np.ndarray], masks: list[np.ndarray] | None, p: dict) -> None:
    """Write shard ``k`` atomically: its clips ``(n, *clip_shape)`` and masks ``(n, T, H, W)`` as .npy files."""
    names = shard_names(k)
    T, size = p["clip_shape"][0], p["image_size"]
    dtype = np.float16 if p["config"]["autoencoder"] else np.uint8
    frames = np.stack(arrays) if arrays else np.zeros((0, *p["clip_shape"]), dtype)
    atomic_write(out / names["frames"], lambda f: np.save(f, frames, allow_pickle=False))
    if masks is not None:
        m = np.stack(masks) if masks else np.zeros((0, T, size, size), np.uint8)
        atomic_write(out / names["masks"], lambda f: np.save(f, m, allow_pickle=False))


def _make_shard(job: tuple[dict, dict, int, list]) -> dict:
    """Worker: make shard ``k`` (frames, masks, then its part of the index, each atomically); returns the part."""
    cfg_dict, p, k, items = job
    cfg = PrepareConfig(**cfg_dict)
    out = Path(cfg.out)
    records, arrays, masks, skipped = _shard_clips(cfg, p, items)
    write_shard(out, k, arrays, masks if p["masks"] else None, p)
    part = {"config_hash": p["config_hash"], "shard": k, "items": len(items), "clips": records, "skipped": skipped}
    atomic_write(out / shard_names(k)["part"], json.dumps(part, sort_keys=True))
    return part


def _init_worker() -> None:
    torch.set_num_threads(1)  # one core per worker process


# ------------------------------------------------------------------------------------------ the job
def _finished_part(out: Path, k: int, p: dict) -> dict | None:
    """Shard ``k``'s part of the index if the shard is complete and of this config, else None."""
    names = shard_names(k)
    path = out / names["part"]
    if not path.is_file():
        return None
    try:
        part = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    files = [names["frames"]] + ([names["masks"]] if p["masks"] else [])
    if part.get("config_hash") != p["config_hash"] or not all((out / f).is_file() for f in files):
        return None
    return part


def _check_out(out: Path, p: dict, overwrite: bool) -> None:
    """Refuse a folder holding shards of another config (unless ``overwrite``); clear stale temp files."""
    out.mkdir(parents=True, exist_ok=True)
    for tmp in out.glob(".*.tmp"):  # left by a killed atomic write
        tmp.unlink()
    ours = sorted(out.glob("shard_*")) + ([out / INDEX] if (out / INDEX).exists() else [])
    if overwrite:
        for f in ours:
            f.unlink()
        return
    for f in ours:
        if f.suffix != ".json":
            continue
        try:
            other = json.loads(f.read_text()).get("config_hash")
        except (OSError, json.JSONDecodeError, AttributeError):
            other = None
        if other != p["config_hash"]:
            raise FileExistsError(
                f"{out} holds shards of another prepare config ({f.name}: config_hash {other}, now "
                f"{p['config_hash']}); choose another out=, or overwrite=true to replace them"
            )


def prepare(source: str, out: str | os.PathLike, **params: Any) -> dict:
    """Prepare ``source`` into shards under ``out`` (parameters of :class:`PrepareConfig`); returns the index.

    Finished shards of the same config are kept (resume); the index is written last.
    """
    cfg = dataclass_from_params(PrepareConfig, {**params, "source": source, "out": str(out)})
    for name in ("frames", "image_size", "num_samples", "shard_size"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"parameter {name}={getattr(cfg, name)} must be >= 1")
    if cfg.workers < 0:
        raise ValueError(f"parameter workers={cfg.workers} must be >= 0 (0 = one per CPU core)")
    p = plan(cfg)
    out = Path(cfg.out)
    _check_out(out, p, cfg.overwrite)
    parts: dict[int, dict] = {}
    for k in range(len(p["units"])):
        part = _finished_part(out, k, p)
        if part is not None:
            parts[k] = part
    jobs = [(asdict(cfg), p, k, items) for k, items in enumerate(p["units"]) if k not in parts]
    workers = min(cfg.workers or os.cpu_count() or 1, max(1, len(jobs)))
    total = sum(len(u) for u in p["units"])
    bar = tqdm(total=total, initial=total - sum(len(j[3]) for j in jobs), unit=p["unit"],
               desc=f"prepare {cfg.source}", disable=not cfg.progress)
    if workers == 1:
        for job in jobs:
            parts[job[2]] = _make_shard(job)
            bar.update(len(job[3]))
    else:
        with mp.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
            for part in pool.imap_unordered(_make_shard, jobs):
                parts[part["shard"]] = part
                bar.update(part["items"])
    bar.close()
    return _write_index(cfg, p, out, [parts[k] for k in range(len(p["units"]))])


def _write_index(cfg: PrepareConfig, p: dict, out: Path, parts: list[dict]) -> dict:
    """Join the shards' parts into ``index.json`` (splits of fixed sources assigned by index), warn of skips."""
    clips, shards = [], []
    for k, part in enumerate(parts):
        names = shard_names(k)
        shards.append({"frames": names["frames"], "masks": names["masks"] if p["masks"] else None,
                       "clips": len(part["clips"])})
        clips += [{**rec, "shard": k, "row": r} for r, rec in enumerate(part["clips"])]
    skipped = [list(s) for s in p["skipped"]] + [s for part in parts for s in part["skipped"]]
    if not clips:
        why = "; ".join(f"{f}: {r}" for f, r in skipped[:3])
        raise ValueError(f"{cfg.source}: no usable clip of {cfg.frames} frames" + (f" ({why})" if why else ""))
    if p["name"] in FIXED:
        val = set(split_indices(len(clips), "val", f"clips of {cfg.source}")) if len(clips) > 1 else set()
        for i, rec in enumerate(clips):
            rec["split"] = "val" if i in val else "train"
    if skipped:
        named = ", ".join(f"{f} ({r})" for f, r in skipped[:3])
        more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        count = sum(len(u) for u in p["units"]) + len(p["skipped"])
        warnings.warn(f"prepare({cfg.source}): skipped {len(skipped)} of {count} video files: {named}{more}",
                      stacklevel=3)
    kind = "latents" if cfg.autoencoder else "frames"
    index = {
        "format": FORMAT,
        "source": cfg.source,
        "config": p["config"],
        "config_hash": p["config_hash"],
        "kind": kind,
        "dtype": "float16" if cfg.autoencoder else "uint8",
        "clip_shape": p["clip_shape"],
        "num_frames": cfg.frames,
        "image_size": cfg.image_size,
        "channels": p["channels"],
        "classes": p["classes"],
        "num_clips": len(clips),
        "splits": {s: sum(c["split"] == s for c in clips) for s in ("train", "val")},
        "skipped": skipped,
        "shards": shards,
        "clips": clips,
    }
    atomic_write(out / INDEX, json.dumps(index, sort_keys=True))
    return index


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    groups = {"parameters (PrepareConfig; SOURCE may also be given first)": PrepareConfig()}
    exit_on_help(argv, lambda: cli_help(__doc__, groups))
    positional = [a for a in argv if "=" not in a]
    if len(positional) > 1:
        raise ValueError(f"one SOURCE, then key=value parameters; got {positional}")
    params = parse_cli([a for a in argv if "=" in a])
    source = positional[0] if positional else params.pop("source", "")
    if not source or not params.get("out"):
        raise ValueError("usage: python -m minivgpt.prepare SOURCE out=DIR [frames=16 image_size=32 ...]")
    index = prepare(source, **params)
    summary = {k: index[k] for k in ("source", "kind", "num_clips", "splits", "clip_shape", "config_hash")}
    summary.update(out=params["out"], shards=len(index["shards"]), skipped=len(index["skipped"]))
    print(json.dumps(summary))
    return index


if __name__ == "__main__":
    main()
