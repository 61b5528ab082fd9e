"""Configuration dataclasses and the flat ``key=value`` parameters that map onto them.

One flat namespace: every field of every dataclass is a parameter of ``python -m minivgpt.train`` and of
the ``parameters`` cell of notebook 08 (``papermill -p name value``). Unknown names are rejected with the
closest valid name in the message.

Derived in notebooks/08 (§ parameters) and used by every job; the design is in docs/design.md.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import random
import re
import sys
import textwrap
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, get_type_hints


@dataclass
class DataConfig:
    data: str = "bouncing_balls"  # bouncing_balls | moving_glyphs | moving_mnist:PATH.npy | moving_mnist_digits:DIR
    #                               | folder:DIR | shards:DIR (python -m minivgpt.prepare)
    #                               (real data is split by index: 10% validation, never trained on)
    image_size: int = 32
    num_samples: int = 4096  # size of the synthetic training set (its seed is `seed`)
    min_balls: int = 1
    max_balls: int = 1
    autoencoder: str = "identity"  # identity (pixels) | auto (trained once for this data, cached under
    #                                runs/autoencoder/<hash>/) | PATH written by autoencoder.save_autoencoder
    patch_size: int = 8


@dataclass
class ModelConfig:
    width: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    num_classes: int = 0  # >0 enables class conditioning (an extra null class is added for guidance)
    attention: str = "auto"  # auto | dense | mask_aware | flex  (auto: mask_aware on CPU training, flex on CUDA)
    rope_theta: float = 100.0
    precond: str = "none"  # none (the output is the clean estimate) | edm (skip from x_t + scaled output, EDM's)
    sigma_data: float = 0.0  # precond=edm: the clean tokens' spread; 0 = measured on the training data
    data_mean: float = 0.0  # precond=edm: the clean tokens' mean (measured with sigma_data=0)
    head: str = "linear"  # linear (DiT's) | mlp (Linear-GELU-Linear, hidden head_hidden: not rank-limited)
    head_hidden: int = 0  # head=mlp: the hidden width of its Linear-GELU-Linear; 0 = mlp_ratio * width


@dataclass
class DiffusionConfig:
    history_noise: float = 0.9  # clean history is noised with t ~ U(history_noise, 1); 1.0 disables it
    t_sampling: str = "uniform"  # uniform | logit_normal
    t_location: float = 0.0  # logit_normal: t = sigmoid(n), n ~ N(t_location, 1); < 0 trains more near the noise
    loss_weight: str = "x"  # x (MSE of the clean prediction) | velocity (MSE of the implied velocity, 1/(1-t)^2)
    sample_steps: int = 20  # Euler steps when sampling
    cfg_scale: float = 1.0  # classifier-free guidance scale (1.0 = off); unconditional = no history
    cond_drop: float = 0.1  # probability of dropping the class/text condition in training


@dataclass
class TrainConfig:
    out: str = "runs/train"
    steps: int = 1000
    batch_size: int = 16  # global batch: under torchrun every rank takes batch_size / world_size
    grad_accum: int = 1
    stages: str = ""  # "KxF:steps,..." e.g. "1x1:500,4x2:1000"; empty -> one stage `clips`x`frames_per_clip`
    #                   "T/A-B:steps": T frames cut at random into clips of A..B frames, e.g. "16x1:500,16/1-4:*"
    clips: int = 4
    frames_per_clip: int = 2
    drop_last_clean: bool = True
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup: int = 50
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "auto"  # auto (bf16 on CUDA; on CPU only where measured faster than fp32) | bf16 | off
    compile: bool = False
    parallel: str = "ddp"  # ddp | fsdp: under torchrun, replicate the model (DDP) or shard it (FSDP2, sharded
    #                        checkpoints in out/ckpt_fsdp); one process ignores ddp, fsdp needs torchrun
    resume: bool = False  # continue the run in `out` (no checkpoint there: warns and starts at step 0)
    overwrite: bool = False  # allow a fresh run (resume=false) to replace the run already in `out`
    minutes: float = 0.0  # wall-clock budget (0 = none): the lr anneals by steps or time, whichever is further
    #                       along, and training stops at the budget, saves and records it (not bitwise
    #                       repeatable when it binds)
    stop_after: int = 0  # end this invocation after this many steps in all (0 = run to `steps`); resume later
    log_every: int = 10
    eval_every: int = 0  # log the history diagnostic (minivgpt.diagnostics) every this many steps; 0 = off
    ckpt_every: int = 200
    progress: bool = True
    threads: int = 0  # CPU threads; 0 = measured at start-up (1 or torch's default, whichever is faster)
    prefetch: str = "auto"  # auto (on for CUDA) | on | off: draw the next step's batch on a thread while this
    #                         step trains (the same batches: each is a pure function of (seed, step))


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_params(self) -> dict[str, Any]:
        """The flat parameter dict (inverse of :func:`from_params`)."""
        out: dict[str, Any] = {}
        for section in SECTIONS:
            out.update(dataclasses.asdict(getattr(self, section)))
        return out


SECTIONS = ("data", "model", "diffusion", "train")
_CLASSES = {"data": DataConfig, "model": ModelConfig, "diffusion": DiffusionConfig, "train": TrainConfig}


def valid_keys() -> dict[str, str]:
    """Map every parameter name to the section that holds it."""
    keys: dict[str, str] = {}
    for section, cls in _CLASSES.items():
        for f in fields(cls):
            if f.name in keys:
                raise RuntimeError(f"parameter {f.name!r} is defined twice")
            keys[f.name] = section
    return keys


def _convert(name: str, value: Any, typ: Any) -> Any:
    if isinstance(value, str) and typ is not str:
        text = value.strip()
        if typ is bool:
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"parameter {name}={value!r}: expected a boolean (true/false)")
        try:
            return typ(text)
        except ValueError:
            raise ValueError(f"parameter {name}={value!r}: expected {typ.__name__}") from None
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is bool and not isinstance(value, bool):
        raise ValueError(f"parameter {name}={value!r}: expected a boolean (true/false)")
    if typ in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ValueError(f"parameter {name}={value!r}: expected {typ.__name__}")
    if typ is int and isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"parameter {name}={value!r}: expected an integer")
        return int(value)
    if typ is str and not isinstance(value, str):
        raise ValueError(f"parameter {name}={value!r}: expected a string")
    return value


def parse_bool(name: str, value: Any) -> bool:
    """A boolean parameter from ``true/false/1/0/yes/no/on/off`` or a bool (the rule every job uses)."""
    return _convert(name, value, bool)


def dataclass_from_params(cls: type, params: dict[str, Any] | None = None, base: dict[str, Any] | None = None) -> Any:
    """A flat-parameter dataclass (a job's config) from ``key=value`` strings or values.

    Unknown names are rejected with the closest valid one; strings are converted to the field's type.
    ``base`` holds defaults applied before ``params`` (e.g. a "quick" preset). Used by every job that has
    its own config (bench, evaluate, simvp); training's nested :class:`Config` uses :func:`from_params`.
    """
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for name, value in {**(base or {}), **(params or {})}.items():
        if name not in hints:
            raise ValueError(unknown_key_message(name, [f.name for f in fields(cls)]))
        values[name] = _convert(name, value, hints[name])
    return cls(**values)


def unknown_key_message(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else f"; valid names: {', '.join(sorted(valid))}"
    return f"unknown parameter {name!r}{hint}"


def from_params(params: dict[str, Any] | None = None, base: Config | None = None) -> Config:
    """Build a :class:`Config` from flat parameters (CLI ``key=value`` strings or papermill values).

    Raises ``KeyError``-like ``ValueError`` naming the closest valid key for an unknown name.
    """
    cfg = dataclasses.replace(base) if base is not None else Config()
    cfg = Config(**{s: dataclasses.replace(getattr(cfg, s)) for s in SECTIONS})
    keys = valid_keys()
    for name, value in (params or {}).items():
        if name not in keys:
            raise ValueError(unknown_key_message(name, list(keys)))
        section = getattr(cfg, keys[name])
        typ = get_type_hints(type(section))[name]
        setattr(section, name, _convert(name, value, typ))
    validate(cfg)
    return cfg


def parse_cli(argv: list[str]) -> dict[str, str]:
    """``["steps=10", "lr=1e-3"]`` -> ``{"steps": "10", "lr": "1e-3"}``."""
    out = {}
    for arg in argv:
        if "=" not in arg:
            raise ValueError(f"arguments are key=value, got {arg!r} (e.g. steps=200)")
        k, v = arg.split("=", 1)
        out[k.strip().lstrip("-").replace("-", "_")] = v
    return out


def parse_options(argv: list[str], known: Collection[str], doc: str | None) -> dict[str, str]:
    """A small script's ``key=value`` options: ``-h`` / ``--help`` prints ``doc`` and exits; an argument
    without ``=`` or a name not in ``known`` raises ``ValueError`` naming the closest known one."""
    exit_on_help(argv, lambda: (doc or "").strip())
    opts = parse_cli(argv)
    for name in opts:
        if name not in known:
            raise ValueError(unknown_key_message(name, list(known)))
    return opts


HELP_FLAGS = ("-h", "--help")
_FIELD = re.compile(r"^\s+(\w+):[^=]*=[^#]*(?:#\s?(.*))?$")  # `name: type = default  # note`
# a note continued on the next line: its text aligned past the `#` (a `# section` label has one space)
_MORE = re.compile(r"^\s+#\s{2,}(.*)$")


def field_notes(cls: type) -> dict[str, str]:
    """The note of each field of dataclass ``cls``: the comment after it in the source, with the comment lines
    that continue it (``{}`` when the source cannot be read)."""
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    notes: dict[str, str] = {}
    last = None
    for line in lines:
        if m := _FIELD.match(line):
            last = m.group(1)
            notes[last] = (m.group(2) or "").strip()
        elif last is not None and (m := _MORE.match(line)):
            notes[last] = f"{notes[last]} {m.group(1).strip()}".strip()
        else:
            last = None  # a section comment at the fields' own indent, or code: the note has ended
    return notes


def cli_help(doc: str | None, groups: Mapping[str, Any], skip: Collection[str] = ()) -> str:
    """The text of a command's ``--help``: the first paragraph of its module docstring ``doc``, then for each
    group (a title -> a dataclass instance, or a dict) every key as ``key=default`` with its field's note,
    leaving out the dataclass fields named in ``skip`` (keys the command takes for another meaning)."""
    lines = [(doc or "").strip().split("\n\n")[0], "", "Arguments are key=value; the defaults are shown."]
    for title, values in groups.items():
        if dataclasses.is_dataclass(values):
            notes = field_notes(type(values))
            items = {k: v for k, v in dataclasses.asdict(values).items() if k not in skip}
        else:
            notes, items = {}, dict(values)
        lines += ["", f"{title}:"]
        for key, default in items.items():
            shown = f"  {key}={str(default).lower() if isinstance(default, bool) else default}"
            note = notes.get(key, "")
            if not note:
                lines.append(shown)
                continue
            first = f"{shown:34s} " if len(shown) < 34 else shown + "\n" + " " * 35
            lines.append(textwrap.fill(note, width=110, initial_indent=first, subsequent_indent=" " * 35))
    return "\n".join(lines)


def exit_on_help(argv: list[str], text: Callable[[], str]) -> None:
    """If ``argv`` asks for help (``-h`` or ``--help``), print ``text()`` and exit with status 0."""
    if any(a in HELP_FLAGS for a in argv):
        print(text())
        sys.exit(0)


def config_help(
    doc: str | None, cfg: Config | None = None, extra: Mapping[str, Any] | None = None, skip: Collection[str] = ()
) -> str:
    """:func:`cli_help` for the training parameters: one group per section of ``cfg`` (the defaults if None),
    then the groups of ``extra``."""
    cfg = cfg or Config()
    groups = {f"{s} ({type(getattr(cfg, s)).__name__})": getattr(cfg, s) for s in SECTIONS}
    return cli_help(doc, {**groups, **(extra or {})}, skip)


@dataclass(frozen=True)
class RandomCut:
    """A stage's random clip cut: videos of ``frames`` frames cut into clips of ``lo``..``hi`` frames each,
    a new cut (and so a new number of clips) at every step, as in the paper's stages 2-4.

    Written ``T/A-B`` in ``stages=`` (e.g. ``16/1-4``).
    """

    frames: int
    lo: int
    hi: int

    @property
    def max_clips(self) -> int:
        """The most clips a cut can have (every clip as short as allowed)."""
        return self.frames // self.lo

    def feasible(self, frames: int) -> bool:
        """Whether ``frames`` frames can be cut into clips of ``lo``..``hi`` frames (0 frames: the empty cut)."""
        return -(-frames // self.hi) <= frames // self.lo

    def draw(self, rng: random.Random) -> tuple[int, ...]:
        """One cut, the frames of each clip in order (they sum to ``frames``), drawn from ``rng``.

        Clip by clip, the length is uniform among those that leave a remainder that can still be cut.
        """
        lengths, left = [], self.frames
        while left:
            choices = [f for f in range(self.lo, min(self.hi, left) + 1) if self.feasible(left - f)]
            lengths.append(rng.choice(choices))
            left -= lengths[-1]
        return tuple(lengths)


def parse_stages(
    spec: str, default_clips: int, default_frames: int, total_steps: int
) -> list[tuple[int, int | RandomCut, int]]:
    """Parse progressive stages ``"KxF:steps,..."`` into ``[(K, F, steps), ...]``.

    Each stage trains on videos of K clips of F frames for the given number of steps, short to long;
    an empty spec is one stage ``(default_clips, default_frames, total_steps)``. The steps of the last
    stage may be written ``*`` to fill up to ``total_steps``.

    A stage ``T/A-B:steps`` cuts videos of T frames into clips of random, unequal lengths between A and
    B frames, a new cut every step (the paper's stages 2-4); it parses to ``(K_max, RandomCut(T, A, B),
    steps)`` with K_max = T // A the most clips a cut can have. Examples::

        "4x2:1000"              4 clips of 2 frames for 1000 steps
        "16x1:500,4x4:*"        16 one-frame clips, then 4 clips of 4 frames for the remaining steps
        "16x1:500,16/1-4:*"     the paper's schedule in small: 16 one-frame clips, then 16 frames cut at
                                random into clips of 1 to 4 frames (e.g. 3+1+4+2+2+4)
        "8x2:300,24/2-6:*"      then 24 frames in clips of 2 to 6 frames
    """
    if not spec.strip():
        return [(default_clips, default_frames, total_steps)]
    usage = "expected KxF:steps (e.g. 4x2:1000) or T/A-B:steps (e.g. 16/1-4:1000)"
    stages: list[tuple[int, int | RandomCut, int]] = []
    for part in spec.split(","):
        try:
            shape, n = part.strip().split(":")
            steps = -1 if n.strip() == "*" else int(n)
            if "/" in shape:
                total, span = shape.split("/")
                lo, hi = span.split("-")
                cut = RandomCut(int(total), int(lo), int(hi))
                if not 1 <= cut.lo <= cut.hi <= cut.frames:
                    raise ValueError(f"bad stage {part!r} in stages={spec!r}: T/A-B needs 1 <= A <= B <= T")
                if not cut.feasible(cut.frames):
                    raise ValueError(
                        f"bad stage {part!r} in stages={spec!r}: {cut.frames} frames cannot be cut into clips "
                        f"of {cut.lo}-{cut.hi} frames; widen the range"
                    )
                stages.append((cut.max_clips, cut, steps))
            else:
                k, f = shape.lower().split("x")
                stages.append((int(k), int(f), steps))
        except ValueError as e:
            if str(e).startswith("bad stage"):
                raise
            raise ValueError(f"bad stage {part!r} in stages={spec!r}: {usage}") from None
    if any(s[2] == -1 for s in stages[:-1]):
        raise ValueError(f"stages={spec!r}: only the last stage may use '*' for its steps")
    if stages[-1][2] == -1:
        rest = total_steps - sum(s[2] for s in stages[:-1])
        stages[-1] = (stages[-1][0], stages[-1][1], max(rest, 0))
    if any(k < 1 or (isinstance(f, int) and f < 1) or n < 0 for k, f, n in stages):
        raise ValueError(f"stages={spec!r}: clips, frames and steps must be positive")
    return stages


def stage_frames(clips: int, frames: int | RandomCut) -> int:
    """Frames of a video of one stage: K * F, or T for a random cut."""
    return frames.frames if isinstance(frames, RandomCut) else clips * frames


AT_LEAST_1 = (lambda v: v >= 1, ">= 1")
NON_NEGATIVE = (lambda v: v >= 0, ">= 0")
POSITIVE = (lambda v: v > 0, "> 0")


def check_ranges(values: dict[str, Any], ranges: dict[str, tuple[Any, str]]) -> None:
    """Raise ``ValueError`` naming the key, the value and the valid range for the first value out of range.

    ``ranges`` maps a key to ``(test, valid range in words)``, e.g. ``{"steps": NON_NEGATIVE}``.
    """
    for key, (ok, valid) in ranges.items():
        if not ok(values[key]):
            raise ValueError(f"parameter {key}={values[key]!r} is out of range: must be {valid}")


def check_choices(values: dict[str, Any], choices: dict[str, tuple[str, ...]]) -> None:
    """Raise ``ValueError`` naming the key, the value and the valid choices for the first value not among them.

    ``choices`` maps a key to its valid values, e.g. ``{"amp": ("auto", "bf16", "off")}``.
    """
    for key, valid in choices.items():
        if values[key] not in valid:
            raise ValueError(f"parameter {key}={values[key]!r}: choose one of {', '.join(valid)}")


# key -> (test, valid range in words); every numeric setting of training is checked before anything runs
_RANGES: dict[str, tuple[Any, str]] = {
    "image_size": (lambda v: v >= 1, ">= 1"),
    "num_samples": (lambda v: v >= 1, ">= 1"),
    "min_balls": (lambda v: 1 <= v <= 3, "1..3"),
    "max_balls": (lambda v: 1 <= v <= 3, "1..3"),
    "patch_size": (lambda v: v >= 1, ">= 1"),
    "width": (lambda v: v >= 8, ">= 8"),
    "depth": (lambda v: v >= 1, ">= 1"),
    "heads": (lambda v: v >= 1, ">= 1"),
    "mlp_ratio": (lambda v: v > 0, "> 0"),
    "head_hidden": (lambda v: v >= 0, ">= 0 (0 = mlp_ratio * width)"),
    "num_classes": (lambda v: v >= 0, ">= 0 (0 = unconditional)"),
    "rope_theta": (lambda v: v > 0, "> 0"),
    "sigma_data": (lambda v: v >= 0, ">= 0 (0 = measured on the training data)"),
    "history_noise": (lambda v: 0.0 <= v <= 1.0, "[0, 1] (1.0 = no noise on the history)"),
    "sample_steps": (lambda v: v >= 1, ">= 1"),
    "cfg_scale": (lambda v: v >= 0, ">= 0 (1.0 = no guidance)"),
    "cond_drop": (lambda v: 0.0 <= v <= 1.0, "[0, 1]"),
    "steps": (lambda v: v >= 0, ">= 0"),
    "batch_size": (lambda v: v >= 1, ">= 1"),
    "grad_accum": (lambda v: v >= 1, ">= 1"),
    "clips": (lambda v: v >= 1, ">= 1"),
    "frames_per_clip": (lambda v: v >= 1, ">= 1"),
    "lr": (lambda v: v > 0, "> 0"),
    "min_lr_ratio": (lambda v: 0.0 <= v <= 1.0, "[0, 1]"),
    "warmup": (lambda v: v >= 0, ">= 0"),
    "weight_decay": (lambda v: v >= 0, ">= 0"),
    "beta1": (lambda v: 0.0 <= v < 1.0, "[0, 1)"),
    "beta2": (lambda v: 0.0 <= v < 1.0, "[0, 1)"),
    "grad_clip": (lambda v: v > 0, "> 0"),
    "ema_decay": (lambda v: 0.0 <= v < 1.0, "[0, 1) (0 = no averaging)"),
    "stop_after": (lambda v: v >= 0, ">= 0 (0 = run to steps)"),
    "log_every": (lambda v: v >= 1, ">= 1"),
    "eval_every": (lambda v: v >= 0, ">= 0 (0 = no history diagnostic)"),
    "ckpt_every": (lambda v: v >= 1, ">= 1"),
    "threads": (lambda v: v >= 0, ">= 0 (0 = measured)"),
    "minutes": (lambda v: v >= 0, ">= 0 (0 = no time budget)"),
}
_CHOICES = {
    "attention": ("auto", "dense", "mask_aware", "flex"),
    "t_sampling": ("uniform", "logit_normal"),
    "loss_weight": ("x", "velocity"),
    "precond": ("none", "edm"),
    "head": ("linear", "mlp"),
    "amp": ("auto", "bf16", "off"),
    "parallel": ("ddp", "fsdp"),
    "prefetch": ("auto", "on", "off"),
}


def validate(cfg: Config) -> None:
    """Reject settings that cannot work with a message naming the key, the value and what is valid."""
    params = cfg.to_params()
    check_ranges(params, _RANGES)
    check_choices(params, _CHOICES)
    m, t = cfg.model, cfg.train
    if m.width % m.heads:
        raise ValueError(f"width={m.width} must be divisible by heads={m.heads}")
    if cfg.data.min_balls > cfg.data.max_balls:
        raise ValueError(f"min_balls={cfg.data.min_balls} must be <= max_balls={cfg.data.max_balls}")
    if t.batch_size % t.grad_accum:
        raise ValueError(f"batch_size={t.batch_size} must be divisible by grad_accum={t.grad_accum}")
    if t.device not in ("auto", "cpu", "cuda") and not t.device.startswith("cuda:"):
        raise ValueError(f"parameter device={t.device!r}: choose auto, cpu, cuda or cuda:N")
    if t.resume and t.overwrite:
        raise ValueError("resume=true and overwrite=true contradict each other: choose one")
    if cfg.diffusion.t_location != 0 and cfg.diffusion.t_sampling != "logit_normal":
        raise ValueError(f"t_location={cfg.diffusion.t_location} moves the logit-normal t: add t_sampling=logit_normal")
    parse_stages(t.stages, t.clips, t.frames_per_clip, t.steps)
