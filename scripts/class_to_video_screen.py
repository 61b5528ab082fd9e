"""Screen a change to class-to-video's fine-tuning quickly, on one seed (notebook 06, section 6).

Notebook 06's data and defaults (1,024 training videos of 1-3 balls, 8 frames; 1,000 fine-tuning steps,
lr 1e-3, ``prior_weight=1``), one video per asked label x 16 per class, 20 Euler steps, scored by a
classifier trained on real videos and from the pixels (``metrics.object_count`` and
``metrics.horizontal_drift``), the same readings as the notebook's tables. About 6 minutes on one thread
(12 with ``label=clip``) instead of the notebook's 8.5, for sorting ideas before a 3-seed notebook run.

Options: ``run=`` (backbone, default runs/pretrain), ``seed=``, ``steps=``, ``cfg=1,3`` (guidance scales),
``videos=`` (the fine-tuning bank, default 1,024 as in the notebook; the classifier always trains on the first
1,024);
any of ``lr``, ``cond_lr_mult``, ``prior_weight``, ``prior_t_max``, ``prior_zero_share``, ``animate_prob``,
``text_prob``, ``history_noise``, ``cond_drop`` (``0``: the label is never dropped, so guidance above 1 has no
unconditional model to push from), ``label_weight``, ``label_t_max``, ``label_scale`` (a cross-entropy on the
network's own per-label errors, teaching it to tell the labels apart), ``class_init_std`` (the label table
starts at N(0, std) instead of zero), ``clips`` of
:func:`minivgpt.generation.finetune_conditional` (``clips=4``:
whole 8-frame videos instead of 2-clip crops; ``clips=1``: single clips, every sample a clip drawn from nothing);
``crop=first`` starts every crop at the video's first frame (``crop=random``, the default: anywhere);
``label=clip`` puts the label in as a learned clean clip before the video (initialised to its class's mean
first clip) on top of the adaLN vector, a stronger path than the vector alone, so the first clip is drawn as
a continuation of the label's clip (the paper leaves open how a condition enters). ``label=native`` scores a
run trained with the labels from its start (``num_classes=6``, e.g. ``python -m minivgpt.demo preset=backbone
num_classes=6``) as it is, with no fine-tuning: its own class embedding is the condition, its null class the
unconditional branch. That separates what the network can learn of the label from what a short fine-tuning of
an unconditional backbone transfers. ``lead=2`` (with ``label=native``) draws the first 2 frames as 1-frame
clips and the rest as clips of the run's F frames, for a run trained with random cuts (``stages=8/1-2:1500``):
the second frame is then drawn from a clean first frame and the label, where the drift has hold (a run of
1-frame clips, ``frames_per_clip=1 clips=8``, draws 8 clips of 1 frame). Besides the table it
prints, for each asked count, the objects drawn in the first frame and the share with the right number.

    python scripts/class_to_video_screen.py [run=runs/pretrain] [seed=1] [clips=4] [label=clip|native] ...
"""

from __future__ import annotations

import copy
import sys
import time

import torch
import torch.nn as nn

from minivgpt import captions, generation, judge, optim
from minivgpt.config import parse_options
from minivgpt.data import BouncingBalls, video_batch
from minivgpt.diffusion import RectifiedFlow, add_noise
from minivgpt.rollout import rollout
from minivgpt.train import load_run

FINETUNE = {"lr": float, "cond_lr_mult": float, "prior_weight": float, "animate_prob": float,
            "text_prob": float, "history_noise": float, "clips": int, "prior_t_max": float,
            "prior_zero_share": float, "cond_drop": float, "label_weight": float, "label_t_max": float,
            "label_scale": float, "class_init_std": float}
OPTIONS = ("run", "seed", "steps", "cfg", "label", "crop", "videos", "lead", *FINETUNE)
FRAMES = 8  # notebook 06's videos: 4 clips of 2 frames (or 8 of 1, for a run trained on 1-frame clips)
BANK = 1024  # notebook 06's training videos; the classifier always trains on these, the fine-tuning on videos=


def finetune_label_clip(model, tok, videos, labels, num_classes, F, steps, seed, lr=1e-3, prior_weight=1.0):
    """Fine-tune a copy of ``model`` with each label as a learned clean clip ``(F, N, D)`` put before the
    video's 2-clip crop (no loss on it), plus the adaLN vector of a :class:`generation.Conditioner`; the
    prior term denoises the true first clip from pure noise after the label's clip. Returns the model, the
    conditioner and the label clips ``(classes, F, N, D)``."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    firsts = tok.encode(videos[:, :F].contiguous(), F)[:, 0]  # (M, F, N, D): every video's first clip
    label_clip = nn.Parameter(torch.stack([firsts[labels == c].mean(0) for c in range(num_classes)]))
    net = copy.deepcopy(model).train().requires_grad_(True)
    cond_net = generation.Conditioner(num_classes, 2, model.cfg.width)
    opt = optim.make_optimizer(net, lr, 0.1, extra_groups=[
        {"params": cond_net, "lr_scale": 10.0, "weight_decay": 0.0},
        {"params": [label_clip], "lr_scale": 10.0, "weight_decay": 0.0}])
    flow, B, T = RectifiedFlow(0.9, "uniform", 0.1), 16, videos.shape[1]
    for step in range(steps):
        idx = torch.randint(len(videos), (B,), generator=g)
        start = torch.randint(T - 2 * F + 1, (B,), generator=g)
        crop = torch.stack([videos[i, s : s + 2 * F] for i, s in zip(idx.tolist(), start.tolist())])
        x = torch.cat([label_clip[labels[idx]][:, None], tok.encode(crop, F)], 1)  # (B, 3, F, N, D)
        r = flow.draw(tuple(x.shape), g)
        r["t_clean"][:, 0] = 1.0  # the label's clip is given clean, as at sampling
        x_t, hist = add_noise(x, r["t"], r["noise"]), add_noise(x, r["t_clean"], r["history_noise"])
        pred = net(x_t, hist, r["t"], t_clean=r["t_clean"], cond=cond_net(labels[idx]), drop=r["drop"])
        loss = (pred[:, 1:] - x[:, 1:]).pow(2).mean()  # not on the label's clip
        if prior_weight > 0:
            j = torch.randint(len(videos), (2 * B,), generator=g)
            pair = torch.stack([label_clip[labels[j]], firsts[j]], 1)  # (2B, 2, F, N, D)
            tt = torch.stack([torch.ones(2 * B), torch.zeros(2 * B)], 1)  # the first clip from pure noise
            noisy = add_noise(pair, tt, torch.randn(pair.shape, generator=g))
            pj = net(noisy, pair, tt, cond=cond_net(labels[j]))
            loss = loss + prior_weight * (pj[:, 1] - firsts[j]).pow(2).mean()
        optim.set_lr(opt, optim.lr_at(step, lr, steps, 20, 0.1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([*net.parameters(), *cond_net.parameters(), label_clip], 1.0)
        opt.step()
    return net.eval().requires_grad_(False), cond_net.eval(), label_clip.detach()


def scores(clf: nn.Module, video: torch.Tensor, asked: torch.Tensor, F: int) -> dict[str, float]:
    """Videos ``(B, T, C, H, W)`` against asked labels ``(B,)``: the classifier's accuracy and the pixels'
    (:func:`minivgpt.judge.class_scores`), the count in the first and last frames, and ``jump``: how much
    consecutive frames differ across a clip boundary over how much within a clip (mean squared change; about
    1 for real videos, above 1 where each clip is drawn apart from the one before)."""
    read = judge.class_scores(clf, video, asked)
    balls = asked // 2 + 1  # label = 2 (balls - 1) + drifting_right
    n = judge.count_readings(video, balls, F)
    change = (video[:, 1:] - video[:, :-1]).pow(2).mean((0, 2, 3, 4))  # (T - 1,): frame t -> t + 1
    across = torch.arange(1, video.shape[1]) % F == 0  # the step from a clip's last frame to the next clip
    by_count = []  # (objects drawn, share right) in the first frame, for 1, 2, 3 asked balls
    for b in (1, 2, 3):
        r = judge.count_readings(video[balls == b], balls[balls == b], F)
        by_count.append((r["objects, frame 1"], r["right, frame 1"]))
    return {**{k: read[k] for k in ("accuracy", "pixel count", "pixel drift", "pixel class")},
            **{k: n[k] for k in ("right, frame 1", "right, last", "objects, frame 1", "objects, last")},
            "jump": (change[across].mean() / change[~across].mean()).item(), "by count": by_count}


def main(argv: list[str]) -> None:
    opts = parse_options(argv, OPTIONS, __doc__)
    if opts.get("crop", "random") not in ("random", "first"):
        raise SystemExit(f"crop={opts['crop']}: use crop=random (the default) or crop=first")
    if opts.get("label", "vector") not in ("vector", "clip", "native"):
        raise SystemExit(f"label={opts['label']}: use label=vector (the default), label=clip or label=native")
    seed, steps, n_videos = int(opts.get("seed", 1)), int(opts.get("steps", 1000)), int(opts.get("videos", BANK))
    if n_videos < BANK:
        raise SystemExit(f"videos={n_videos}: use at least {BANK} (the classifier trains on the first {BANK})")
    kw = {"lr": 1e-3, "prior_weight": 1.0} | {k: f(opts[k]) for k, f in FINETUNE.items() if k in opts}
    if opts.get("label") == "clip" and (set(kw) - {"lr", "prior_weight"} or "crop" in opts):
        raise SystemExit("label=clip takes lr= and prior_weight= only")
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    run = opts.get("run", "runs/pretrain")
    model, tok, cfg = load_run(run)  # a run without a checkpoint is an error, not a quietly trained stand-in
    print(f"loaded the run in {run} | {torch.backends.cpu.get_cpu_capability()} | {opts}")
    F, size = cfg.train.frames_per_clip, cfg.data.image_size
    if FRAMES % F:
        raise SystemExit(f"{run} has clips of {F} frames: the screen's {FRAMES}-frame videos need F = 1, 2, 4 or 8")
    K = FRAMES // F  # clips a generated video has: 4 of 2 frames, 8 of 1 frame
    train_set = BouncingBalls(n_videos, FRAMES, size, 1, 3, seed=seed + 200)  # notebook 06's videos, and more
    train_b = video_batch(train_set, range(n_videos))  # sample i is a function of (seed, i): the first BANK agree
    test_b = video_batch(BouncingBalls(256, FRAMES, size, 1, 3, seed=seed + 201), range(256))
    nc = train_set.num_classes
    if opts.get("label") == "native":  # checked before the classifier is trained
        if model.cfg.num_classes != nc:
            raise SystemExit(f"label=native needs a run trained with num_classes={nc}; {run} has "
                             f"num_classes={model.cfg.num_classes}")
        if set(opts) - {"run", "seed", "cfg", "label", "videos", "lead"}:
            raise SystemExit("label=native fine-tunes nothing: it takes run=, seed=, cfg=, videos= and lead= only")
    lead = int(opts.get("lead", 0))
    if lead and (opts.get("label") != "native" or not 0 < lead < FRAMES or (FRAMES - lead) % F):
        raise SystemExit(f"lead={lead}: 1-frame clips to start with, for label=native on a run trained with random "
                         f"cuts (e.g. stages=8/1-2:1500); {FRAMES} - lead must be a multiple of F={F}")
    clf = judge.train_classifier(train_b["video"][:BANK], train_b["label"][:BANK], nc, steps=400, seed=seed)
    asked = torch.arange(nc).repeat_interleave(16)
    rows = {"real videos": scores(clf, test_b["video"], test_b["label"], F)}
    if opts.get("label") == "clip":
        net, cond_net, label_clip = finetune_label_clip(model, tok, train_b["video"], train_b["label"], nc, F,
                                                        steps, seed, **kw)
        for s in map(float, opts.get("cfg", "1,3").split(",")):
            out = rollout(net, label_clip[asked][:, None], K, steps=20, window=K - 1, cfg_scale=s,
                          cond=cond_net(asked), generator=torch.Generator().manual_seed(seed))
            rows[f"guidance {s:g}"] = scores(clf, tok.decode(out[:, 1:]), asked, F)  # the label's clip left out
    else:
        net, cond = model, asked  # label=native: the run's own class table, no fine-tuning
        if opts.get("label") != "native":
            vocab = captions.Vocabulary.build(train_b["caption"])
            bank = train_b["video"]
            if opts.get("crop") == "first":  # every crop starts at the video's first frame
                bank = bank[:, : kw.get("clips", 2) * F].contiguous()
            ft = generation.finetune_conditional(model, tok, bank, train_b["label"],
                                                 vocab.encode(train_b["caption"]), nc, len(vocab), steps=steps,
                                                 seed=seed, **kw)
            net, cond = ft.model, ft.conditioner(asked)
        for s in map(float, opts.get("cfg", "1,3").split(",")):
            if lead:  # `lead` clips of 1 frame from the label, then clips of F frames after them
                g = torch.Generator().manual_seed(seed)
                empty = torch.zeros(len(asked), 0, net.tokens_per_frame, net.in_dim)
                first = rollout(net, empty, lead, steps=20, cfg_scale=s, cond=cond, generator=g, lengths=[],
                                frames_per_clip=1)
                frames = rollout(net, first, (FRAMES - lead) // F, steps=20, cfg_scale=s, cond=cond, generator=g,
                                 lengths=[1] * lead, frames_per_clip=F)  # (B, FRAMES, N, D)
                video = tok.decode(frames[:, :, None])  # every frame as a 1-frame clip
            else:
                video = tok.decode(generation.generate(net, cond, K, F, steps=20, cfg_scale=s, seed=seed))
            rows[f"guidance {s:g}"] = scores(clf, video, asked, F)
    heads = [h for h in rows["real videos"] if h != "by count"]
    print(f"{len(asked)} generated videos, {time.perf_counter() - t0:.0f} s")
    print(f"{'':<14}" + "".join(f"{h:>17}" for h in heads))
    for name, row in rows.items():
        print(f"{name:<14}" + "".join(f"{row[h]:>17.3f}" for h in heads))
    print("the first frame by asked count (1 / 2 / 3 balls): objects drawn, and the share with the right number")
    for name, row in rows.items():
        print(f"{name:<14}" + " / ".join(f"{m:.2f}" for m, _ in row["by count"]) + "   right "
              + " / ".join(f"{r:.2f}" for _, r in row["by count"]))


if __name__ == "__main__":
    main(sys.argv[1:])
