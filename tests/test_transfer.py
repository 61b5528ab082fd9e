"""Unit tests of minivgpt.transfer on tiny inputs whose answers are known."""

import torch

from minivgpt import transfer as T
from minivgpt.autoencoder import IdentityAutoencoder
from minivgpt.config import ModelConfig
from minivgpt.model import VideoGPT
from minivgpt.tokenizer import VideoTokenizer


def tiny_model(seed: int = 0) -> VideoGPT:
    torch.manual_seed(seed)
    model = VideoGPT(ModelConfig(width=32, depth=2, heads=2), in_dim=12, grid=(2, 2))
    for block in model.blocks:  # adaLN-Zero starts as identity; give the blocks something to do
        torch.nn.init.normal_(block.ada.weight, std=0.1)
    return model.eval()


def test_vocabulary_and_caption_encoder_shapes():
    caps = ["two balls: red hits blue", "one ball: red falls", "one ball"]
    vocab = T.Vocabulary.build(caps)
    assert vocab.itos[:2] == ["<pad>", "<unk>"] and vocab.itos[2] in ("ball", "one", "red")
    ids = vocab.encode(caps + ["purple ball"])
    assert ids.shape == (4, 5) and ids[2, 2:].eq(0).all() and ids[3, 0] == T.Vocabulary.UNK
    enc = T.CaptionEncoder(len(vocab), 16)
    out = enc(ids)
    assert out.shape == (4, 16)
    padded = vocab.encode(caps, max_len=9)  # padding does not change the pooled embedding
    assert torch.allclose(enc(padded), out[:3], atol=1e-6)
    cond = T.Conditioner(6, len(vocab), 32)
    use_text = torch.tensor([True, False, True])
    assert cond(torch.tensor([0, 1, 2]), ids[:3], use_text).shape == (3, 32)
    assert cond(torch.tensor([0, 1, 2])).abs().max() == 0  # zero-init: the backbone starts unchanged


def test_features_shape_and_clean_only():
    model = tiny_model()
    x = torch.randn(2, 3, 2, 4, 12)
    feats = T.features(model, x, layer=0)
    assert feats.shape == (2, 3, 2, 4, 32)
    # causal: features of the first clip do not depend on later clips
    y = x.clone()
    y[:, 2] = torch.randn_like(y[:, 2])
    assert torch.allclose(T.features(model, y, 1)[:, :2], T.features(model, x, 1)[:, :2], atol=1e-5)
    # equal to the clean copies' states in the full training sequence, whatever the noisy copies hold
    grabbed = []
    hook = model.blocks[1].register_forward_hook(lambda m, i, o: grabbed.append(o[0]))
    with torch.no_grad():
        model(torch.randn_like(x), x, torch.rand(2, 3), drop_last_clean=False)
    hook.remove()
    clean_states = grabbed[0][:, 1::2].reshape(2, 3, 2, 4, 32)  # segments: noisy_0, clean_0, noisy_1, ...
    assert torch.allclose(clean_states, T.features(model, x, 1), atol=1e-4)
    assert T.pool(feats, "mean").shape == (2, 32) and T.pool(feats, "frames").shape == (2, 6 * 32)


def test_linear_probe_separable():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(3, (300,), generator=g)
    x = torch.randn(300, 8, generator=g) * 0.1
    x[torch.arange(300), y] += 2.0
    assert T.linear_probe(x[:200], y[:200], x[200:], y[200:], steps=100) > 0.95


def test_retrieval_learns_identity_pairs():
    vocab = T.Vocabulary([f"<{i}>" for i in range(2)] + [f"w{i}" for i in range(20)])
    words = torch.arange(20)
    ids = (words + 2)[:, None]  # caption i is word i
    feats = torch.nn.functional.one_hot(words, 20).float()
    model = T.train_retrieval(feats, ids, len(vocab), dim=16, steps=150, batch_size=20)
    from minivgpt.metrics import retrieval_recalls

    assert retrieval_recalls(model.similarity(feats, ids))["R@1"] > 0.9


def test_seg_head_on_patch_pixels():
    g = torch.Generator().manual_seed(0)
    img = (torch.rand(64, 1, 8, 8, generator=g) > 0.5).float()  # random binary frames
    from minivgpt.clips import patchify

    feats = patchify(img * 2 - 1, 4)  # (64, 4, 16): the pixels themselves
    head = T.train_seg_head(feats, img[:, 0].bool(), 4, steps=200, lr=0.05)
    pred = head(feats) > 0
    assert T.region_iou(pred, img[:, 0]) > 0.99


def test_region_iou_and_boundary_f_by_hand():
    a = torch.zeros(1, 10, 10, dtype=torch.bool)
    a[0, 2:6, 2:6] = True
    assert T.region_iou(a, a) == 1.0 and T.boundary_f(a, a) == 1.0
    b = torch.zeros_like(a)
    b[0, 2:6, 4:8] = True  # half overlap: 8 / 24
    assert abs(T.region_iou(a, b) - 8 / 24) < 1e-6
    assert T.mask_boundary(a).sum() == 12  # a 4x4 square has 12 boundary pixels
    c = torch.zeros_like(a)
    c[0, 2:6, 3:7] = True  # shifted by one pixel: every boundary pixel within tolerance 1
    assert T.boundary_f(a, c, tolerance=1) == 1.0 and T.boundary_f(a, c, tolerance=0) < 1.0
    far = torch.zeros_like(a)
    far[0, 7:9, 7:9] = True
    assert T.boundary_f(a, far) == 0.0
    empty = torch.zeros_like(a)
    assert T.boundary_f(empty, empty) == 1.0 and T.boundary_f(a, empty) == 0.0


def test_animation_video():
    v = torch.arange(6.0).view(1, 6, 1, 1, 1).expand(2, 6, 1, 2, 2)
    out = T.animation_video(v, 3)
    assert out.shape == v.shape and out[0, :, 0, 0, 0].tolist() == [0, 0, 0, 1, 2, 3]
    tok = VideoTokenizer(IdentityAutoencoder(1), 1, 2)
    ctx = T.image_context(tok, v[:, 0], 3)
    assert ctx.shape == (2, 1, 3, 4, 1)


def test_finetune_conditional_lowers_loss_and_generates():
    torch.manual_seed(0)
    tok = VideoTokenizer(IdentityAutoencoder(3), 4, 8)
    model = VideoGPT(ModelConfig(width=32, depth=1, heads=2), in_dim=tok.token_dim, grid=tok.grid).eval()
    videos = torch.rand(8, 4, 3, 8, 8) * 2 - 1
    labels = torch.arange(8) % 2
    vocab = T.Vocabulary.build(["left", "right"])
    ids = vocab.encode(["left" if y == 0 else "right" for y in labels.tolist()])
    res = T.finetune_conditional(
        model, tok, videos, labels, ids, 2, len(vocab), steps=30, batch_size=8, lr=3e-3, warmup=2, log_every=1
    )
    losses = [r["loss"] for r in res.records]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    out = T.generate(res.model, res.conditioner(labels[:2]), 2, 2, steps=2, cfg_scale=1.5)
    assert out.shape == (2, 2, 2, 4, 48) and torch.isfinite(out).all()
    anim = T.generate(res.model, None, 1, 2, context=T.image_context(tok, videos[:2, 0], 2), steps=2)
    assert anim.shape == (2, 2, 2, 4, 48)
    assert T.predict_mean(res.model, anim[:, :1]).shape == (2, 2, 4, 48)


def test_video_classifier_features():
    clf = T.VideoClassifier(3, 6)
    v = torch.randn(2, 4, 3, 8, 8)
    assert clf(v).shape == (2, 6) and clf.features(v).shape == (2, 64)


def test_finetune_classifier_learns_and_leaves_the_backbone_untouched():
    from minivgpt.config import ModelConfig
    from minivgpt.model import VideoGPT
    from minivgpt.transfer import finetune_classifier

    torch.manual_seed(0)
    model = VideoGPT(ModelConfig(width=32, depth=1, heads=2), in_dim=4, grid=(2, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    y = torch.arange(64) % 2
    x = torch.randn(64, 2, 1, 4, 4) * 0.1 + (y.float() * 2 - 1)[:, None, None, None, None]  # the sign is the class
    acc = finetune_classifier(model, x[:48], y[:48], x[48:], y[48:], steps=30, batch_size=16)
    assert acc == 1.0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
