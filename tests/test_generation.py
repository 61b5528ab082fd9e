"""Generation transfer: conditioner, image animation and conditional fine-tuning on tiny inputs."""

import pytest
import torch

from minivgpt.autoencoder import IdentityAutoencoder
from minivgpt.captions import Vocabulary
from minivgpt.config import ModelConfig
from minivgpt.generation import (
    Conditioner,
    animation_video,
    finetune_conditional,
    generate,
    image_context,
    predict_mean,
)
from minivgpt.model import VideoGPT
from minivgpt.tokenizer import VideoTokenizer


def test_conditioner_starts_at_zero_and_picks_per_sample():
    vocab = Vocabulary.build(["one ball", "two balls"])
    ids = vocab.encode(["one ball", "two balls", "one ball"])
    cond = Conditioner(6, len(vocab), 32)
    labels = torch.tensor([0, 1, 2])
    assert cond(labels).abs().max() == 0 and cond(ids=ids).abs().max() == 0  # the backbone starts unchanged
    torch.nn.init.normal_(cond.class_emb.weight)
    use_text = torch.tensor([True, False, True])
    out = cond(labels, ids, use_text)
    assert out.shape == (3, 32)
    assert torch.equal(out[1], cond.class_emb.weight[1]) and out[0].abs().max() == 0
    with pytest.raises(ValueError, match="use_text"):
        cond(labels, ids)


def test_conditioner_class_init_std_starts_the_labels_apart():
    torch.manual_seed(0)
    cond = Conditioner(6, 3, 512, class_init_std=0.5)
    std = cond.class_emb.weight.std().item()
    assert 0.45 < std < 0.55 and cond(ids=torch.zeros(2, 3, dtype=torch.long)).abs().max() == 0  # captions: zero
    with pytest.raises(ValueError, match="class_init_std"):
        Conditioner(6, 3, 32, class_init_std=-1.0)


def test_animation_video():
    v = torch.arange(6.0).view(1, 6, 1, 1, 1).expand(2, 6, 1, 2, 2)
    out = animation_video(v, 3)
    assert out.shape == v.shape and out[0, :, 0, 0, 0].tolist() == [0, 0, 0, 1, 2, 3]
    tok = VideoTokenizer(IdentityAutoencoder(1), 1, 2)
    ctx = image_context(tok, v[:, 0], 3)
    assert ctx.shape == (2, 1, 3, 4, 1)


def test_finetune_conditional_lowers_loss_and_generates():
    torch.manual_seed(0)
    tok = VideoTokenizer(IdentityAutoencoder(3), 4, 8)
    model = VideoGPT(ModelConfig(width=32, depth=1, heads=2), in_dim=tok.token_dim, grid=tok.grid).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    videos = torch.rand(8, 4, 3, 8, 8) * 2 - 1
    labels = torch.arange(8) % 2
    vocab = Vocabulary.build(["left", "right"])
    ids = vocab.encode(["left" if y == 0 else "right" for y in labels.tolist()])
    res = finetune_conditional(
        model, tok, videos, labels, ids, 2, len(vocab), steps=30, batch_size=8, lr=3e-3, warmup=2, log_every=1
    )
    losses = [r["loss"] for r in res.records]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # a copy was trained
    assert res.conditioner(labels[:2]).abs().max() > 0  # the conditioner learned from zero
    out = generate(res.model, res.conditioner(labels[:2]), 2, 2, steps=2, cfg_scale=1.5)
    assert out.shape == (2, 2, 2, 4, 48) and torch.isfinite(out).all()
    anim = generate(res.model, None, 1, 2, context=image_context(tok, videos[:2, 0], 2), steps=2)
    assert anim.shape == (2, 2, 2, 4, 48)
    assert predict_mean(res.model, anim[:, :1]).shape == (2, 2, 4, 48)
    with pytest.raises(ValueError, match="batch="):
        generate(res.model, None, 1, 2)


@pytest.mark.parametrize("text", [False, True], ids=["label", "caption"])
def test_finetune_prior_weight_teaches_the_condition_prior(text: bool):
    """prior_weight trains the prediction from pure noise towards each condition's mean first clip: two labels
    (captions "up" / "down") whose videos are +0.5 or -0.5 plus noise; after 40 steps the t = 0 error is far
    lower with the term. With text_prob=1 the prior term must use the caption, not the label."""
    torch.manual_seed(0)
    tok = VideoTokenizer(IdentityAutoencoder(3), 4, 8)
    model = VideoGPT(ModelConfig(width=32, depth=1, heads=2), in_dim=tok.token_dim, grid=tok.grid).eval()
    labels = torch.arange(16) % 2
    level = (0.5 - labels.float())[:, None, None, None, None]  # label 0: +0.5, label 1: -0.5
    videos = level + 0.3 * torch.randn(16, 4, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    vocab = Vocabulary.build(["up", "down"])
    ids = vocab.encode(["up" if y == 0 else "down" for y in labels.tolist()])
    prior = tok.encode(level[:2].expand(2, 2, 3, 8, 8).contiguous(), 2)[:, 0]  # E[first clip | condition]

    def prior_error(weight: float) -> float:
        res = finetune_conditional(model, tok, videos, labels, ids, 2, len(vocab), steps=40, batch_size=4, lr=3e-3,
                                   warmup=2, text_prob=float(text), animate_prob=0.0, prior_weight=weight)
        noise = torch.randn(prior.shape, generator=torch.Generator().manual_seed(1))
        cond = res.conditioner(ids=ids[:2]) if text else res.conditioner(labels[:2])
        pred = res.model.denoise(noise, torch.zeros(2), None, cond)
        return (pred - prior).pow(2).mean().item()

    assert prior_error(1.0) < 0.5 * prior_error(0.0)
    with pytest.raises(ValueError, match="prior_weight"):
        finetune_conditional(model, tok, videos, labels, ids, 2, len(vocab), steps=1, prior_weight=-1.0)
    with pytest.raises(ValueError, match="prior_t_max"):
        finetune_conditional(model, tok, videos, labels, ids, 2, len(vocab), steps=1, prior_weight=1.0, prior_t_max=1.0)
    with pytest.raises(ValueError, match="prior_zero_share"):
        finetune_conditional(model, tok, videos, labels, ids, 2, len(vocab), steps=1, prior_weight=1.0, prior_t_max=0.4,
                             prior_zero_share=1.5)


def test_generate_temperature_scales_the_starting_noise():
    from minivgpt.notebook import open_gates

    tok = VideoTokenizer(IdentityAutoencoder(3), 4, 8)
    model = open_gates(VideoGPT(ModelConfig(width=32, depth=1, heads=2), in_dim=tok.token_dim, grid=tok.grid), seed=0)
    cond = torch.randn(2, 32, generator=torch.Generator().manual_seed(1))
    default = generate(model, cond, 2, 2, steps=3, seed=5)
    assert torch.equal(generate(model, cond, 2, 2, steps=3, seed=5, temperature=1.0), default)
    cold = [generate(model, cond, 2, 2, steps=3, seed=s, temperature=0.0) for s in (5, 6)]
    assert torch.equal(cold[0], cold[1]) and not torch.equal(cold[0], default)  # no noise: the seed is moot
    with pytest.raises(ValueError, match="temperature"):
        generate(model, cond, 1, 2, steps=2, temperature=-0.5)


def test_condition_gain_is_one_for_the_same_condition_and_moves_with_a_read_one():
    from minivgpt.generation import condition_gain
    from minivgpt.notebook import open_gates

    tok = VideoTokenizer(IdentityAutoencoder(3), 4, 8)
    model = open_gates(VideoGPT(ModelConfig(width=32, depth=1, heads=2), in_dim=tok.token_dim, grid=tok.grid), seed=0)
    clip = torch.rand(4, 2, 4, tok.token_dim, generator=torch.Generator().manual_seed(2)) * 2 - 1
    cond = torch.randn(4, 32, generator=torch.Generator().manual_seed(3))
    assert condition_gain(model, clip, cond, cond.clone()) == 1.0
    assert condition_gain(model, clip, cond, cond + 3.0) != 1.0  # open gates read the condition
    blind = VideoGPT(ModelConfig(width=32, depth=1, heads=2), in_dim=tok.token_dim, grid=tok.grid)
    assert condition_gain(blind, clip, cond, cond + 3.0) == 1.0  # zero-initialised gates ignore it
    with pytest.raises(ValueError, match=r"\(B, F, N, D\)"):
        condition_gain(model, clip[None], cond, cond)
    with pytest.raises(ValueError, match="both be"):
        condition_gain(model, clip, cond, cond[:2])
    with pytest.raises(ValueError, match=r"t=1.0"):
        condition_gain(model, clip, cond, cond, t=1.0)


def test_condition_errors_read_the_label_and_agree_with_condition_gain():
    from minivgpt.generation import condition_errors, condition_gain
    from minivgpt.notebook import open_gates

    tok = VideoTokenizer(IdentityAutoencoder(3), 4, 8)
    model = open_gates(VideoGPT(ModelConfig(width=32, depth=1, heads=2), in_dim=tok.token_dim, grid=tok.grid), seed=0)
    clip = torch.rand(4, 2, 4, tok.token_dim, generator=torch.Generator().manual_seed(2)) * 2 - 1
    conds = torch.randn(3, 32, generator=torch.Generator().manual_seed(3))
    errs = condition_errors(model, clip, conds, t=0.3, seed=7)
    assert errs.shape == (4, 3) and (errs > 0).all() and not torch.allclose(errs[:, 0], errs[:, 1])
    # each column is that condition's per-clip error: its mean over the clips is condition_gain's error
    gain = condition_gain(model, clip, conds[0].expand(4, -1), conds[2].expand(4, -1), t=0.3, seed=7)
    assert gain == pytest.approx((errs[:, 2].mean() / errs[:, 0].mean()).item(), rel=1e-5)
    same = condition_errors(model, clip, conds[:1].repeat(2, 1), t=0.3, seed=7)
    assert torch.equal(same[:, 0], same[:, 1])  # the same noise for every condition
    with pytest.raises(ValueError, match=r"\(K, W\)"):
        condition_errors(model, clip, conds[0])
    with pytest.raises(ValueError, match=r"\(B, F, N, D\)"):
        condition_errors(model, clip[0], conds)


def test_first_clip_path_ends_on_generate_s_first_clip():
    from minivgpt.generation import first_clip_path
    from minivgpt.notebook import open_gates

    tok = VideoTokenizer(IdentityAutoencoder(3), 4, 8)
    model = open_gates(VideoGPT(ModelConfig(width=32, depth=1, heads=2), in_dim=tok.token_dim, grid=tok.grid), seed=0)
    cond = torch.randn(3, 32, generator=torch.Generator().manual_seed(1))
    clip, preds = first_clip_path(model, cond, 2, steps=4, seed=5)
    assert preds.shape == (4, *clip.shape) and clip.shape == (3, 2, model.tokens_per_frame, model.in_dim)
    assert torch.allclose(clip, generate(model, cond, 1, 2, steps=4, seed=5)[:, 0], atol=1e-6)
    assert torch.allclose(clip, preds[-1], atol=1e-6)  # the last Euler step lands on the last prediction
    first = model.denoise(torch.randn(clip.shape, generator=torch.Generator().manual_seed(5)), torch.zeros(3), None,
                          cond)
    assert torch.allclose(preds[0], first, atol=1e-6)  # step 0: the prediction from the starting noise
    with pytest.raises(ValueError, match="batch="):
        first_clip_path(model, None, 2)


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_finetune_prior_zero_share_keeps_that_share_of_the_prior_term_at_pure_noise(share: float, monkeypatch):
    """With prior_t_max > 0 the prior term's times are drawn in [0, prior_t_max]; prior_zero_share of them stay at
    t = 0 exactly. The prior term is the fine-tuning's one call of VideoGPT.denoise, so its times are recorded there."""
    tok = VideoTokenizer(IdentityAutoencoder(3), 4, 8)
    model = VideoGPT(ModelConfig(width=32, depth=1, heads=2), in_dim=tok.token_dim, grid=tok.grid).eval()
    labels = torch.arange(8) % 2
    videos = torch.rand(8, 4, 3, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1
    vocab = Vocabulary.build(["a", "b"])
    ids = vocab.encode(["a" if y == 0 else "b" for y in labels.tolist()])
    seen = []
    denoise = VideoGPT.denoise

    def spy(self, noisy, t, *args, **kwargs):
        seen.append(t.detach().clone())
        return denoise(self, noisy, t, *args, **kwargs)

    monkeypatch.setattr(VideoGPT, "denoise", spy)
    finetune_conditional(model, tok, videos, labels, ids, 2, len(vocab), steps=25, batch_size=8, animate_prob=0.0,
                         prior_weight=1.0, prior_t_max=0.5, prior_zero_share=share)
    t = torch.cat(seen)
    assert len(t) == 25 * 16 and (t >= 0).all() and (t <= 0.5).all()
    at_zero = (t == 0).float().mean().item()
    assert abs(at_zero - share) < 0.08, at_zero  # 400 draws: a share off by 0.08 is 3 standard deviations


def test_finetune_label_weight_teaches_the_network_to_tell_the_labels_apart():
    """label_weight's cross-entropy on the per-label errors of the same noisy first clips widens the margin by which
    a clip's own label denoises it better than the other label (the implicit classifier of condition_errors). Two
    labels with the same mean clip (so the prior term cannot tell them apart): a random frame that the next frame
    repeats (label 0) or negates (label 1). After 40 steps the margin is several times that of the flow and prior
    terms alone."""
    from minivgpt.generation import condition_errors

    torch.manual_seed(0)
    tok = VideoTokenizer(IdentityAutoencoder(3), 4, 8)
    model = VideoGPT(ModelConfig(width=32, depth=1, heads=2), in_dim=tok.token_dim, grid=tok.grid).eval()
    labels = torch.arange(32) % 2
    sign = (1 - 2 * labels.float())[:, None, None, None, None] ** torch.arange(4.0)[None, :, None, None, None]
    videos = 0.5 * sign * torch.randn(32, 1, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    vocab = Vocabulary.build(["a", "b"])
    ids = vocab.encode(["a" if y == 0 else "b" for y in labels.tolist()])
    firsts = tok.encode(videos[:, :2].contiguous(), 2)[:, 0]

    def margin(weight: float) -> float:
        res = finetune_conditional(model, tok, videos, labels, ids, 2, len(vocab), steps=40, batch_size=8, lr=3e-3,
                                   warmup=2, text_prob=0.0, animate_prob=0.0, prior_weight=1.0, label_weight=weight)
        errs = condition_errors(res.model, firsts, res.conditioner(torch.arange(2)), t=0.3, seed=3)  # (32, 2)
        own, other = errs.gather(1, labels[:, None]), errs.gather(1, 1 - labels[:, None])
        return (other / own).log().mean().item()

    with_term, without = margin(1.0), margin(0.0)
    assert with_term > 0.0 and with_term > 3 * max(without, 1e-4), (with_term, without)
    for bad, match in ((dict(label_weight=-1.0), "label_weight"), (dict(label_t_max=1.0), "label_t_max"),
                       (dict(label_scale=0.0), "label_scale")):
        with pytest.raises(ValueError, match=match):
            finetune_conditional(model, tok, videos, labels, ids, 2, len(vocab), steps=1, **bad)


def test_first_clip_screen_reads_a_class_conditional_run(tmp_path, capsys):
    """scripts/first_clip_screen.py on a tiny run trained with the 6 labels: one row per sampler, the real
    clips' row, and the network's errors with each half of the label changed; a run without the labels is
    refused before any work."""
    import importlib.util
    from pathlib import Path

    from tiny import TINY

    from minivgpt.train import train

    path = Path(__file__).parent.parent / "scripts" / "first_clip_screen.py"
    spec = importlib.util.spec_from_file_location("first_clip_screen", path)
    screen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(screen)
    train({**TINY, "max_balls": 3, "num_classes": 6, "steps": 2, "out": str(tmp_path / "labelled")})
    screen.main([f"run={tmp_path / 'labelled'}", "samplers=2,2:1:2", "seeds=0,1", "per=2"])
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert any(line.startswith("real (8 frames)") for line in lines)
    assert sum(line.startswith(("2 (", "2:1:2 (")) for line in lines) == 2
    assert len([line for line in lines if line.startswith("t = ")]) == 5
    with pytest.raises(SystemExit, match="eta"):  # a sampler spec with too many parts
        screen.main([f"run={tmp_path / 'labelled'}", "samplers=2:1:2:4"])
    train({**TINY, "steps": 1, "out": str(tmp_path / "plain")})
    with pytest.raises(SystemExit, match="num_classes=6"):
        screen.main([f"run={tmp_path / 'plain'}"])
