"""The judge of generated videos: a small video classifier trained on real videos.

Derived in notebooks/06 (§5 the evaluator). It labels generated videos (class-to-video accuracy), and its
penultimate features feed :func:`minivgpt.metrics.frechet_distance` (a "Fréchet distance on features of
a small video classifier", not FVD on I3D) and the retrieval judge of text-to-video
(:func:`minivgpt.captions.train_retrieval`, scored by :func:`minivgpt.metrics.recall_at_k`).
Trained on real videos, it can read a class from cues that generated videos break; the drift direction is
therefore also read from the pixels (:func:`minivgpt.metrics.horizontal_drift`) beside it.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from . import optim


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
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    clf = VideoClassifier(videos.shape[2], num_classes)
    opt = optim.make_optimizer(clf, lr, weight_decay=1e-4, betas=(0.9, 0.999))
    for step in range(steps):
        idx = torch.randint(len(videos), (batch_size,), generator=g)
        optim.set_lr(opt, optim.lr_at(step, lr, steps))
        loss = F.cross_entropy(clf(videos[idx]), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return clf.eval().requires_grad_(False)
