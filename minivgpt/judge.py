"""The judge of generated videos: a small video classifier trained on real videos.

Derived in notebooks/06 (§5 the evaluator). It labels generated videos (class-to-video accuracy), and its
penultimate features feed :func:`minivgpt.metrics.frechet_distance` (a "Fréchet distance on features of
a small video classifier", not FVD on I3D) and the retrieval judge of text-to-video
(:func:`minivgpt.captions.train_retrieval`, scored by :func:`minivgpt.metrics.recall_at_k`).
Trained on real videos, it can read a class from cues that generated videos break; the drift direction is
therefore also read from the pixels (:func:`minivgpt.metrics.horizontal_drift`) beside it, and the count
(:func:`minivgpt.metrics.object_count`): :func:`class_scores` gives both readings.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from . import metrics, optim


class VideoClassifier(nn.Module):
    """A small video CNN for ``(B, T, C, H, W)`` videos in [-1, 1].

    ``features`` are its ``(B, dim)`` penultimate layer.

    Two strided 2-D convolutions per frame (H/4 x W/4 maps), then a 3-D convolution across time (it sees
    motion), GELU and a mean over time and space. Cheap enough to train in seconds on a CPU.
    """

    def __init__(self, channels: int, num_classes: int, dim: int = 64):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(channels, 16, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.GELU(),
        )
        self.temporal = nn.Sequential(nn.Conv3d(32, dim, 3, padding=1), nn.GELU())
        self.fc = nn.Linear(dim, num_classes)

    def features(self, video: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``(B, dim)`` of videos ``(B, T, C, H, W)``."""
        B = video.shape[0]
        h = self.stem(video.flatten(0, 1))  # (B*T, 32, H/4, W/4)
        h = rearrange(h, "(b t) c h w -> b c t h w", b=B)
        return self.temporal(h).mean(dim=(2, 3, 4))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, num_classes)``."""
        return self.fc(self.features(video))


def train_classifier(
    videos: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    steps: int = 300,
    batch_size: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
) -> VideoClassifier:
    """Train :class:`VideoClassifier` on real videos ``(M, T, C, H, W)``, labels ``(M,)`` with cross-entropy.

    AdamW (:func:`minivgpt.optim.make_optimizer`, weight decay 1e-4 on matrices), cosine decay to zero
    (:func:`minivgpt.optim.lr_at`). Returns the classifier in eval mode, frozen.
    """
    return fit_classifier(lambda: VideoClassifier(videos.shape[2], num_classes), videos, labels, steps, batch_size,
                          lr, seed)


def fit_classifier(
    make: Callable[[], nn.Module], inputs: torch.Tensor, labels: torch.Tensor, steps: int, batch_size: int,
    lr: float, seed: int = 0,
) -> nn.Module:
    """Build a classifier with ``make()`` (after seeding torch with ``seed``) and train it on ``inputs (M, ...)``,
    ``labels (M,)`` with cross-entropy: random minibatches of ``batch_size``, AdamW
    (:func:`minivgpt.optim.make_optimizer`, weight decay 1e-4 on matrices), cosine decay to zero
    (:func:`minivgpt.optim.lr_at`). Returns it in eval mode, frozen. The judge's classifier and the digit reader
    of :mod:`minivgpt.legibility` are both trained here."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = make()
    opt = optim.make_optimizer(net, lr, weight_decay=1e-4, betas=(0.9, 0.999))
    for step in range(steps):
        idx = torch.randint(len(inputs), (batch_size,), generator=g)
        optim.set_lr(opt, optim.lr_at(step, lr, steps))
        loss = F.cross_entropy(net(inputs[idx]), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net.eval().requires_grad_(False)


def class_scores(clf: nn.Module, video: torch.Tensor, asked: torch.Tensor, batch_size: int = 64) -> dict[str, float]:
    """How well videos obey the bouncing-balls labels they were asked for, read by the classifier and from the
    pixels (no network).

    Labels are ``2 * (balls - 1) + drifting_right`` (:class:`minivgpt.data.BouncingBalls`). The pixel
    readings: the count is the median over the frames of :func:`minivgpt.metrics.object_count`, the drift
    the sign of :func:`minivgpt.metrics.horizontal_drift`. A video with an empty frame (no ball at all, which
    no real video has) shows no class: ``"acc, no blank"`` counts it wrong.

    Args:
        clf: a classifier of ``(B, T, C, H, W)`` videos (:func:`train_classifier`).
        video: ``(B, T, C, H, W)`` in [-1, 1]; asked: ``(B,)`` long labels.
    Returns:
        ``{"accuracy", "acc, no blank", "count acc", "drift acc", "pixel drift", "pixel count",
        "pixel class"}``: shares of the videos in [0, 1].
    """
    if video.ndim != 5 or asked.shape != video.shape[:1]:
        raise ValueError(f"need video (B, T, C, H, W) and asked (B,), got shapes {tuple(video.shape)} and "
                         f"{tuple(asked.shape)}")
    with torch.no_grad():
        pred = torch.cat([clf(video[i : i + batch_size]) for i in range(0, len(video), batch_size)]).argmax(1)
    drawn = (metrics.foreground_area(video) > 0).all(1)  # no empty frame
    counted = metrics.object_count(video).median(dim=1).values  # objects per frame, their median
    pixel_count = counted == asked // 2 + 1
    pixel_drift = (metrics.horizontal_drift(video) > 0) == (asked % 2 == 1)
    share = lambda b: b.float().mean().item()  # noqa: E731
    return {"accuracy": share(pred == asked), "acc, no blank": share((pred == asked) & drawn),
            "count acc": share(pred // 2 == asked // 2), "drift acc": share(pred % 2 == asked % 2),
            "pixel drift": share(pixel_drift), "pixel count": share(pixel_count),
            "pixel class": share(pixel_count & pixel_drift)}


def count_readings(video: torch.Tensor, balls: torch.Tensor, frames_per_clip: int) -> dict:
    """Where the balls go: :func:`minivgpt.metrics.object_count` per frame against the right count.

    Args:
        video: ``(B, T, C, H, W)`` in [-1, 1]; balls: ``(B,)`` the count each video should show (the asked
            one for generated videos, the true one for real videos); frames_per_clip: F, so that frame F + 1,
            the first frame drawn after the first clip, is read too.
    Returns:
        ``{"objects, frame 1", "objects, last"}`` (mean objects per video), ``{"right, frame 1",
        "right, frame F+1", "right, last"}`` (shares of the videos showing the right count there) and
        ``"per frame"``, the mean objects in each frame ``(T,)``.
    """
    if video.ndim != 5 or balls.shape != video.shape[:1]:
        raise ValueError(f"need video (B, T, C, H, W) and balls (B,), got shapes {tuple(video.shape)} and "
                         f"{tuple(balls.shape)}")
    if not 1 <= frames_per_clip < video.shape[1]:
        raise ValueError(f"frames_per_clip={frames_per_clip} must be in [1, {video.shape[1] - 1}] for "
                         f"{video.shape[1]}-frame videos")
    n = metrics.object_count(video)  # (B, T): objects of at least 4 pixels per frame
    share = lambda b: b.float().mean().item()  # noqa: E731
    return {"objects, frame 1": n[:, 0].float().mean().item(), "objects, last": n[:, -1].float().mean().item(),
            "right, frame 1": share(n[:, 0] == balls), f"right, frame {frames_per_clip + 1}":
            share(n[:, frames_per_clip] == balls), "right, last": share(n[:, -1] == balls),
            "per frame": n.float().mean(0)}
