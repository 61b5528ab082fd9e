"""Understanding probes on the backbone's hidden states: classification, fine-tuning and segmentation.

Derived in notebooks/07 (§2 features of clean clips, §3 linear probe and fine-tuning, §5 segmentation).

- :func:`features`: hidden states of clean clips after one block, one vector per patch token; they carry
  gradients unless the caller disables them (:func:`minivgpt.backbone.batched` does, for frozen reads).
- :func:`pool`: per-token features -> one vector per video (mean, per-frame means, or all tokens).
- :func:`linear_probe`: softmax regression on frozen, standardized features.
- :func:`finetune_classifier`: the backbone trained end to end with a linear head.
- :class:`PatchSegHead` / :func:`train_seg_head`: per-patch foreground segmentation, scored by
  :func:`minivgpt.metrics.region_iou` and :func:`minivgpt.metrics.boundary_f`.

Video-caption retrieval on the same features is :func:`minivgpt.captions.train_retrieval`.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import optim
from .clips import unpatchify
from .model import VideoGPT


# ----------------------------------------------------------------------------------------- features
def features(model: VideoGPT, tokens: torch.Tensor, layer: int = -1) -> torch.Tensor:
    """Hidden states of clean clips after block ``layer``: tokens ``(B, K, F, N, D)`` -> ``(B, K, F, N, W)``.

    The clips run as clean history (t = 1, no condition, frame-causal mask): ``model.prefill(...,
    return_hidden=layer)``. Clean tokens never attend to noisy ones, so these equal the clean copies'
    states in the training forward whatever the noisy copies hold. ``layer`` indexes ``model.blocks``
    (negative from the end). Gradients flow to the model's parameters unless run under ``torch.no_grad``.
    """
    if tokens.ndim != 5:
        raise ValueError(f"tokens must be (B, K, F, N, D), got {tuple(tokens.shape)}")
    _, hidden = model.prefill(tokens, return_hidden=layer)
    return hidden


def pool(feats: torch.Tensor, how: str = "frames") -> torch.Tensor:
    """Per-token features ``(B, K, F, N, W)`` -> one vector per video.

    ``"mean"``: ``(B, W)`` mean over everything; ``"frames"``: ``(B, K*F*W)`` mean over patches of each
    frame, frames concatenated; ``"all"``: ``(B, K*F*N*W)`` flattened.
    """
    if how == "mean":
        return feats.mean(dim=(1, 2, 3))
    if how == "frames":
        return feats.mean(dim=3).flatten(1)
    if how == "all":
        return feats.flatten(1)
    raise ValueError(f"how={how!r}: choose mean, frames or all")


# ----------------------------------------------------------------------------------------- classification
def standardize(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Z-score features ``(M, E)`` with the per-dimension statistics of ``train``; returns ``[train, *others]``."""
    mu, sd = train.mean(0), train.std(0).clamp_min(1e-6)
    return [(x - mu) / sd for x in (train, *others)]


def _num_classes(*labels: torch.Tensor) -> int:
    return int(max(int(y.max()) for y in labels)) + 1


def linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    steps: int = 300,
    lr: float = 1e-2,
    weight_decay: float = 1e-3,
    seed: int = 0,
) -> float:
    """Test accuracy of a softmax regression fitted on ``train`` (features ``(M, E)``, labels ``(M,)``).

    Standardized inputs, full-batch Adam at a constant ``lr`` (:func:`minivgpt.optim.make_optimizer`
    without decoupled decay), L2 penalty ``weight_decay * ||W||^2`` in the loss.
    """
    torch.manual_seed(seed)
    tr, te = standardize(train_x.float(), test_x.float())
    probe = nn.Linear(tr.shape[1], _num_classes(train_y, test_y))
    opt = optim.make_optimizer(probe, lr, weight_decay=0.0, betas=(0.9, 0.999))
    for _ in range(steps):
        loss = F.cross_entropy(probe(tr), train_y) + weight_decay * probe.weight.pow(2).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float((probe(te).argmax(1) == test_y).float().mean())


class FinetunedClassifier(nn.Module):
    """A backbone copy and a linear head: tokens ``(B, K, F, N, D)`` -> class logits ``(B, num_classes)``.

    The head (LayerNorm + Linear) reads the clean features of block ``layer`` (:func:`features`) pooled
    by ``how`` (:func:`pool`); ``records`` holds the training loss of :func:`finetune_classifier`.
    """

    def __init__(self, backbone: VideoGPT, token_shape: tuple[int, ...], num_classes: int, layer: int, how: str):
        super().__init__()
        K, Fr, N = token_shape[:3]
        self.backbone, self.layer, self.how = backbone, layer, how
        dim = pool(torch.zeros(1, K, Fr, N, backbone.cfg.width), how).shape[1]
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))
        self.records: list[dict] = []

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(pool(features(self.backbone, tokens, self.layer), self.how))


def finetune_classifier(
    model: VideoGPT,
    tokens: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int | None = None,
    layer: int = -1,
    how: str = "mean",
    steps: int = 300,
    batch_size: int = 32,
    lr: float = 3e-3,
    backbone_lr_scale: float = 0.1,
    warmup: int = 20,
    weight_decay: float = 0.01,
    seed: int = 0,
    log_every: int = 10,
) -> FinetunedClassifier:
    """Fine-tune a copy of the backbone end to end with a linear head on ``tokens (M, K, F, N, D)``, ``labels (M,)``.

    Head and backbone train together: gradients reach every block up to ``layer``, the backbone at
    ``backbone_lr_scale`` times the head's rate ``lr`` (it is pretrained; the head starts from scratch).
    AdamW with warmup and cosine decay (:func:`minivgpt.optim.make_optimizer`, :func:`minivgpt.optim.lr_at`),
    minibatches of ``batch_size``. ``model`` itself is left untouched. Returns the classifier in eval mode,
    frozen; score it with ``backbone.batched(clf, test_tokens).argmax(1)``.
    """
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    num_classes = num_classes or _num_classes(labels)
    clf = FinetunedClassifier(copy.deepcopy(model), tuple(tokens.shape[1:]), num_classes, layer, how)
    clf.train().requires_grad_(True)
    opt = optim.make_optimizer(
        clf.backbone, lr, weight_decay, (0.9, 0.999), lr_scale=backbone_lr_scale, extra_groups=[{"params": clf.head}]
    )
    run = 0.0
    for step in range(steps):
        optim.set_lr(opt, optim.lr_at(step, lr, steps, warmup))
        idx = torch.randint(len(tokens), (batch_size,), generator=g)
        loss = F.cross_entropy(clf(tokens[idx]), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        run = loss.item() if step == 0 else 0.9 * run + 0.1 * loss.item()
        if (step + 1) % log_every == 0 or step + 1 == steps:
            clf.records.append({"step": step + 1, "loss": loss.item(), "loss_smooth": run})
    return clf.eval().requires_grad_(False)


# ----------------------------------------------------------------------------------------- segmentation
class PatchSegHead(nn.Module):
    """Per-token linear head: features ``(..., N, E)`` -> pixel logits ``(..., H, W)``.

    Each token predicts the p x p pixels of its own patch.
    """

    def __init__(self, in_dim: int, patch_size: int, image_size: int):
        super().__init__()
        self.p, self.size = patch_size, image_size
        self.lin = nn.Linear(in_dim, patch_size * patch_size)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return unpatchify(self.lin(feats), self.p, self.size, self.size)[..., 0, :, :]


def train_seg_head(
    feats: torch.Tensor,
    masks: torch.Tensor,
    patch_size: int,
    steps: int = 300,
    lr: float = 1e-2,
    seed: int = 0,
) -> PatchSegHead:
    """Fit a :class:`PatchSegHead`: ``feats (M, N, E)``, foreground ``masks (M, H, W)`` bool (BCE, full-batch Adam)."""
    torch.manual_seed(seed)
    head = PatchSegHead(feats.shape[-1], patch_size, masks.shape[-1])
    opt = optim.make_optimizer(head, lr, weight_decay=0.0, betas=(0.9, 0.999))
    target = masks.float()
    for _ in range(steps):
        loss = F.binary_cross_entropy_with_logits(head(feats), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return head.eval().requires_grad_(False)

