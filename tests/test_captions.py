"""Captions: vocabulary, caption encoder and video <-> caption retrieval on inputs whose answers are known."""

import torch

from minivgpt.captions import CaptionEncoder, Vocabulary, train_retrieval
from minivgpt.metrics import retrieval_recalls


def test_vocabulary_and_caption_encoder_shapes():
    caps = ["two balls: red hits blue", "one ball: red falls", "one ball"]
    vocab = Vocabulary.build(caps)
    assert vocab.itos[:2] == ["<pad>", "<unk>"] and vocab.itos[2] in ("ball", "one", "red")
    ids = vocab.encode(caps + ["purple ball"])
    assert ids.shape == (4, 5) and ids[2, 2:].eq(0).all() and ids[3, 0] == Vocabulary.UNK
    enc = CaptionEncoder(len(vocab), 16)
    out = enc(ids)
    assert out.shape == (4, 16)
    padded = vocab.encode(caps, max_len=9)  # padding does not change the pooled embedding
    assert torch.allclose(enc(padded), out[:3], atol=1e-6)
    assert CaptionEncoder(len(vocab), 16, zero_init=True)(ids).abs().max() == 0


def test_retrieval_learns_identity_pairs():
    vocab = Vocabulary([f"<{i}>" for i in range(2)] + [f"w{i}" for i in range(20)])
    words = torch.arange(20)
    ids = (words + 2)[:, None]  # caption i is word i
    feats = torch.nn.functional.one_hot(words, 20).float()
    model = train_retrieval(feats, ids, len(vocab), dim=16, steps=150, batch_size=20)
    assert retrieval_recalls(model.similarity(feats, ids))["R@1"] > 0.9
