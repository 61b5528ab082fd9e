"""Generation transfer: continue training the pretrained backbone with a condition, then sample from it.

Derived in notebooks/06 (§2 the condition, §3 image animation, §4 one fine-tuning run, §6-9 sampling).

- **class-to-video** and **text-to-video**: a :class:`Conditioner` maps a class label or a caption to an
  embedding ``(B, W)`` that :class:`~minivgpt.model.VideoGPT` adds to the adaLN conditioning of every
  segment (the model's ``cond``). Captions are read by a :class:`~minivgpt.captions.CaptionEncoder`.
  Both kinds of condition are trained in one run (each sample draws one). The null condition is the zero
  embedding: the model substitutes it for the samples whose condition is dropped (classifier-free
  guidance in training) and in the rollout's unconditional branch.
- **does it read the condition?** :func:`condition_gain`: the first clip's denoising error with another
  condition (a label with one part flipped) over that with its own; :func:`condition_errors`: the errors
  under every label, so the network's own reading of a clip's label is the one with the least error.
- **where is a first clip decided?** :func:`first_clip_path`: the clean predictions along the sampler's path.
- **image animation**: a single clean frame is the context. The model has a fixed ``frames_per_clip`` F,
  so the frame is repeated F times into one static context clip (:func:`image_context`); fine-tuning shows
  the model videos whose first clip is their first frame repeated, followed by the true frames 1, 2, ...
  (:func:`animation_video`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from . import optim
from .captions import CaptionEncoder
from .diffusion import RectifiedFlow, add_noise
from .model import VideoGPT
from .rollout import rollout
from .tokenizer import VideoTokenizer


class Conditioner(nn.Module):
    """Class labels or captions -> the model's condition embedding ``(B, width)``; zero = no condition.

    Args:
        num_classes: label set size (a class embedding table, zero-initialised unless ``class_init_std > 0``).
        vocab_size: caption vocabulary size (a :class:`~minivgpt.captions.CaptionEncoder`, zero-initialised
            output), so a fresh conditioner leaves the pretrained backbone unchanged.
        width: the backbone width W.
        class_init_std: > 0 draws the class table from N(0, class_init_std) instead (the labels start apart, as
            a model trained with ``num_classes`` from its start has them: ``nn.Embedding``'s N(0, 1)).
    """

    def __init__(self, num_classes: int, vocab_size: int, width: int, text_dim: int = 128,
                 class_init_std: float = 0.0):
        super().__init__()
        if class_init_std < 0:
            raise ValueError(f"class_init_std={class_init_std} must be >= 0 (0 = a zero table)")
        self.class_emb = nn.Embedding(num_classes, width)
        if class_init_std > 0:
            nn.init.normal_(self.class_emb.weight, std=class_init_std)
        else:
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
        if labels is None and ids is None:
            raise ValueError("Conditioner needs labels (B,) or caption ids (B, L)")
        if ids is None:
            return self.class_emb(labels)
        if labels is None:
            return self.text(ids)
        if use_text is None:
            raise ValueError("with both labels and caption ids, pass use_text (B,) bool to pick one per sample")
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
    min_lr_ratio: float = 0.1,
    weight_decay: float = 0.1,
    text_prob: float = 0.5,
    animate_prob: float = 0.25,
    cond_drop: float = 0.1,
    history_noise: float = 0.9,
    cond_lr_mult: float = 10.0,
    prior_weight: float = 0.0,
    prior_t_max: float = 0.0,
    prior_zero_share: float = 0.0,
    label_weight: float = 0.0,
    label_t_max: float = 0.5,
    label_scale: float = 100.0,
    class_init_std: float = 0.0,
    seed: int = 0,
    log_every: int = 10,
) -> FinetuneResult:
    """Continue training a copy of ``model`` with class/text conditions and image-animation samples.

    Every step draws ``batch_size`` videos from the bank ``videos (M, T, C, H, W)`` with a random crop of
    ``clips * frames_per_clip`` frames; each sample is conditioned on its caption (prob ``text_prob``) or
    its label, and with prob ``animate_prob`` becomes an :func:`animation_video`. The loss is
    :meth:`RectifiedFlow.loss` (condition dropped with prob ``cond_drop``: the model uses the zero
    embedding). AdamW with warmup + cosine decay (:func:`minivgpt.optim.make_optimizer`,
    :func:`minivgpt.optim.lr_at`); the new conditioner learns at ``cond_lr_mult`` times the backbone's rate,
    without weight decay (it starts from zero).

    ``prior_weight > 0`` adds a second term, weighted so: the first clip of ``2 * batch_size`` whole videos
    denoised from pure noise (t = 0) with its condition (the caption with prob ``text_prob``, else the
    label), i.e. the condition's *prior* over first clips. That is where a label that changes little in
    each frame (the drift direction of the balls) must act; with the flow loss alone the network did not
    learn it (notebook 06, section 6). With ``prior_t_max > 0`` the term's time is drawn uniformly in
    ``[0, prior_t_max]`` instead of 0, so the condition is also taught on the first, noisiest part of the
    sampling path, where a first clip's count is decided (notebook 06, section 6); ``prior_zero_share`` of
    the term's clips then stay at t = 0, where the drift is read (without them it is lost there).

    ``label_weight > 0`` adds a third term, weighted so, that teaches the network to *tell* the labels apart
    rather than only to denoise with one: ``batch_size`` first clips, noised to a time drawn in ``[0,
    label_t_max]``, are denoised without history under every label; the logits ``-label_scale * log(error)``
    (the implicit classifier of :func:`condition_errors`) get a cross-entropy against the true label. With the
    flow loss alone the label is worth about 1 % of the first clip's error, too little a signal to be learned
    (notebook 06, section 6); this term's gradient is that difference itself.

    ``class_init_std > 0`` starts the class table at N(0, class_init_std) instead of zero (:class:`Conditioner`).

    Args:
        labels: ``(M,)`` long; caption_ids: ``(M, L)`` from :meth:`~minivgpt.captions.Vocabulary.encode`.
    Returns:
        the fine-tuned model copy (eval mode), the trained :class:`Conditioner`, and ``{"step", "loss"}``.
    """
    if prior_weight < 0:
        raise ValueError(f"prior_weight={prior_weight} must be >= 0 (0 = the flow loss alone)")
    if not 0.0 <= prior_t_max < 1.0:
        raise ValueError(f"prior_t_max={prior_t_max} must be in [0, 1) (0 = the prior term at pure noise only)")
    if not 0.0 <= prior_zero_share <= 1.0:
        raise ValueError(f"prior_zero_share={prior_zero_share} must be in [0, 1] (the prior term's share at t = 0)")
    if label_weight < 0:
        raise ValueError(f"label_weight={label_weight} must be >= 0 (0 = no label term)")
    if not 0.0 <= label_t_max < 1.0:
        raise ValueError(f"label_t_max={label_t_max} must be in [0, 1) (the label term's times: [0, label_t_max])")
    if label_scale <= 0:
        raise ValueError(f"label_scale={label_scale} must be > 0 (the logits are -label_scale * log(error))")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = copy.deepcopy(model).train().requires_grad_(True)
    cond_net = Conditioner(num_classes, vocab_size, model.cfg.width, class_init_std=class_init_std)
    both = nn.ModuleList([net, cond_net])
    opt = optim.make_optimizer(
        net, lr, weight_decay, extra_groups=[{"params": cond_net, "lr_scale": cond_lr_mult, "weight_decay": 0.0}]
    )
    flow = RectifiedFlow(history_noise, "uniform", cond_drop)
    n_frames = clips * frames_per_clip
    T = videos.shape[1]
    if T < n_frames:
        raise ValueError(f"videos have {T} frames; clips * frames_per_clip = {n_frames} needs at least that many")
    firsts = None  # the prior term's targets: every video's first clip (M, F, N, D), encoded once
    if prior_weight > 0 or label_weight > 0:
        firsts = tokenizer.encode(videos[:, :frames_per_clip].contiguous(), frames_per_clip)[:, 0]
    records, run = [], 0.0
    for step in range(steps):
        idx = torch.randint(len(videos), (batch_size,), generator=g)
        start = torch.randint(T - n_frames + 1, (batch_size,), generator=g)
        video = torch.stack([videos[i, s : s + n_frames] for i, s in zip(idx.tolist(), start.tolist())])
        anim = torch.rand(batch_size, generator=g) < animate_prob
        video = torch.where(anim[:, None, None, None, None], animation_video(video, frames_per_clip), video)
        use_text = torch.rand(batch_size, generator=g) < text_prob
        x = tokenizer.encode(video, frames_per_clip)
        optim.set_lr(opt, optim.lr_at(step, lr, steps, warmup, min_lr_ratio))
        cond = cond_net(labels[idx], caption_ids[idx], use_text)
        loss = flow.loss(net, x, cond, generator=g)
        if firsts is not None:  # the first clip from pure noise, with its condition: E[first clip | condition]
            j = torch.randint(len(videos), (2 * batch_size,), generator=g)
            text_j = torch.rand(len(j), generator=g) < text_prob  # the condition drawn as in the flow term
            first = firsts[j]  # (2B, F, N, D)
            noise = torch.randn(first.shape, generator=g).to(first.device, first.dtype)
            t0 = torch.zeros(len(j))
            if prior_t_max > 0:
                t0 = torch.rand(len(j), generator=g) * prior_t_max
                if prior_zero_share > 0:  # these stay at pure noise
                    t0 = torch.where(torch.rand(len(j), generator=g) < prior_zero_share, torch.zeros_like(t0), t0)
            t0 = t0.to(first.device, first.dtype)
            noisy = add_noise(first[:, None], t0[:, None], noise[:, None])[:, 0]  # x_t (2B, F, N, D); noise at t=0
            pred = net.denoise(noisy, t0, None, cond_net(labels[j], caption_ids[j], text_j))
            loss = loss + prior_weight * (pred - first).pow(2).mean()
        if label_weight > 0:  # every label on the same noisy first clips: a cross-entropy on their errors
            j = torch.randint(len(videos), (batch_size,), generator=g)
            first = firsts[j]  # (B, F, N, D)
            noise = torch.randn(first.shape, generator=g).to(first.device, first.dtype)
            tl = (torch.rand(len(j), generator=g) * label_t_max).to(first.device, first.dtype)
            noisy = add_noise(first[:, None], tl[:, None], noise[:, None])[:, 0]
            err = _errors_under(net, first, noisy, tl, cond_net(torch.arange(num_classes, device=labels.device)))
            loss = loss + label_weight * nn.functional.cross_entropy(-label_scale * err.log(), labels[j].to(err.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(both.parameters(), 1.0)
        opt.step()
        run = loss.item() if step == 0 else 0.9 * run + 0.1 * loss.item()
        if (step + 1) % log_every == 0 or step + 1 == steps:
            records.append({"step": step + 1, "loss": loss.item(), "loss_smooth": run})
    return FinetuneResult(net.eval().requires_grad_(False), cond_net.eval().requires_grad_(False), records)


# ----------------------------------------------------------------------------------------- sampling
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
    temperature: float = 1.0,
    cfg_t_min: float = 0.0,
    eta: float = 0.0,
    shift: float = 1.0,
) -> torch.Tensor:
    """Conditional rollout: ``num_clips`` new clips (tokens ``(B, C + num_clips, F, N, D)``).

    Without ``context`` generation starts from nothing (C = 0), so the first clip comes from the condition
    alone. ``cfg_scale`` is classifier-free guidance against the prediction without history and condition,
    applied to the Euler steps from ``t >= cfg_t_min`` (0 = all).
    ``temperature`` scales every clip's starting noise (:func:`~minivgpt.rollout.rollout`); 1 samples the
    model's own distribution and is the default. Videos generated from nothing lose balls as they roll out,
    more of them below 1; above 1 (1.3) more balls are drawn than asked, which a classifier judge rewards but
    the pixel count does not (measured in notebooks/06, §6, which therefore samples at 1).
    ``eta`` and ``shift`` choose the sampler (:meth:`~minivgpt.diffusion.RectifiedFlow.sample`; 0 and 1: Euler).
    """
    if context is None:
        if cond is None and batch is None:
            raise ValueError("generate without context or cond needs batch= (how many videos)")
        B = batch if cond is None else cond.shape[0]
        context = torch.zeros(B, 0, frames_per_clip, model.tokens_per_frame, model.in_dim)
    g = torch.Generator().manual_seed(seed)
    return rollout(
        model, context, num_clips, steps=steps, cfg_scale=cfg_scale, cond=cond, generator=g, temperature=temperature,
        cfg_t_min=cfg_t_min, eta=eta, shift=shift,
    )


@torch.no_grad()
def predict_mean(model: VideoGPT, context: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
    """One-step clean prediction of the next clip from pure noise (t = 0): ``(B, F, N, D)``.

    Under an MSE loss this is the model's estimate of the posterior mean of the next clip, i.e. the
    MSE-optimal point forecast (blurry where the future is uncertain), unlike a sample.
    """
    B, _, Fr, N, D = context.shape
    cache = model.prefill(context, cond)
    return model.denoise(torch.zeros(B, Fr, N, D), torch.zeros(B), cache, cond)


@torch.no_grad()
def first_clip_path(
    model: VideoGPT,
    cond: torch.Tensor | None,
    frames_per_clip: int,
    batch: int | None = None,
    steps: int = 20,
    seed: int = 0,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A first clip drawn from nothing, and the clean prediction at every Euler step on the way.

    The same clip as ``generate(model, cond, 1, frames_per_clip, batch, steps=steps, seed=seed,
    temperature=temperature)[:, 0]`` (same noise, same steps, no guidance). Read the predictions to see when
    the sample's content (how many objects, where) is settled: step i is at time ``i / steps``.

    Returns:
        the clip ``(B, F, N, D)`` and the predictions ``(steps, B, F, N, D)``.
    """
    if cond is None and batch is None:
        raise ValueError("first_clip_path without cond needs batch= (how many clips)")
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be >= 0 (1 samples, 0 is deterministic)")
    B = batch if cond is None else cond.shape[0]
    g = torch.Generator().manual_seed(seed)
    noise = temperature * torch.randn((B, frames_per_clip, model.tokens_per_frame, model.in_dim), generator=g)
    noise = noise.to(next(model.parameters()).device)  # drawn on the CPU, as generate draws it: the same on any device
    trace: list[torch.Tensor] = []
    clip = RectifiedFlow().sample(lambda x, t: model.denoise(x, t, None, cond), noise, steps, trace=trace)
    return clip, torch.stack(trace)


def _errors_under(
    model: VideoGPT, clip: torch.Tensor, noisy: torch.Tensor, t: torch.Tensor, conds: torch.Tensor
) -> torch.Tensor:
    """Each clip's denoising error under each condition, in one batch: ``(B, K)``.

    ``clip (B, F, N, D)`` clean, ``noisy`` its noised copy at times ``t (B,)``, denoised without history under
    every row of ``conds (K, W)`` (row b * K + k of the batch: clip b under condition k).
    """
    B, K = clip.shape[0], conds.shape[0]
    pred = model.denoise(noisy.repeat_interleave(K, 0), t.repeat_interleave(K), None, conds.repeat(B, 1))
    return (pred - clip.repeat_interleave(K, 0)).pow(2).mean((1, 2, 3)).view(B, K)


def _noised(first_clip: torch.Tensor, t: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``first_clip (B, F, N, D)`` noised to time ``t`` with seeded noise drawn on the CPU (the same on any
    device): ``(x_t (B, F, N, D), t (B,))``."""
    if first_clip.ndim != 4:
        raise ValueError(f"first_clip must be tokens (B, F, N, D), got shape {tuple(first_clip.shape)}")
    if not 0.0 <= t < 1.0:
        raise ValueError(f"t={t} must be in [0, 1) (0 = pure noise, 1 = clean)")
    noise = torch.randn(first_clip.shape, generator=torch.Generator().manual_seed(seed))
    noise = noise.to(first_clip.device, first_clip.dtype)
    tt = torch.full((first_clip.shape[0],), t, device=first_clip.device, dtype=first_clip.dtype)
    return add_noise(first_clip[:, None], tt[:, None], noise[:, None])[:, 0], tt


@torch.no_grad()
def condition_errors(
    model: VideoGPT, first_clip: torch.Tensor, conds: torch.Tensor, t: float = 0.2, seed: int = 0
) -> torch.Tensor:
    """The first clip's denoising error under each of K conditions: ``(B, K)``.

    Every clip ``first_clip (B, F, N, D)`` is noised to time ``t`` (seeded noise, the same for every
    condition) and denoised without history under each row of ``conds (K, W)`` (e.g. the conditioner's
    embedding of every label). The label with the least error is the network's own reading of the clip:
    the implicit classifier of a conditional diffusion model, which says whether the network *knows* what a
    label asks of the clip at that noise level.
    """
    if conds.ndim != 2:
        raise ValueError(f"conds must be (K, W) condition embeddings, got shape {tuple(conds.shape)}")
    noisy, tt = _noised(first_clip, t, seed)
    return _errors_under(model, first_clip, noisy, tt, conds)


@torch.no_grad()
def condition_gain(
    model: VideoGPT,
    first_clip: torch.Tensor,
    cond: torch.Tensor,
    other: torch.Tensor,
    t: float = 0.2,
    seed: int = 0,
) -> float:
    """Does the model read a condition? Denoising error of the first clip with ``other`` over that with ``cond``.

    The first clip of a video generated from nothing is made from the condition alone, so this is where a
    condition must act. Every clip ``first_clip (B, F, N, D)`` is noised to time ``t`` (seeded noise, the
    same for both conditions) and denoised without history, once with its own condition ``cond (B, W)``
    and once with ``other (B, W)`` (e.g. the label with one part flipped). A ratio near 1 means the model
    ignores what differs between the two; the larger it is, the more the condition helps.
    """
    noisy, tt = _noised(first_clip, t, seed)
    if cond.shape != other.shape or cond.ndim != 2 or cond.shape[0] != first_clip.shape[0]:
        raise ValueError(
            f"cond and other must both be (B, W) with B = {first_clip.shape[0]}, got {tuple(cond.shape)} and "
            f"{tuple(other.shape)}"
        )

    def error(c: torch.Tensor) -> float:
        return (model.denoise(noisy, tt, None, c) - first_clip).pow(2).mean().item()

    return error(other) / error(cond)
