"""The judge: a small video classifier trained on real videos."""

import torch

from minivgpt.judge import VideoClassifier, train_classifier


def test_video_classifier_features():
    clf = VideoClassifier(3, 6)
    v = torch.randn(2, 4, 3, 8, 8)
    assert clf(v).shape == (2, 6) and clf.features(v).shape == (2, 64)


def test_classifier_learns_motion_direction():
    """A ball moving left vs right: the same frames in opposite order, so only motion tells them apart."""
    g = torch.Generator().manual_seed(0)
    frames = torch.full((64, 4, 1, 8, 8), -1.0)
    cols = torch.randint(0, 5, (64,), generator=g)
    for i, c in enumerate(cols.tolist()):
        for t in range(4):
            frames[i, t, 0, 3:5, c + t] = 1.0  # moving right
    labels = torch.arange(64) % 2
    videos = torch.where(labels[:, None, None, None, None] == 1, frames.flip(1), frames)  # 1 = moving left
    clf = train_classifier(videos[:48], labels[:48], 2, steps=150, batch_size=16, lr=3e-3)
    assert not any(p.requires_grad for p in clf.parameters())
    assert (clf(videos[48:]).argmax(1) == labels[48:]).float().mean() > 0.9
