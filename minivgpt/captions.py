"""Captions: a word vocabulary, a small caption encoder, and video <-> caption retrieval in one space.

Derived in notebooks/06 (§2 the condition, §5 the evaluator) and notebooks/07 (§4 retrieval).

- :class:`Vocabulary` maps caption words to indices (0 = padding, 1 = unknown).
- :class:`CaptionEncoder` embeds caption indices ``(B, L)`` into ``(B, E)`` (word embeddings, masked mean
  pooling, an MLP): the text condition of generation and the text side of retrieval.
- :class:`RetrievalModel` / :func:`train_retrieval`: a linear projection of video features and a caption
  encoder trained together with the symmetric InfoNCE (CLIP) loss; scored by
  :func:`minivgpt.metrics.retrieval_recalls`.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import optim


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
    """Fit a :class:`RetrievalModel` on pairs ``video_feats (M, E)``, ``ids (M, L)`` with the symmetric InfoNCE loss.

    AdamW (:func:`minivgpt.optim.make_optimizer`, weight decay 0.01 on matrices) at a constant ``lr``.
    """
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = RetrievalModel(video_feats.shape[1], vocab_size, dim)
    opt = optim.make_optimizer(model, lr, weight_decay=1e-2, betas=(0.9, 0.999))
    for _ in range(steps):
        idx = torch.randperm(len(video_feats), generator=g)[:batch_size]
        logits = model.similarity(video_feats[idx], ids[idx]) * model.log_temp.exp().clamp(max=100)
        target = torch.arange(len(idx))
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval().requires_grad_(False)
