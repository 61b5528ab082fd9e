"""Video data: two synthetic worlds made by the code itself, and two loaders for real files.

Every dataset returns the same dict per sample::

    {"video":   float32 (T, C, H, W) in [-1, 1],
     "label":   int (class index; -1 = unknown),
     "caption": str,
     "masks":   int64 (T, H, W), 0 = background, 1..n = object ids}

and exposes ``num_frames``, ``image_size``, ``channels``, ``classes`` and ``num_classes``.

- :class:`BouncingBalls` — 1-3 coloured balls under gravity, elastic wall and ball-ball collisions.
- :class:`MovingGlyphs` — Moving-MNIST-like: 1-2 hand-drawn stroke digits bouncing in a 64x64 box.
- :class:`MovingMNIST` — the standard ``mnist_test_seq.npy`` (uint8, ``(T, N, 64, 64)``).
- :class:`MovingMNISTDigits` — the standard Moving MNIST *generator*, on the fly from MNIST digit files
  (IDX format): the field's training protocol.
- :class:`VideoFolder` — a folder of .mp4/.avi/.gif files, decoded with PyAV.

The synthetic sets (and the digit generator) are seeded: sample ``i`` is a pure function of
``(seed, i)`` (its generator is ``numpy.random.default_rng([seed, i])``), so any access order gives
bit-identical samples and nothing is stored or downloaded. :func:`make_dataset` parses the ``data=...``
strings of the command line.

Train / validation split of real data (``split="train" | "val" | "all"``): the last
``VAL_FRACTION`` (10 %) of the items by index are validation, the rest training, never both: the
sequences of the .npy file, the clips of a video folder (in file order, so at most one file straddles
the boundary), the digits of the MNIST files. Synthetic sets are split by seed instead (the caller
draws validation from another seed), so ``split`` does not change them.

Derived in notebooks/01 (§ data).
"""

from __future__ import annotations

import difflib
import gzip
import math
import struct
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth"]
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight"]

# Fixed named palette for the balls (RGB in [0, 1]); a scene never repeats a colour.
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.92, 0.16, 0.16),
    "green": (0.16, 0.80, 0.24),
    "blue": (0.22, 0.38, 0.96),
    "yellow": (0.95, 0.88, 0.16),
    "cyan": (0.16, 0.86, 0.88),
    "magenta": (0.88, 0.22, 0.88),
    "orange": (0.98, 0.56, 0.08),
    "white": (0.95, 0.95, 0.95),
}


def _to_tensor_sample(video: np.ndarray, label: int, caption: str, masks: np.ndarray) -> dict:
    """Pack numpy arrays (video in [0, 1], (T, C, H, W)) into the sample dict (video in [-1, 1])."""
    return {
        "video": torch.from_numpy(np.ascontiguousarray(video * 2 - 1, dtype=np.float32)),
        "label": int(label),
        "caption": caption,
        "masks": torch.from_numpy(np.ascontiguousarray(masks, dtype=np.int64)),
    }


def _direction_words(vx: float, vy: float) -> str:
    """Compass words for a velocity in image coordinates (y grows downwards): 'up and right', 'left'..."""
    speed = math.hypot(vx, vy)
    if speed == 0:
        return "still"
    parts = []
    if abs(vy) > 0.38 * speed:  # sin(22.5 deg): 8 compass sectors
        parts.append("down" if vy > 0 else "up")
    if abs(vx) > 0.38 * speed:
        parts.append("right" if vx > 0 else "left")
    return " and ".join(parts)


VAL_FRACTION = 0.1  # the last 10 % of a real dataset's items (by index) are its validation split
SPLITS = ("all", "train", "val")


def split_indices(n: int, split: str, what: str = "items", val_fraction: float = VAL_FRACTION) -> range:
    """The indices of ``split`` among ``n`` items: ``"val"`` is the last ``ceil(val_fraction * n)`` of
    them, ``"train"`` the rest, ``"all"`` every one. A split needs at least 2 items (one of each)."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: choose one of {', '.join(SPLITS)}")
    if split == "all":
        return range(n)
    if n < 2:
        raise ValueError(f"split={split!r} needs at least 2 {what} (one for training, one for validation), got {n}")
    n_val = min(max(1, math.ceil(val_fraction * n)), n - 1)
    return range(n - n_val, n) if split == "val" else range(n - n_val)


# ----------------------------------------------------------------------------------------------------
# Bouncing balls


class BouncingBalls(Dataset):
    """Coloured balls falling under gravity in a box, with elastic wall and ball-ball collisions.

    The physics runs in box units (the box is ``[0, 1] x [0, 1]``, y grows downwards, time in frames),
    so radii and speeds scale with ``image_size``. Each frame is ``substeps`` semi-implicit Euler steps;
    walls reflect, and touching balls exchange an elastic impulse along the line of centres (masses
    proportional to area, or equal). Balls are drawn in order with anti-aliased edges on black.

    Labels (``num_classes = 2 * max_balls``; 6 with the defaults)::

        label = 2 * (num_balls - 1) + drift_right

    where ``drift_right`` is 1 if the mean x of the ball centres is larger in the last frame than in the
    first (the scene drifts right), else 0. ``classes[label]`` reads e.g. ``"2 balls, drifting left"``.
    Both parts are visible in the video. Labels below ``2 * (min_balls - 1)`` simply never occur.

    Captions name the count, the colours and what happens, e.g.
    ``"two balls: red falls onto blue, blue bounces on the floor, drifting right"``.

    Masks hold object ids: 0 background, ``k`` for the k-th ball (1-based, same order as the caption's
    colour list); where balls overlap, the later-drawn (higher id) ball wins.
    """

    def __init__(
        self,
        num_samples: int = 1024,
        num_frames: int = 16,
        image_size: int = 32,
        min_balls: int = 1,
        max_balls: int = 3,
        seed: int = 0,
        gravity: float = 0.004,
        substeps: int = 8,
        radius_range: tuple[float, float] = (0.08, 0.13),
        speed_range: tuple[float, float] = (0.06, 0.11),
        equal_mass: bool = False,
    ):
        if not 1 <= min_balls <= max_balls <= len(PALETTE):
            raise ValueError(
                f"need 1 <= min_balls <= max_balls <= {len(PALETTE)} (palette size), "
                f"got min_balls={min_balls}, max_balls={max_balls}"
            )
        if num_frames < 1 or image_size < 8 or substeps < 1:
            raise ValueError(
                f"need num_frames >= 1, image_size >= 8, substeps >= 1; "
                f"got {num_frames}, {image_size}, {substeps}"
            )
        self.num_samples = num_samples
        self.num_frames = num_frames
        self.image_size = image_size
        self.channels = 3
        self.min_balls, self.max_balls = min_balls, max_balls
        self.seed = seed
        self.gravity, self.substeps = gravity, substeps
        self.radius_range, self.speed_range = radius_range, speed_range
        self.equal_mass = equal_mass
        self.classes = [
            f"{n} ball{'s' if n > 1 else ''}, drifting {side}"
            for n in range(1, max_balls + 1)
            for side in ("left", "right")
        ]
        self.num_classes = len(self.classes)
        self.colour_names = list(PALETTE)
        self._colours = np.array(list(PALETTE.values()), dtype=np.float32)

    def __len__(self) -> int:
        return self.num_samples

    # -- physics -------------------------------------------------------------------------------------

    def simulate(self, index: int) -> dict:
        """Run the physics of sample ``index`` (no rendering).

        Returns a dict of numpy arrays in box units: ``pos`` (T, n, 2) ball centres (x, y), ``vel``
        (T, n, 2) per frame, ``radius`` (n,), ``mass`` (n,), ``colours`` (n,) palette indices, and
        ``events``: a list of ``(frame, kind, i, j)`` with kind in {"ball", "floor", "ceiling", "left",
        "right"} (j = -1 for walls).
        """
        rng = np.random.default_rng([self.seed, index])
        n = int(rng.integers(self.min_balls, self.max_balls + 1))
        colours = rng.choice(len(PALETTE), size=n, replace=False)
        radius = rng.uniform(*self.radius_range, size=n)
        pos = self._place(rng, radius)
        angle = rng.uniform(0, 2 * math.pi, size=n)
        speed = rng.uniform(*self.speed_range, size=n)
        vel = np.stack([speed * np.cos(angle), speed * np.sin(angle)], axis=1)
        mass = np.ones(n) if self.equal_mass else radius**2

        # Plain Python floats: with <= a few balls this is much faster than numpy on tiny arrays.
        x, y = pos[:, 0].tolist(), pos[:, 1].tolist()
        vx, vy = vel[:, 0].tolist(), vel[:, 1].tolist()
        r, m = radius.tolist(), mass.tolist()
        g, dt = self.gravity, 1.0 / self.substeps
        T = self.num_frames
        out_pos = np.empty((T, n, 2))
        out_vel = np.empty((T, n, 2))
        out_pos[0], out_vel[0] = pos, vel
        events: list[tuple[int, str, int, int]] = []
        touching = set()  # pairs in contact during the previous sub-step (one event per contact)
        for t in range(1, T):
            for _ in range(self.substeps):
                for k in range(n):
                    vy[k] += g * dt
                    x[k] += vx[k] * dt
                    y[k] += vy[k] * dt
                for i in range(n):
                    for j in range(i + 1, n):
                        dx, dy = x[j] - x[i], y[j] - y[i]
                        dist = math.hypot(dx, dy)
                        overlap = r[i] + r[j] - dist
                        if overlap <= 0:
                            touching.discard((i, j))
                            continue
                        nx, ny = (dx / dist, dy / dist) if dist > 1e-9 else (1.0, 0.0)
                        rel = (vx[j] - vx[i]) * nx + (vy[j] - vy[i]) * ny
                        if rel < 0:  # approaching: elastic impulse along the normal
                            ci, cj = 2 * m[j] / (m[i] + m[j]) * rel, 2 * m[i] / (m[i] + m[j]) * rel
                            vx[i] += ci * nx
                            vy[i] += ci * ny
                            vx[j] -= cj * nx
                            vy[j] -= cj * ny
                        wi, wj = m[j] / (m[i] + m[j]), m[i] / (m[i] + m[j])  # push apart
                        x[i] -= nx * overlap * wi
                        y[i] -= ny * overlap * wi
                        x[j] += nx * overlap * wj
                        y[j] += ny * overlap * wj
                        if (i, j) not in touching:
                            touching.add((i, j))
                            events.append((t, "ball", i, j))
                for k in range(n):
                    if x[k] < r[k]:
                        x[k], vx[k] = 2 * r[k] - x[k], abs(vx[k])
                        events.append((t, "left", k, -1))
                    elif x[k] > 1 - r[k]:
                        x[k], vx[k] = 2 * (1 - r[k]) - x[k], -abs(vx[k])
                        events.append((t, "right", k, -1))
                    if y[k] < r[k]:
                        y[k], vy[k] = 2 * r[k] - y[k], abs(vy[k])
                        events.append((t, "ceiling", k, -1))
                    elif y[k] > 1 - r[k]:
                        y[k], vy[k] = 2 * (1 - r[k]) - y[k], -abs(vy[k])
                        events.append((t, "floor", k, -1))
            out_pos[t, :, 0], out_pos[t, :, 1] = x, y
            out_vel[t, :, 0], out_vel[t, :, 1] = vx, vy
        return {
            "pos": out_pos,
            "vel": out_vel,
            "radius": radius,
            "mass": mass,
            "colours": colours,
            "events": events,
        }

    @staticmethod
    def _place(rng: np.random.Generator, radius: np.ndarray) -> np.ndarray:
        """Random non-overlapping centres inside the box, (n, 2) in box units."""
        pos = np.empty((len(radius), 2))
        for k, r in enumerate(radius):
            for _ in range(100):
                p = rng.uniform(r, 1 - r, size=2)
                if all(np.hypot(*(p - pos[j])) > r + radius[j] + 0.01 for j in range(k)):
                    break
            pos[k] = p  # after 100 tries accept an overlap; the collision step separates them
        return pos

    def label_of(self, sim: dict) -> int:
        """Class index of a simulated scene (see the class docstring)."""
        n = sim["pos"].shape[1]
        drift_right = sim["pos"][-1, :, 0].mean() > sim["pos"][0, :, 0].mean()
        return 2 * (n - 1) + int(drift_right)

    # -- text ----------------------------------------------------------------------------------------

    def caption_of(self, sim: dict) -> str:
        """Caption from the scene: count, colours and up to one phrase per ball."""
        n = sim["pos"].shape[1]
        names = [self.colour_names[c] for c in sim["colours"]]
        phrases, described = [], set()
        collisions = [(t, i, j) for t, kind, i, j in sim["events"] if kind == "ball"]
        if collisions:  # describe the first ball-ball collision
            t, i, j = collisions[0]
            (xi, yi), (xj, yj) = sim["pos"][t, i], sim["pos"][t, j]
            vel = sim["vel"][t - 1]  # just before the collision
            top, bottom = (i, j) if yi < yj else (j, i)
            if abs(yj - yi) > abs(xj - xi) and vel[top, 1] > 0:
                phrases.append(f"{names[top]} falls onto {names[bottom]}")
            else:
                fast, slow = (i, j) if np.hypot(*vel[i]) >= np.hypot(*vel[j]) else (j, i)
                phrases.append(f"{names[fast]} hits {names[slow]}")
            described.update((i, j))
        for k in range(n):
            if k in described:
                continue
            walls = [kind for _, kind, a, _ in sim["events"] if a == k and kind != "ball"]
            if "floor" in walls:
                phrases.append(f"{names[k]} bounces on the floor")
            elif walls:
                phrases.append(
                    f"{names[k]} bounces off the {walls[0]}" + ("" if walls[0] == "ceiling" else " wall")
                )
            else:
                v = sim["pos"][-1, k] - sim["pos"][0, k]
                word = _direction_words(*v)
                word = {"down": "falls", "up": "rises"}.get(word, f"moves {word}")
                phrases.append(f"{names[k]} {word}")
        drift = "right" if self.label_of(sim) % 2 else "left"
        head = f"{NUMBER_WORDS[n]} ball{'s' if n > 1 else ''}"
        return f"{head}: {', '.join(phrases)}, drifting {drift}"

    # -- pixels --------------------------------------------------------------------------------------

    def render(self, sim: dict) -> tuple[np.ndarray, np.ndarray]:
        """Draw a simulated scene.

        Returns ``video`` float32 (T, 3, H, W) in [0, 1] and ``masks`` int64 (T, H, W).
        """
        S = self.image_size
        centres = (sim["pos"] * S).astype(np.float32)  # (T, n, 2) in pixels
        radius = (sim["radius"] * S).astype(np.float32)  # (n,)
        grid = np.arange(S, dtype=np.float32) + 0.5  # pixel centres
        dx = grid[None, None, None, :] - centres[:, :, 0, None, None]  # (T, n, 1, W)
        dy = grid[None, None, :, None] - centres[:, :, 1, None, None]  # (T, n, H, 1)
        dist = np.sqrt(dx * dx + dy * dy)  # (T, n, H, W)
        alpha = np.clip(radius[None, :, None, None] + 0.5 - dist, 0.0, 1.0)  # 1-pixel soft edge
        T, n = centres.shape[:2]
        video = np.zeros((T, 3, S, S), dtype=np.float32)
        masks = np.zeros((T, S, S), dtype=np.int64)
        for k in range(n):
            a = alpha[:, k, None]  # (T, 1, H, W)
            video += a * (self._colours[sim["colours"][k]][:, None, None] - video)
            masks[alpha[:, k] >= 0.5] = k + 1
        return video, masks

    def __getitem__(self, index: int) -> dict:
        """Sample ``index``: video (T, 3, H, W) in [-1, 1], label, caption, masks (T, H, W)."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        sim = self.simulate(index)
        video, masks = self.render(sim)
        return _to_tensor_sample(video, self.label_of(sim), self.caption_of(sim), masks)


# ----------------------------------------------------------------------------------------------------
# Moving glyphs


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 14) -> list:
    """Points on an elliptic arc from angle a0 to a1 (degrees, counter-clockwise, y grows downwards)."""
    a = np.radians(np.linspace(a0, a1, n))
    return list(zip((cx + rx * np.cos(a)).tolist(), (cy - ry * np.sin(a)).tolist()))


# A small stroke font: each digit is a list of polylines in the unit box (x right, y down).
STROKE_DIGITS: dict[int, list[list[tuple[float, float]]]] = {
    0: [_arc(0.5, 0.5, 0.33, 0.45, 0, 360, 24)],
    1: [[(0.3, 0.22), (0.55, 0.05), (0.55, 0.95)]],
    2: [_arc(0.5, 0.3, 0.32, 0.25, 160, -30) + [(0.15, 0.95), (0.85, 0.95)]],
    3: [_arc(0.5, 0.28, 0.3, 0.23, 150, -90) + _arc(0.5, 0.72, 0.33, 0.23, 90, -150)],
    4: [[(0.68, 0.95), (0.68, 0.05), (0.12, 0.68), (0.9, 0.68)]],
    5: [[(0.82, 0.05), (0.28, 0.05), (0.24, 0.47)] + _arc(0.5, 0.68, 0.32, 0.27, 140, -150)],
    6: [_arc(0.55, 0.7, 0.35, 0.65, 75, 180) + _arc(0.5, 0.7, 0.3, 0.25, 180, 540, 24)],
    7: [[(0.15, 0.05), (0.85, 0.05), (0.4, 0.95)]],
    8: [_arc(0.5, 0.27, 0.26, 0.22, 270, 630, 20), _arc(0.5, 0.72, 0.32, 0.23, 90, 450, 20)],
    9: [_arc(0.5, 0.3, 0.3, 0.25, 0, 360, 24) + _arc(0.45, 0.3, 0.35, 0.65, 0, -105)],
}


def draw_digit(digit: int, size: int, stroke: float = 0.11, shear: float = 0.0) -> np.ndarray:
    """Render one stroke digit as a float32 (size, size) bitmap in [0, 1] (4x supersampled, box-filtered).

    ``stroke`` is the pen width as a fraction of ``size``; ``shear`` slants it (positive leans right).
    """
    ss = 4  # supersampling factor
    big = size * ss
    width = max(1.0, stroke * big)
    margin = width / 2 + ss
    img = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(img)
    for line in STROKE_DIGITS[digit]:
        pts = [
            (margin + (x + shear * (0.5 - y)) * (big - 2 * margin), margin + y * (big - 2 * margin))
            for x, y in line
        ]
        draw.line(pts, fill=255, width=round(width), joint="curve")
        for px, py in (pts[0], pts[-1]):  # round caps
            draw.ellipse([px - width / 2, py - width / 2, px + width / 2, py + width / 2], fill=255)
    img = img.resize((size, size), Image.Resampling.BOX)
    return np.asarray(img, dtype=np.float32) / 255.0


class MovingGlyphs(Dataset):
    """Moving-MNIST-like: 1-2 digits (drawn by :func:`draw_digit`) bouncing off the walls.

    Each glyph is about 24-28 px on a 64x64 canvas (scaled with ``image_size``), with a random pen
    width and slant, moving at a constant speed of a few pixels per frame in a random direction and
    reflecting off the walls. Overlapping glyphs combine by maximum, as in Moving MNIST.

    Labels: ``label`` = the digit of the first glyph (10 classes, ``classes = ["0", ..., "9"]``).
    Captions: ``"digit 3 moves up and right, then bounces off the top wall"`` or
    ``"digits 3 and 7: 3 moves left, 7 moves down and right"`` (directions of the initial motion).
    Masks: 0 background, ``k`` where glyph k (1-based) covers the pixel by at least half; the later glyph
    wins overlaps.
    """

    def __init__(
        self,
        num_samples: int = 1024,
        num_frames: int = 16,
        image_size: int = 64,
        min_digits: int = 1,
        max_digits: int = 2,
        seed: int = 0,
        channels: int = 1,
        speed_range: tuple[float, float] = (2.5, 4.0),
    ):
        if not 1 <= min_digits <= max_digits <= len(ORDINALS):
            raise ValueError(
                f"need 1 <= min_digits <= max_digits <= {len(ORDINALS)}, got {min_digits}, {max_digits}"
            )
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {image_size}")
        self.num_samples = num_samples
        self.num_frames = num_frames
        self.image_size = image_size
        self.channels = channels
        self.min_digits, self.max_digits = min_digits, max_digits
        self.seed = seed
        self.speed_range = speed_range  # pixels per frame at 64x64; scaled with image_size
        self.classes = [str(d) for d in range(10)]
        self.num_classes = 10

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict:
        """Sample ``index``: video (T, C, H, W) in [-1, 1], label (first digit), caption, masks (T, H, W)."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        rng = np.random.default_rng([self.seed, index])
        S, T = self.image_size, self.num_frames
        scale = S / 64
        n = int(rng.integers(self.min_digits, self.max_digits + 1))
        digits = rng.integers(0, 10, size=n).tolist()
        frames = np.zeros((T, S, S), dtype=np.float32)
        masks = np.zeros((T, S, S), dtype=np.int64)
        motions = []
        for k, digit in enumerate(digits):
            size = int(rng.integers(round(24 * scale), round(28 * scale) + 1))
            glyph = draw_digit(digit, size, stroke=rng.uniform(0.09, 0.13), shear=rng.uniform(-0.2, 0.2))
            limit = S - size
            p = rng.uniform(0, limit, size=2)  # top-left (x, y)
            angle = rng.uniform(0, 2 * math.pi)
            v = rng.uniform(*self.speed_range) * scale * np.array([math.cos(angle), math.sin(angle)])
            motions.append((_direction_words(*v), []))
            for t in range(T):
                x, y = (int(round(c)) for c in p)
                window = frames[t, y : y + size, x : x + size]
                np.maximum(window, glyph, out=window)
                masks[t, y : y + size, x : x + size][glyph >= 0.5] = k + 1
                p = p + v
                for axis, (low, high) in enumerate((("left", "right"), ("top", "bottom"))):
                    if p[axis] < 0:
                        p[axis], v[axis] = -p[axis], -v[axis]
                        motions[-1][1].append(low)
                    elif p[axis] > limit:
                        p[axis], v[axis] = 2 * limit - p[axis], -v[axis]
                        motions[-1][1].append(high)
        if n == 1:
            direction, walls = motions[0]
            caption = f"digit {digits[0]} moves {direction}"
            if walls:
                caption += f", then bounces off the {walls[0]} wall"
        else:
            head = "digits " + ", ".join(map(str, digits[:-1])) + f" and {digits[-1]}"
            names = [str(d) for d in digits]
            if len(set(digits)) < n:  # repeated digit: "the first moves ..., the second moves ..."
                names = [f"the {w}" for w in ORDINALS[:n]]
            caption = head + ": " + ", ".join(f"{name} moves {m[0]}" for name, m in zip(names, motions))
        video = repeat(frames, "t h w -> t c h w", c=self.channels)
        return _to_tensor_sample(video, digits[0], caption, masks)


# ----------------------------------------------------------------------------------------------------
# Real data: Moving MNIST .npy


class MovingMNIST(Dataset):
    """The standard Moving MNIST file (``mnist_test_seq.npy``: uint8, shape ``(T, N, 64, 64)``, T = 20).

    The file is memory-mapped, so opening it is instant. Sample ``i`` is sequence ``i``:

    - ``video`` (num_frames, 1, S, S) in [-1, 1] (the first ``num_frames`` frames; S = ``image_size``,
      64 unless resized with area interpolation),
    - ``label`` -1: the file has no class labels (the digits are unknown),
    - ``caption`` "",
    - ``masks`` (num_frames, S, S) = (pixel > 0) as int64: a foreground mask (0/1), not instance ids.

    ``split``: ``"all"`` (every sequence), ``"train"`` or ``"val"`` (the last ``VAL_FRACTION`` of the
    sequences by index; see :func:`split_indices`); sample ``i`` is then the split's i-th sequence.
    """

    EXPECTED = "a uint8 .npy array of shape (T, N, 64, 64) (the standard mnist_test_seq.npy)"

    def __init__(
        self,
        path: str | Path,
        num_frames: int | None = None,
        image_size: int | None = None,
        split: str = "all",
    ):
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"Moving MNIST file not found: {path}; expected {self.EXPECTED}")
        try:
            data = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as err:
            raise ValueError(f"cannot read {path} as .npy ({err}); expected {self.EXPECTED}") from err
        if not isinstance(data, np.ndarray):
            raise ValueError(f"{path} holds {type(data).__name__}, not one array; expected {self.EXPECTED}")
        if data.ndim != 4 or data.shape[2:] != (64, 64):
            raise ValueError(f"{path} has shape {data.shape}; expected {self.EXPECTED}")
        if data.dtype != np.uint8:
            raise ValueError(f"{path} has dtype {data.dtype}; expected {self.EXPECTED}")
        T = data.shape[0]
        num_frames = T if num_frames is None else num_frames
        if not 1 <= num_frames <= T:
            raise ValueError(f"{path} has {T} frames per sequence, but num_frames={num_frames} was asked for")
        self.path = path
        self.data = data
        self.split = split
        self.indices = split_indices(data.shape[1], split, f"sequences in {path}")
        self.num_frames = num_frames
        self.image_size = image_size or 64
        self.channels = 1
        self.classes: list[str] = []  # no labels in the file; every label is -1
        self.num_classes = 0

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict:
        """Sequence ``index`` of the split: video (T, 1, S, S) in [-1, 1], label -1, caption "", masks
        (T, S, S) 0/1."""
        sequence = self.indices[index]  # IndexError past the end
        frames = torch.from_numpy(np.array(self.data[: self.num_frames, sequence]))  # (T, 64, 64) uint8
        video = rearrange(frames, "t h w -> t 1 h w").float()
        if self.image_size != 64:
            video = F.interpolate(video, size=(self.image_size,) * 2, mode="area")
        masks = (video[:, 0] > 0).long()
        return {"video": video / 127.5 - 1, "label": -1, "caption": "", "masks": masks}


# ----------------------------------------------------------------------------------------------------
# Real data: Moving MNIST generated from MNIST digit files (IDX)

IDX_IMAGES, IDX_LABELS = 0x00000803, 0x00000801  # magic numbers: uint8 3-d array, uint8 1-d array


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic (whatever its name)."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise ValueError(f"{path}: truncated or damaged gzip file ({err})") from err
    return raw


def read_idx(path: str | Path, expect: int | None = None) -> np.ndarray:
    """Read an IDX file (MNIST's format; raw or gzipped) as a uint8 array.

    Layout: a big-endian magic ``0x000008DD`` (``08`` = uint8, ``DD`` = number of dims), one big-endian
    uint32 per dim, then the data. ``expect`` (``IDX_IMAGES`` or ``IDX_LABELS``) checks the magic.
    Errors name the file and what was expected.
    """
    path = Path(path)
    want = "an IDX file" if expect is None else f"an IDX file with magic 0x{expect:08X}"
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}; expected {want}")
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{path}: {len(data)} bytes, too short for an IDX header; expected {want}")
    (magic,) = struct.unpack(">I", data[:4])
    if (expect is not None and magic != expect) or magic >> 8 != 0x08 or not 1 <= magic & 0xFF <= 3:
        raise ValueError(f"{path}: magic 0x{magic:08X}; expected {want} (0x{IDX_IMAGES:08X} images, "
                         f"0x{IDX_LABELS:08X} labels)")
    ndim = magic & 0xFF
    if len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path}: header truncated; expected {ndim} dimension sizes after the magic")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    size = int(np.prod(shape))
    body = data[4 + 4 * ndim :]
    if len(body) != size:
        raise ValueError(
            f"{path}: header says shape {shape} ({size} bytes) but the file holds {len(body)} bytes of data "
            "(truncated or not an IDX file)"
        )
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def _idx_magic(path: Path) -> int | None:
    """The first 4 bytes of a file (gunzipped if gzipped) as a big-endian number; None if unreadable."""
    try:
        with path.open("rb") as f:
            head = f.read(2)
        if head == b"\x1f\x8b":
            with gzip.open(path, "rb") as f:
                head = f.read(4)
        else:
            with path.open("rb") as f:
                head = f.read(4)
    except (OSError, EOFError):
        return None
    if len(head) < 4:
        return None
    return struct.unpack(">I", head)[0]


def find_mnist_files(root: str | Path) -> tuple[list[Path], list[Path]]:
    """The MNIST image and label files in ``root``, found by their IDX magic (``0x00000803`` images,
    ``0x00000801`` labels), not by name, each list sorted by name. A file whose name says IDX
    (``*idx*``/``*-ubyte*``) but whose magic is neither raises ``ValueError`` naming it."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"MNIST folder not found: {root} (expected IDX files such as "
                                "train-images-idx3-ubyte.gz inside)")
    if not root.is_dir():
        raise NotADirectoryError(f"moving_mnist_digits expects a folder of MNIST IDX files, got the file {root}")
    images, labels = [], []
    for path in sorted(p for p in root.iterdir() if p.is_file()):
        magic = _idx_magic(path)
        if magic == IDX_IMAGES:
            images.append(path)
        elif magic == IDX_LABELS:
            labels.append(path)
        elif "idx" in path.name.lower() or "ubyte" in path.name.lower():
            found = "unreadable" if magic is None else f"magic 0x{magic:08X}"
            raise ValueError(
                f"{path}: {found}, not an MNIST IDX file; expected magic 0x{IDX_IMAGES:08X} (images, shape "
                f"(N, 28, 28)) or 0x{IDX_LABELS:08X} (labels, shape (N,))"
            )
    if not images:
        seen = ", ".join(p.name for p in sorted(root.iterdir())[:5]) or "nothing"
        raise FileNotFoundError(
            f"no MNIST image file in {root}: expected an IDX file (raw or .gz) with magic 0x{IDX_IMAGES:08X} "
            f"holding uint8 digits of shape (N, 28, 28), e.g. train-images-idx3-ubyte.gz; found {seen}"
        )
    return images, labels


class MovingMNISTDigits(Dataset):
    """Moving MNIST generated on the fly from MNIST digits, as the field trains on it.

    The generator of Srivastava et al. (2015) as used by OpenSTL: ``digits`` digits (2) of 28x28 on a
    64x64 canvas, each at a uniformly random position with a uniformly random direction at a constant speed
    of ``step_length`` (0.1) of the free range per frame (3.6 pixels); a digit that reaches a wall is put on
    it and its velocity component is reversed (it bounces); digits are combined by pixelwise maximum.
    Positions are truncated to whole pixels. With ``image_size != 64`` the frames are resized (area).

    Files: the folder's IDX files, found by their magic (:func:`find_mnist_files`), raw or gzipped; several
    image files are concatenated in name order; label files are optional and, when present, must pair with
    the image files (same count, same lengths).

    Split: the digits (not the sequences) are split by index: the last ``VAL_FRACTION`` (10 %) of them
    are ``split="val"``, the rest ``"train"`` (``"all"``: every digit), so validation sequences show only
    digits never seen in training. Sample ``i`` is a pure function of ``(seed, i)`` and the split.

    Sample: ``video`` (num_frames, 1, S, S) in [-1, 1]; ``label`` the class of the first digit (-1 without
    label files); ``caption`` e.g. ``"digits 3 and 7"`` ("" without labels); ``masks`` (T, S, S) with ``k``
    where digit k (1-based) is at least half bright (the later digit wins); ``corners`` (digits, T, 2)
    int64, each digit's top-left corner (y, x) on the 64-pixel canvas per frame, and ``digits`` (digits,)
    int64, their classes (-1 without labels): where to read each digit (:mod:`minivgpt.legibility`).
    """

    def __init__(
        self,
        root: str | Path,
        num_samples: int = 10000,
        num_frames: int = 20,
        image_size: int = 64,
        seed: int = 0,
        split: str = "all",
        digits: int = 2,
        step_length: float = 0.1,
        canvas: int = 64,
    ):
        if num_frames < 1 or digits < 1 or image_size < 1:
            raise ValueError(f"need num_frames, digits, image_size >= 1; got {num_frames}, {digits}, {image_size}")
        image_files, label_files = find_mnist_files(root)
        arrays = []
        for path in image_files:
            a = read_idx(path, IDX_IMAGES)
            if a.ndim != 3 or a.shape[1] > canvas or a.shape[2] > canvas or a.shape[0] == 0:
                raise ValueError(f"{path}: images of shape {a.shape}; expected (N, 28, 28) uint8 digits")
            arrays.append(a)
        if len({a.shape[1:] for a in arrays}) > 1:
            raise ValueError(f"{root}: image files of different digit sizes {[a.shape for a in arrays]}")
        self.images = np.concatenate(arrays)  # (N, 28, 28) uint8
        self.labels = None
        if label_files:
            labels = [read_idx(path, IDX_LABELS) for path in label_files]
            if len(labels) != len(arrays) or any(len(lab) != len(a) for lab, a in zip(labels, arrays)):
                raise ValueError(
                    f"{root}: label files {[p.name for p in label_files]} ({[len(x) for x in labels]} labels) "
                    f"do not pair with image files {[p.name for p in image_files]} ({[len(a) for a in arrays]} "
                    "digits); keep one label file per image file, or none"
                )
            self.labels = np.concatenate(labels).astype(np.int64)
        self.root = Path(root)
        self.split = split
        self.digit_indices = split_indices(len(self.images), split, f"digits in {root}")
        self.num_samples = num_samples
        self.num_frames = num_frames
        self.image_size = image_size
        self.canvas = canvas
        self.channels = 1
        self.seed = seed
        self.digits = digits
        self.step_length = step_length
        self.classes = [str(d) for d in range(10)] if self.labels is not None else []
        self.num_classes = len(self.classes)

    def __len__(self) -> int:
        return self.num_samples

    def trajectory(self, rng: np.random.Generator) -> np.ndarray:
        """Top-left corners ``(T, 2)`` (y, x) in whole pixels of one digit bouncing in the canvas."""
        side = self.images.shape[1]
        free = self.canvas - side
        y, x = rng.random(2)
        theta = rng.random() * 2 * math.pi
        vy, vx = math.sin(theta) * self.step_length, math.cos(theta) * self.step_length
        out = np.empty((self.num_frames, 2), dtype=np.int64)
        for t in range(self.num_frames):
            y, x = y + vy, x + vx
            if x <= 0 or x >= 1:
                x, vx = min(max(x, 0.0), 1.0), -vx
            if y <= 0 or y >= 1:
                y, vy = min(max(y, 0.0), 1.0), -vy
            out[t] = int(free * y), int(free * x)
        return out

    def __getitem__(self, index: int) -> dict:
        """Sample ``index``: video (T, 1, S, S) in [-1, 1], label, caption, masks (T, S, S)."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        rng = np.random.default_rng([self.seed, index])
        side = self.images.shape[1]
        T, S = self.num_frames, self.canvas
        frames = np.zeros((T, S, S), dtype=np.uint8)
        masks = np.zeros((T, S, S), dtype=np.int64)
        chosen, paths = [], []
        for k in range(self.digits):
            corners = self.trajectory(rng)
            paths.append(corners)
            digit = self.digit_indices[int(rng.integers(len(self.digit_indices)))]
            chosen.append(digit)
            image = self.images[digit]
            for t, (y, x) in enumerate(corners):
                window = frames[t, y : y + side, x : x + side]
                np.maximum(window, image, out=window)
                masks[t, y : y + side, x : x + side][image >= 128] = k + 1
        video = torch.from_numpy(frames).float().div_(127.5).sub_(1).unsqueeze(1)  # (T, 1, S, S)
        mask = torch.from_numpy(masks)
        if self.image_size != S:
            video = F.interpolate(video, size=(self.image_size,) * 2, mode="area")
            mask = F.interpolate(mask[:, None].float(), size=(self.image_size,) * 2, mode="nearest")[:, 0].long()
        digits = [-1] * len(chosen) if self.labels is None else [int(self.labels[d]) for d in chosen]
        names = [str(d) for d in digits]
        caption = "" if self.labels is None else (
            f"digit {names[0]}" if len(names) == 1 else f"digits {', '.join(names[:-1])} and {names[-1]}")
        return {"video": video, "label": digits[0], "caption": caption, "masks": mask,
                "corners": torch.from_numpy(np.stack(paths)), "digits": torch.tensor(digits, dtype=torch.int64)}


# ----------------------------------------------------------------------------------------------------
# Real data: a folder of video files

VIDEO_EXTENSIONS = (".mp4", ".avi", ".gif", ".mov", ".mkv", ".webm")


def _open_video(path: Path):
    """Open a video with PyAV (imported here, so the synthetic data needs no video decoder)."""
    try:
        import av
    except ImportError as e:
        raise ImportError("reading video files needs PyAV: pip install av (it is in minivgpt's dependencies)") from e
    return av.open(str(path))


def _decode_frames(path: Path, start: int = 0, count: int | None = None) -> list[np.ndarray]:
    """Decode frames ``start .. start+count-1`` (all if count is None) as uint8 (h, w, 3) RGB arrays."""
    frames = []
    with _open_video(path) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        for i, frame in enumerate(container.decode(video=0)):
            if i < start:
                continue
            frames.append(frame.to_ndarray(format="rgb24"))
            if count is not None and len(frames) == count:
                break
    return frames


def _count_frames(path: Path) -> int:
    """Number of decodable frames (decodes every frame, without colour conversion)."""
    with _open_video(path) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        return sum(1 for _ in container.decode(video=0))


def _square_resize(frames: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (T, h, w, 3) -> float32 (T, 3, size, size) in [-1, 1]: centre crop to a square, then resize."""
    video = rearrange(torch.from_numpy(frames), "t h w c -> t c h w").float()
    h, w = video.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    video = video[..., top : top + side, left : left + side]
    if side != size:
        video = F.interpolate(video, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return (video / 127.5 - 1).clamp_(-1, 1)


class VideoFolder(Dataset):
    """Video files under ``root`` (searched recursively), cut into clips of ``frames`` frames.

    Layout, ImageFolder-style: ``root/<class>/**/*.mp4`` gives ``classes`` = the sorted names of the
    immediate subfolders that hold videos, and ``label`` = the index of the file's top-level subfolder.
    A flat folder (videos only directly in ``root``) is one class, label 0; when class subfolders exist,
    videos lying directly in ``root`` are skipped (they have no class).

    Each file gives up to ``clips_per_file`` non-overlapping clips (default: as many as fit). Frames are
    decoded with PyAV, centre-cropped to a square and resized to ``size x size``, 3 channels. Sample:
    ``video`` (frames, 3, size, size) in [-1, 1], ``label``, ``caption`` = the file stem with ``_`` and
    ``-`` read as spaces, ``masks`` all zeros (no object annotations).

    On construction every file is probed (opened and fully decoded to count its frames). Files that
    cannot be read or have fewer than ``frames`` frames are skipped with one warning listing how many;
    with ``strict=True`` the first such file raises ``ValueError`` instead.

    ``split``: ``"all"``, ``"train"`` or ``"val"``: the last ``VAL_FRACTION`` of the clips in file order
    (see :func:`split_indices`), so validation is mostly whole files.
    """

    def __init__(
        self,
        root: str | Path,
        frames: int,
        size: int,
        clips_per_file: int | None = None,
        strict: bool = False,
        extensions: tuple[str, ...] = VIDEO_EXTENSIONS,
        split: str = "all",
    ):
        root = Path(root)
        if not root.exists():
            raise FileNotFoundError(f"video folder not found: {root}")
        if not root.is_dir():
            raise NotADirectoryError(f"VideoFolder expects a directory of video files, got the file {root}")
        if frames < 1 or size < 1:
            raise ValueError(f"need frames >= 1 and size >= 1, got frames={frames}, size={size}")
        if split not in SPLITS:
            raise ValueError(f"split={split!r}: choose one of {', '.join(SPLITS)}")
        self.root = root
        self.num_frames = frames
        self.image_size = size
        self.channels = 3
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in extensions and p.is_file())
        subfolders = sorted({p.relative_to(root).parts[0] for p in files if p.parent != root})
        self.classes = subfolders or [root.name]
        self.num_classes = len(self.classes)

        self.files: list[Path] = []
        self.frame_counts: list[int] = []
        self.skipped: list[tuple[Path, str]] = []
        for path in files:
            reason = None
            if subfolders and path.parent == root:
                reason = "not inside a class subfolder"
            else:
                try:
                    count = _count_frames(path)
                except Exception as err:
                    reason = f"unreadable or truncated ({type(err).__name__}: {err})"
                else:
                    if count < frames:
                        reason = f"has {count} frames, need {frames}"
            if reason is None:
                self.files.append(path)
                self.frame_counts.append(count)
            elif strict:
                raise ValueError(f"{path}: {reason}")
            else:
                self.skipped.append((path, reason))

        if not self.files:
            why = "; ".join(f"{p.name}: {r}" for p, r in self.skipped[:3])
            raise ValueError(
                f"no usable video under {root}: expected {'/'.join(extensions)} files with at least "
                f"{frames} frames, found {len(files)} video file(s)" + (f" ({why})" if why else "")
            )
        if self.skipped:
            named = ", ".join(f"{p.relative_to(root)} ({r})" for p, r in self.skipped[:3])
            more = f" and {len(self.skipped) - 3} more" if len(self.skipped) > 3 else ""
            warnings.warn(
                f"VideoFolder({root}): skipped {len(self.skipped)} of {len(files)} video files: "
                f"{named}{more}",
                stacklevel=2,
            )

        # (file index, first frame) of every clip of the split
        clips: list[tuple[int, int]] = []
        for f, count in enumerate(self.frame_counts):
            n = count // frames if clips_per_file is None else min(clips_per_file, count // frames)
            clips += [(f, c * frames) for c in range(n)]
        self.split = split
        self.clips = [clips[i] for i in split_indices(len(clips), split, f"clips under {root}")]

    def __len__(self) -> int:
        return len(self.clips)

    def label_of(self, path: Path) -> int:
        """ImageFolder-style label: index of the file's top-level subfolder (0 for a flat folder)."""
        if len(self.classes) == 1 and path.parent == self.root:
            return 0
        return self.classes.index(path.relative_to(self.root).parts[0])

    def __getitem__(self, index: int) -> dict:
        """Clip ``index``: video (frames, 3, size, size) in [-1, 1], label, caption, masks zeros."""
        f, start = self.clips[index]
        path = self.files[f]
        frames = _decode_frames(path, start, self.num_frames)
        if len(frames) < self.num_frames:
            raise RuntimeError(f"{path}: decoded {len(frames)} frames from {start}, need {self.num_frames}")
        video = _square_resize(np.stack(frames), self.image_size)
        caption = path.stem.replace("_", " ").replace("-", " ")
        masks = torch.zeros(self.num_frames, self.image_size, self.image_size, dtype=torch.int64)
        return {"video": video, "label": self.label_of(path), "caption": caption, "masks": masks}


# ----------------------------------------------------------------------------------------------------
# Factory and batching

DATASET_NAMES = [
    "bouncing_balls", "moving_glyphs", "moving_mnist:PATH.npy", "moving_mnist_digits:DIR", "folder:DIR", "shards:DIR"
]
PATH_ARGS = {"moving_mnist": "PATH.npy", "moving_mnist_digits": "DIR", "folder": "DIR", "shards": "DIR"}


def make_dataset(
    spec: str,
    num_frames: int,
    image_size: int,
    num_samples: int = 1024,
    seed: int = 0,
    split: str = "all",
    **kw,
) -> Dataset:
    """Build a dataset from a ``data=...`` string.

    ``spec`` is one of ``bouncing_balls``, ``moving_glyphs`` (synthetic: ``num_samples`` samples from
    ``seed``), ``moving_mnist_digits:DIR`` (Moving MNIST generated from the MNIST IDX files in DIR:
    ``num_samples`` sequences from ``seed``), ``moving_mnist:PATH.npy`` or ``folder:DIR`` (fixed files:
    every sequence / clip of the split is used, and ``num_samples`` and ``seed`` are ignored), or
    ``shards:DIR`` (clips written once by ``python -m minivgpt.prepare``: :class:`minivgpt.shards.ShardDataset`,
    fixed like files; its ``split`` is the one prepare recorded per clip).

    ``split`` (``"all"``, ``"train"``, ``"val"``) holds out the last ``VAL_FRACTION`` of a real dataset's
    sequences / clips / digits (:func:`split_indices`); synthetic sets are split by ``seed`` instead and
    ignore it. Extra keywords go to the dataset's constructor.
    """
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: choose one of {', '.join(SPLITS)}")
    name, _, arg = spec.partition(":")
    name = name.strip()
    if name == "bouncing_balls":
        return BouncingBalls(num_samples, num_frames, image_size, seed=seed, **kw)
    if name == "moving_glyphs":
        return MovingGlyphs(num_samples, num_frames, image_size, seed=seed, **kw)
    if name in PATH_ARGS:
        if not arg:
            raise ValueError(f"data={spec!r} needs a path: use {name}:{PATH_ARGS[name]}")
        if name == "moving_mnist":
            return MovingMNIST(arg, num_frames=num_frames, image_size=image_size, split=split, **kw)
        if name == "moving_mnist_digits":
            return MovingMNISTDigits(arg, num_samples, num_frames, image_size, seed=seed, split=split, **kw)
        if name == "shards":
            from .shards import ShardDataset  # imported here: shards.py imports this module

            return ShardDataset(arg, num_frames, image_size, split=split, **kw)
        return VideoFolder(arg, frames=num_frames, size=image_size, split=split, **kw)
    bare = [n.split(":")[0] for n in DATASET_NAMES]
    close = difflib.get_close_matches(name, bare, n=1, cutoff=0.0)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown dataset {name!r}; valid names are {', '.join(DATASET_NAMES)}{hint}")


def collate(samples: list[dict]) -> dict:
    """Stack sample dicts: video (B, T, C, H, W), label (B,) int64, masks (B, T, H, W), caption list[str];
    and, where every sample has them (:class:`MovingMNISTDigits`), corners (B, digits, T, 2) and digits
    (B, digits).

    Usable as ``DataLoader(..., collate_fn=collate)``.
    """
    batch = {
        "video": torch.stack([s["video"] for s in samples]),
        "label": torch.tensor([s["label"] for s in samples], dtype=torch.int64),
        "caption": [s["caption"] for s in samples],
        "masks": torch.stack([s["masks"] for s in samples]),
    }
    for key in ("corners", "digits"):
        if all(key in s for s in samples):
            batch[key] = torch.stack([s[key] for s in samples])
    return batch


def video_batch(dataset: Dataset, indices) -> dict:
    """Fetch ``dataset[i]`` for ``i`` in ``indices`` and :func:`collate` them (see there for shapes)."""
    return collate([dataset[int(i)] for i in indices])
