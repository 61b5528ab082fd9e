"""Understanding probes: features of clean clips, pooling, linear probe, end-to-end fine-tuning, segmentation."""

import pytest
import torch

from minivgpt.backbone import batched, random_backbone
from minivgpt.clips import patchify
from minivgpt.config import ModelConfig
from minivgpt.metrics import boundary_f, mask_boundary, region_iou
from minivgpt.model import VideoGPT
from minivgpt.probes import features, finetune_classifier, linear_probe, pool, train_seg_head


def tiny_model(seed: int = 0, depth: int = 2) -> VideoGPT:
    torch.manual_seed(seed)
    return random_backbone(VideoGPT(ModelConfig(width=32, depth=depth, heads=2), in_dim=12, grid=(2, 2)), seed)


def test_features_shape_and_clean_only():
    model = tiny_model()
    x = torch.randn(2, 3, 2, 4, 12)
    feats = features(model, x, layer=0)
    assert feats.shape == (2, 3, 2, 4, 32)
    # causal: features of the first clip do not depend on later clips
    y = x.clone()
    y[:, 2] = torch.randn_like(y[:, 2])
    assert torch.allclose(features(model, y, 1)[:, :2], features(model, x, 1)[:, :2], atol=1e-5)
    assert not torch.allclose(features(model, y, 1)[:, 2], features(model, x, 1)[:, 2], atol=1e-3)
    # equal to the clean copies' states in the full training sequence, whatever the noisy copies hold
    grabbed = []
    hook = model.blocks[1].register_forward_hook(lambda m, i, o: grabbed.append(o[0]))
    with torch.no_grad():
        model(torch.randn_like(x), x, torch.rand(2, 3), drop_last_clean=False)
    hook.remove()
    clean_states = grabbed[0][:, 1::2].reshape(2, 3, 2, 4, 32)  # segments: noisy_0, clean_0, noisy_1, ...
    assert torch.allclose(clean_states, features(model, x, 1), atol=1e-4)
    assert torch.allclose(features(model, x, -1), features(model, x, 1))
    with pytest.raises(ValueError, match="name a block"):
        features(model, x, 2)


def test_pool_shapes():
    feats = torch.randn(2, 3, 2, 4, 32)
    assert pool(feats, "mean").shape == (2, 32) and pool(feats, "frames").shape == (2, 6 * 32)
    assert pool(feats, "all").shape == (2, 3 * 2 * 4 * 32)
    with pytest.raises(ValueError, match="mean, frames or all"):
        pool(feats, "max")


def test_random_backbone_has_open_gates():
    """A fresh VideoGPT is adaLN-Zero: every block is the identity. The random backbone's blocks are not."""
    x = torch.randn(2, 2, 2, 4, 12)
    fresh = VideoGPT(ModelConfig(width=32, depth=2, heads=2), in_dim=12, grid=(2, 2)).eval()
    with torch.no_grad():
        assert torch.allclose(features(fresh, x, 0), features(fresh, x, 1))  # the identity: why it needs opening
        rnd = random_backbone(fresh, seed=1)
        f0, f1 = features(rnd, x, 0), features(rnd, x, 1)
        assert (f1 - f0).norm() > 0.1 * f0.norm()  # the second block changes its input
        assert torch.equal(random_backbone(fresh, seed=1).blocks[0].attn.qkv.weight, rnd.blocks[0].attn.qkv.weight)
        assert not torch.equal(random_backbone(fresh, seed=2).blocks[0].attn.qkv.weight, rnd.blocks[0].attn.qkv.weight)
        assert rnd(x, x, torch.rand(2, 2)).abs().mean() > 0  # the output head is open too


def test_gradients_reach_the_backbone_and_the_frozen_path_needs_none():
    model = tiny_model()
    x = torch.randn(2, 2, 2, 4, 12)
    model.requires_grad_(True)
    features(model, x, layer=1).pow(2).mean().backward()
    for i, block in enumerate(model.blocks):
        for name, p in block.named_parameters():
            assert p.grad is not None and p.grad.abs().max() > 0, f"blocks.{i}.{name} got no gradient"
    model.zero_grad(set_to_none=True)
    frozen = batched(lambda z: features(model, z, 1), x, batch_size=1)  # the frozen read: no graph at all
    assert not frozen.requires_grad and frozen.shape == (2, 2, 2, 4, 32)
    assert torch.allclose(frozen, features(model, x, 1).detach(), atol=1e-5)


def test_finetune_classifier_trains_the_backbone_and_leaves_the_original_untouched():
    model = tiny_model(depth=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    y = torch.arange(64) % 2
    x = torch.randn(64, 2, 1, 4, 12) * 0.1 + (y.float() * 2 - 1)[:, None, None, None, None]  # the sign is the class
    clf = finetune_classifier(model, x[:48], y[:48], 2, steps=30, batch_size=16, warmup=2, log_every=1)
    assert (batched(clf, x[48:]).argmax(1) == y[48:]).float().mean() == 1.0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    moved = {k: (v - before[k]).abs().max().item() for k, v in clf.backbone.state_dict().items()}
    for name in ("blocks.0.attn.qkv.weight", "blocks.0.mlp.0.weight", "blocks.0.ada.weight", "inp.weight"):
        assert moved[name] > 1e-4, f"{name} did not move in fine-tuning"
    assert len(clf.records) == 30 and clf.records[-1]["loss"] < clf.records[0]["loss"]
    assert not any(p.requires_grad for p in clf.parameters())


def test_linear_probe_separable():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(3, (300,), generator=g)
    x = torch.randn(300, 8, generator=g) * 0.1
    x[torch.arange(300), y] += 2.0
    assert linear_probe(x[:200], y[:200], x[200:], y[200:], steps=100) > 0.95
    assert linear_probe(x[:200], y[:200], x[200:], y[200:], steps=0) < 0.8  # untrained: no better than luck


def test_seg_head_on_patch_pixels():
    g = torch.Generator().manual_seed(0)
    img = (torch.rand(64, 1, 8, 8, generator=g) > 0.5).float()  # random binary frames
    feats = patchify(img * 2 - 1, 4)  # (64, 4, 16): the pixels themselves
    head = train_seg_head(feats, img[:, 0].bool(), 4, steps=200, lr=0.05)
    pred = head(feats) > 0
    assert region_iou(pred, img[:, 0]) > 0.99


def test_region_iou_and_boundary_f_by_hand():
    a = torch.zeros(1, 10, 10, dtype=torch.bool)
    a[0, 2:6, 2:6] = True
    assert region_iou(a, a) == 1.0 and boundary_f(a, a) == 1.0
    b = torch.zeros_like(a)
    b[0, 2:6, 4:8] = True  # half overlap: 8 / 24
    assert abs(region_iou(a, b) - 8 / 24) < 1e-6
    assert mask_boundary(a).sum() == 12  # a 4x4 square has 12 boundary pixels
    c = torch.zeros_like(a)
    c[0, 2:6, 3:7] = True  # shifted by one pixel: every boundary pixel within tolerance 1
    assert boundary_f(a, c, tolerance=1) == 1.0 and boundary_f(a, c, tolerance=0) < 1.0
    far = torch.zeros_like(a)
    far[0, 7:9, 7:9] = True
    assert boundary_f(a, far) == 0.0
    empty = torch.zeros_like(a)
    assert boundary_f(empty, empty) == 1.0 and boundary_f(a, empty) == 0.0
    with pytest.raises(ValueError, match="same shape"):
        region_iou(a, a[:, :5])


def test_load_or_train_backbone_takes_the_first_run_that_exists(tmp_path):
    """``make pretrain``'s run first, then notebook 04's, else a short fallback run (and it says which)."""
    from tiny import TINY

    from minivgpt.backbone import load_or_train_backbone
    from minivgpt.train import train

    pretrain, nb04, fallback = tmp_path / "pretrain", tmp_path / "nb04", tmp_path / "fallback"
    _, _, cfg, origin = load_or_train_backbone([pretrain, nb04], fallback, steps=2, **TINY)
    assert "trained 2 steps here" in origin and (fallback / "last.pt").exists() and cfg.train.steps == 2
    train({**TINY, "steps": 3, "out": str(nb04)})
    assert "nb04" in load_or_train_backbone([pretrain, nb04], fallback, **TINY)[3]
    train({**TINY, "steps": 1, "width": 16, "heads": 2, "out": str(pretrain)})
    model, _, cfg, origin = load_or_train_backbone([pretrain, nb04], fallback, **TINY)
    assert "pretrain" in origin and "step 1 of 1" in origin and cfg.model.width == 16


def test_load_or_train_backbone_reads_prev_when_last_is_damaged(tmp_path):
    """A damaged last.pt falls back to prev.pt with a warning (as load_run does), instead of crashing."""
    from tiny import TINY

    from minivgpt.backbone import load_or_train_backbone
    from minivgpt.train import train

    run = tmp_path / "pretrain"
    train({**TINY, "steps": 2, "ckpt_every": 1, "out": str(run)})
    assert (run / "prev.pt").exists()
    (run / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="prev.pt"):
        _, _, _, origin = load_or_train_backbone([run], tmp_path / "fallback", **TINY)
    assert "step 1 of 2" in origin and not (tmp_path / "fallback" / "last.pt").exists()
