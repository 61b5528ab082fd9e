"""Transfer from one pretrained next-clip-diffusion backbone: generation and understanding.

Generation (continued training of the backbone with a condition, as in the paper):

- **class-to-video** and **text-to-video**: a :class:`Conditioner` maps a class label or a caption to an
  embedding ``(B, W)`` that :class:`~minivgpt.model.VideoGPT` adds to the adaLN conditioning of every
  segment (the model's ``cond`` hook). Captions are read by a small :class:`CaptionEncoder` (word
  embeddings, masked mean pooling, an MLP) over a :class:`Vocabulary` built from the dataset captions.
  Both kinds of condition are trained in one run (each sample draws one); the null condition is the zero
  vector, which is what :func:`~minivgpt.diffusion.drop_condition` and the rollout's unconditional branch
  use, so classifier-free guidance works unchanged.
- **image animation**: a single clean frame is the context. The model has a fixed ``frames_per_clip`` F,
  so the frame is repeated F times into one static context clip; fine-tuning shows the model videos whose
  first clip is their first frame repeated, followed by the true frames 1, 2, ... (:func:`animation_video`).

Understanding (on hidden states of clean clips, :func:`features`): a linear probe for classification,
video-to-caption retrieval with a learned projection, and a per-patch segmentation head (J = region IoU,
F = boundary measure, :func:`boundary_f`). Evaluation of generated videos uses a small
:class:`VideoClassifier` trained here on real synthetic videos; its penultimate features give the
"Fréchet distance on features of a small video classifier" (not FVD on I3D).
"""

from __future__ import annotations

import copy
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from .clips import unpatchify
from .config import Config, from_params
from .diffusion import RectifiedFlow
from .masks import TokenLayout, layout_from_segments, mask_from_layout
from .model import VideoGPT, sdpa
from .rollout import rollout
from .tokenizer import VideoTokenizer
from .train import load_run, lr_at, make_optimizer, train


# ----------------------------------------------------------------------------------------- backbone
def load_or_train_backbone(
    folder: str | os.PathLike, fallback_out: str | os.PathLike, steps: int = 200, **params: Any
) -> tuple[VideoGPT, VideoTokenizer, Config, str]:
    """The pretrained backbone: ``train.load_run(folder)`` when ``folder/last.pt`` exists, else a short run.

    The fallback trains ``steps`` steps with :func:`minivgpt.train.train` (flat ``params``, e.g.
    ``width=64``) into ``fallback_out``. Returns the EMA model (eval mode), tokenizer, config and where
    it came from (a sentence for the notebook).
    """
    if (Path(folder) / "last.pt").exists():
        model, tok, cfg = load_run(folder)
        return model, tok, cfg, f"loaded {Path(folder) / 'last.pt'} (step {cfg.train.steps})"
    result = train({"steps": steps, "out": str(fallback_out), "progress": False, **params})
    return result.ema, result.tokenizer, result.config, f"no {folder}/last.pt: trained {steps} steps here"


# ----------------------------------------------------------------------------------------- text
def words(caption: str) -> list[str]:
    """Lower-case word tokens of a caption (punctuation dropped): ``"two balls: red"`` -> 3 words."""
    return re.findall(r"[a-z0-9]+", caption.lower())


class Vocabulary:
    """Word <-> index map built from captions. Index 0 is padding, 1 is unknown."""

    PAD, UNK = 0, 1

    def __init__(self, itos: Sequence[str]):
        self.itos = list(itos)
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def build(cls, captions: Sequence[str], min_count: int = 1) -> Vocabulary:
        """Every word seen at least ``min_count`` times, most frequent first (ties alphabetical)."""
        counts = Counter(w for c in captions for w in words(c))
        kept = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return cls(["<pad>", "<unk>", *kept])

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, captions: Sequence[str], max_len: int | None = None) -> torch.Tensor:
        """Captions -> indices ``(B, L)`` long, right-padded with 0 (L = longest caption, or ``max_len``)."""
        ids = [[self.stoi.get(w, self.UNK) for w in words(c)] for c in captions]
        L = max_len or max((len(i) for i in ids), default=1) or 1
        out = torch.zeros(len(ids), L, dtype=torch.long)
        for b, row in enumerate(ids):
            row = row[:L]
            out[b, : len(row)] = torch.tensor(row, dtype=torch.long)
        return out


class CaptionEncoder(nn.Module):
    """Word embedding + masked mean pooling + MLP: caption indices ``(B, L)`` -> embedding ``(B, out_dim)``.

    With ``zero_init`` the last layer starts at zero, so a fresh encoder leaves a pretrained backbone
    unchanged (the same idea as adaLN-Zero).
    """

    def __init__(self, vocab_size: int, out_dim: int, dim: int = 128, zero_init: bool = False):
        super().__init__()
        self.emb = nn.Embedding(vocab_size, dim, padding_idx=Vocabulary.PAD)
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, out_dim))
        if zero_init:
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        keep = (ids != Vocabulary.PAD).float()[..., None]  # (B, L, 1)
        pooled = (self.emb(ids) * keep).sum(1) / keep.sum(1).clamp_min(1.0)
        return self.mlp(pooled)


class Conditioner(nn.Module):
    """Class labels or captions -> the model's condition embedding ``(B, width)``; zero = no condition.

    Args:
        num_classes: label set size (a class embedding table, zero-initialised).
        vocab_size: caption vocabulary size (a :class:`CaptionEncoder`, zero-initialised output).
        width: the backbone width W.
    """

    def __init__(self, num_classes: int, vocab_size: int, width: int, text_dim: int = 128):
        super().__init__()
        self.class_emb = nn.Embedding(num_classes, width)
        nn.init.zeros_(self.class_emb.weight)
        self.text = CaptionEncoder(vocab_size, width, text_dim, zero_init=True)

    def forward(
        self,
        labels: torch.Tensor | None = None,
        ids: torch.Tensor | None = None,
        use_text: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Embeddings ``(B, W)`` of labels ``(B,)`` and/or caption ids ``(B, L)``.

        With both, ``use_text (B,)`` bool picks the caption per sample.
        """
        if ids is None:
            return self.class_emb(labels)
        if labels is None:
            return self.text(ids)
        return torch.where(use_text[:, None], self.text(ids), self.class_emb(labels))


# ----------------------------------------------------------------------------------------- image animation
def animation_video(video: torch.Tensor, frames_per_clip: int) -> torch.Tensor:
    """``(B, T, C, H, W)`` -> the same length with the first frame repeated F times up front.

    Frames ``[x0, x0, .., x0 (F times), x1, x2, ...]`` (cut to T): the first clip is a still image, the
    following clips continue the real motion from frame 1, so a model trained on these learns to animate
    a single frame.
    """
    T = video.shape[1]
    lead = video[:, :1].expand(-1, frames_per_clip - 1, -1, -1, -1)
    return torch.cat([lead, video], dim=1)[:, :T]


def image_context(tokenizer: VideoTokenizer, frames: torch.Tensor, frames_per_clip: int) -> torch.Tensor:
    """One frame per sample ``(B, C, H, W)`` -> a static context clip of tokens ``(B, 1, F, N, D)``."""
    clip = frames[:, None].expand(-1, frames_per_clip, -1, -1, -1)
    return tokenizer.encode(clip.contiguous(), frames_per_clip)


# ----------------------------------------------------------------------------------------- fine-tuning
@dataclass
class FinetuneResult:
    model: VideoGPT
    conditioner: Conditioner
    records: list[dict] = field(default_factory=list)


def finetune_conditional(
    model: VideoGPT,
    tokenizer: VideoTokenizer,
    videos: torch.Tensor,
    labels: torch.Tensor,
    caption_ids: torch.Tensor,
    num_classes: int,
    vocab_size: int,
    steps: int = 300,
    batch_size: int = 16,
    clips: int = 2,
    frames_per_clip: int = 2,
    lr: float = 5e-4,
    warmup: int = 20,
    text_prob: float = 0.5,
    animate_prob: float = 0.25,
    cond_drop: float = 0.1,
    history_noise: float = 0.9,
    cond_lr_mult: float = 10.0,
    seed: int = 0,
    log_every: int = 10,
) -> FinetuneResult:
    """Continue training a copy of ``model`` with class/text conditions and image-animation samples.

    Every step draws ``batch_size`` videos from the bank ``videos (M, T, C, H, W)`` with a random crop of
    ``clips * frames_per_clip`` frames; each sample is conditioned on its caption (prob ``text_prob``) or
    its label, and with prob ``animate_prob`` becomes an :func:`animation_video`. The loss is
    :meth:`RectifiedFlow.loss` (condition dropped with ``cond_drop`` -> zeros); AdamW, warmup + cosine
    (:func:`minivgpt.train.make_optimizer`, :func:`minivgpt.train.lr_at`); the new conditioner learns at
    ``cond_lr_mult`` times the backbone's rate, without weight decay (it starts from zero).

    Args:
        labels: ``(M,)`` long; caption_ids: ``(M, L)`` from :meth:`Vocabulary.encode`.
    Returns:
        the fine-tuned model copy (eval mode), the trained :class:`Conditioner`, and ``{"step", "loss"}``.
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = copy.deepcopy(model).train().requires_grad_(True)
    cond_net = Conditioner(num_classes, vocab_size, model.cfg.width)
    both = nn.ModuleList([net, cond_net])
    cfg = from_params({"lr": lr, "warmup": warmup, "steps": steps})
    opt = make_optimizer(net, cfg)
    opt.add_param_group({"params": list(cond_net.parameters()), "weight_decay": 0.0})
    mult = [1.0] * (len(opt.param_groups) - 1) + [cond_lr_mult]
    flow = RectifiedFlow(history_noise, "uniform", cond_drop)
    n_frames = clips * frames_per_clip
    T = videos.shape[1]
    records, run = [], 0.0
    for step in range(steps):
        idx = torch.randint(len(videos), (batch_size,), generator=g)
        start = torch.randint(T - n_frames + 1, (batch_size,), generator=g)
        video = torch.stack([videos[i, s : s + n_frames] for i, s in zip(idx.tolist(), start.tolist())])
        anim = torch.rand(batch_size, generator=g) < animate_prob
        video = torch.where(anim[:, None, None, None, None], animation_video(video, frames_per_clip), video)
        use_text = torch.rand(batch_size, generator=g) < text_prob
        x = tokenizer.encode(video, frames_per_clip)
        for group, m in zip(opt.param_groups, mult):
            group["lr"] = lr_at(step, cfg) * m
        cond = cond_net(labels[idx], caption_ids[idx], use_text)
        loss = flow.loss(net, x, cond, generator=g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(both.parameters(), 1.0)
        opt.step()
        run = loss.item() if step == 0 else 0.9 * run + 0.1 * loss.item()
        if (step + 1) % log_every == 0 or step + 1 == steps:
            records.append({"step": step + 1, "loss": loss.item(), "loss_smooth": run})
    return FinetuneResult(net.eval().requires_grad_(False), cond_net.eval().requires_grad_(False), records)


@torch.no_grad()
def generate(
    model: VideoGPT,
    cond: torch.Tensor | None,
    num_clips: int,
    frames_per_clip: int,
    batch: int | None = None,
    context: torch.Tensor | None = None,
    steps: int = 20,
    cfg_scale: float = 1.0,
    seed: int = 0,
) -> torch.Tensor:
    """Conditional rollout: ``num_clips`` new clips (tokens ``(B, C + num_clips, F, N, D)``).

    Without ``context`` generation starts from nothing (C = 0), so the first clip comes from the condition
    alone. ``cfg_scale`` is classifier-free guidance against the prediction without history and condition.
    """
    if context is None:
        B = batch if cond is None else cond.shape[0]
        context = torch.zeros(B, 0, frames_per_clip, model.tokens_per_frame, model.in_dim)
    g = torch.Generator().manual_seed(seed)
    return rollout(model, context, num_clips, steps=steps, cfg_scale=cfg_scale, cond=cond, generator=g)


@torch.no_grad()
def predict_mean(model: VideoGPT, context: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
    """One-step clean prediction of the next clip from pure noise (t = 0): ``(B, F, N, D)``.

    Under an MSE loss this is the model's estimate of the posterior mean of the next clip, i.e. the
    MSE-optimal point forecast (blurry where the future is uncertain), unlike a sample.
    """
    B, _, Fr, N, D = context.shape
    cache = model.prefill(context, cond)
    return model.denoise(torch.zeros(B, Fr, N, D), torch.zeros(B), cache, cond)


# ----------------------------------------------------------------------------------------- evaluator
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
        B = video.shape[0]
        h = self.stem(video.flatten(0, 1))  # (B*T, 32, H/4, W/4)
        h = rearrange(h, "(b t) c h w -> b c t h w", b=B)
        return self.temporal(h).mean(dim=(2, 3, 4))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
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
    """Train :class:`VideoClassifier` on real videos ``(M, T, C, H, W)``, labels ``(M,)`` (AdamW, CE)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    clf = VideoClassifier(videos.shape[2], num_classes)
    opt = torch.optim.AdamW(clf.parameters(), lr=lr, weight_decay=1e-4)
    for step in range(steps):
        idx = torch.randint(len(videos), (batch_size,), generator=g)
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        loss = F.cross_entropy(clf(videos[idx]), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return clf.eval().requires_grad_(False)


@torch.no_grad()
def batched(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int = 64
) -> torch.Tensor:
    """Apply ``fn`` to ``x`` in chunks along dim 0 and concatenate the results."""
    return torch.cat([fn(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


# ----------------------------------------------------------------------------------------- features
def clean_layout(num_clips: int, frames_per_clip: int, tokens_per_frame: int) -> TokenLayout:
    """Layout of clean clips only, ``[clean_0, ..., clean_{K-1}]`` (what ``prefill`` runs)."""
    return layout_from_segments(
        [(k, False) for k in range(num_clips)], [frames_per_clip] * num_clips, tokens_per_frame
    )


@torch.no_grad()
def features(model: VideoGPT, tokens: torch.Tensor, layer: int = -1) -> torch.Tensor:
    """Hidden states of clean clips after block ``layer``: tokens ``(B, K, F, N, D)`` -> ``(B, K, F, N, W)``.

    The clips run as clean history (t = 1, no condition, frame-causal mask). Clean tokens never attend to
    noisy ones, so these equal the clean copies' states in the training forward whatever the noisy copies
    hold. ``layer`` indexes ``model.blocks`` (negative from the end).
    """
    B, K, Fr, N, _ = tokens.shape
    layout = clean_layout(K, Fr, N)
    grabbed: list[torch.Tensor] = []
    hook = model.blocks[layer].register_forward_hook(lambda mod, inp, out: grabbed.append(out[0]))
    try:
        attend = sdpa(mask_from_layout(layout).to(tokens.device))
        model.run(rearrange(tokens, "b k f n d -> b (k f n) d"), layout, torch.ones(B, K), attend)
    finally:
        hook.remove()
    return rearrange(grabbed[0], "b k (f n) w -> b k f n w", f=Fr)


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


def random_backbone(model: VideoGPT, seed: int = 0) -> VideoGPT:
    """A freshly initialised model of the same shape (the random-features baseline)."""
    torch.manual_seed(seed)
    return VideoGPT(model.cfg, model.in_dim, model.grid).eval()


# ----------------------------------------------------------------------------------------- probes
def standardize(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Z-score features with the statistics of ``train`` (per dimension)."""
    mu, sd = train.mean(0), train.std(0).clamp_min(1e-6)
    return [(x - mu) / sd for x in (train, *others)]


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

    Standardized inputs, full-batch Adam, L2 penalty ``weight_decay * ||W||^2``.
    """
    torch.manual_seed(seed)
    tr, te = standardize(train_x.float(), test_x.float())
    probe = nn.Linear(tr.shape[1], int(max(train_y.max(), test_y.max())) + 1)
    opt = torch.optim.Adam(probe.parameters(), lr=lr)
    for _ in range(steps):
        loss = F.cross_entropy(probe(tr), train_y) + weight_decay * probe.weight.pow(2).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float((probe(te).argmax(1) == test_y).float().mean())


def finetune_classifier(
    model: VideoGPT,
    train_tokens: torch.Tensor,
    train_y: torch.Tensor,
    test_tokens: torch.Tensor,
    test_y: torch.Tensor,
    layer: int = -1,
    steps: int = 150,
    batch_size: int = 32,
    lr_backbone: float = 3e-4,
    lr_head: float = 3e-3,
    seed: int = 0,
) -> float:
    """Test accuracy after fine-tuning a copy of the backbone end to end with a linear head.

    The head reads the mean-pooled clean features of block ``layer`` (:func:`features`); tokens are
    ``(M, K, F, N, D)``, labels ``(M,)``. The backbone gets a smaller learning rate than the head (AdamW,
    cosine decay); ``model`` itself is left untouched.
    """
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = copy.deepcopy(model).train().requires_grad_(True)
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    head = nn.Sequential(nn.LayerNorm(model.cfg.width), nn.Linear(model.cfg.width, num_classes))
    opt = torch.optim.AdamW(
        [{"params": net.parameters(), "lr": lr_backbone}, {"params": head.parameters(), "lr": lr_head}],
        weight_decay=0.01,
    )
    base = [group["lr"] for group in opt.param_groups]
    for step in range(steps):
        for group, lr in zip(opt.param_groups, base):
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        idx = torch.randint(len(train_tokens), (batch_size,), generator=g)
        logits = head(features(net, train_tokens[idx], layer).mean(dim=(1, 2, 3)))
        loss = F.cross_entropy(logits, train_y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        feats = batched(lambda z: features(net, z, layer).mean(dim=(1, 2, 3)), test_tokens)
        return float((head(feats).argmax(1) == test_y).float().mean())


class RetrievalModel(nn.Module):
    """Video features ``(B, E)`` and caption ids ``(B, L)`` -> unit vectors ``(B, dim)`` in one space."""

    def __init__(self, video_dim: int, vocab_size: int, dim: int = 64):
        super().__init__()
        self.video = nn.Sequential(nn.LayerNorm(video_dim), nn.Linear(video_dim, dim))
        self.text = CaptionEncoder(vocab_size, dim)
        self.log_temp = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def similarity(self, video_feats: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Cosine similarity ``(Bv, Bt)`` between every video and every caption."""
        v = F.normalize(self.video(video_feats), dim=-1)
        t = F.normalize(self.text(ids), dim=-1)
        return v @ t.T


def train_retrieval(
    video_feats: torch.Tensor,
    ids: torch.Tensor,
    vocab_size: int,
    dim: int = 64,
    steps: int = 300,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
) -> RetrievalModel:
    """Fit a :class:`RetrievalModel` with the symmetric InfoNCE (CLIP) loss on (video, caption) pairs."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = RetrievalModel(video_feats.shape[1], vocab_size, dim)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
    for _ in range(steps):
        idx = torch.randperm(len(video_feats), generator=g)[:batch_size]
        logits = model.similarity(video_feats[idx], ids[idx]) * model.log_temp.exp().clamp(max=100)
        target = torch.arange(len(idx))
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval().requires_grad_(False)


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
    """Fit a :class:`PatchSegHead`: ``feats (M, N, E)``, foreground ``masks (M, H, W)`` bool (BCE loss)."""
    torch.manual_seed(seed)
    head = PatchSegHead(feats.shape[-1], patch_size, masks.shape[-1])
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    target = masks.float()
    for _ in range(steps):
        loss = F.binary_cross_entropy_with_logits(head(feats), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return head.eval().requires_grad_(False)


def region_iou(pred: torch.Tensor, target: torch.Tensor) -> float:
    """J: mean over frames of |pred ∩ target| / |pred ∪ target|, bool masks ``(M, H, W)`` (empty ∪ -> 1)."""
    p, t = pred.bool().flatten(1), target.bool().flatten(1)
    inter, union = (p & t).sum(1).float(), (p | t).sum(1).float()
    return float(torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union)).mean())


def mask_boundary(mask: torch.Tensor) -> torch.Tensor:
    """Boundary pixels of bool masks ``(M, H, W)``: foreground with a neighbour outside (or on the border)."""
    m = mask.bool().float()[:, None]
    eroded = -F.max_pool2d(-F.pad(m, (1, 1, 1, 1), value=0.0), 3, stride=1)
    return (m.bool() & ~eroded.bool())[:, 0]


def boundary_f(pred: torch.Tensor, target: torch.Tensor, tolerance: int = 1) -> float:
    """F: boundary F-measure (DAVIS style) for bool masks ``(M, H, W)``, averaged over frames.

    A predicted boundary pixel is correct if a true boundary pixel lies within ``tolerance`` pixels
    (Chebyshev distance), and vice versa for recall; F = 2PR / (P + R). Frames where both boundaries are
    empty score 1; where only one is, 0.
    """
    bp, bt = mask_boundary(pred), mask_boundary(target)
    k = 2 * tolerance + 1

    def dilate(b: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(b.float()[:, None], k, stride=1, padding=tolerance)[:, 0].bool()

    np_, nt = bp.flatten(1).sum(1).float(), bt.flatten(1).sum(1).float()
    prec = (bp & dilate(bt)).flatten(1).sum(1) / np_.clamp_min(1)
    rec = (bt & dilate(bp)).flatten(1).sum(1) / nt.clamp_min(1)
    f = 2 * prec * rec / (prec + rec).clamp_min(1e-12)
    f = torch.where(
        (np_ == 0) & (nt == 0),
        torch.ones_like(f),
        torch.where((np_ == 0) | (nt == 0), torch.zeros_like(f), f),
    )
    return float(f.mean())
