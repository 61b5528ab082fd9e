"""The judge: a small video classifier trained on real videos."""

import pytest
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


def _balls_video(balls: int, right: bool, frames: int = 4) -> torch.Tensor:
    """(T, 3, 16, 16): ``balls`` 2x2 squares on black, all moving one pixel a frame right (or left)."""
    v = torch.full((frames, 3, 16, 16), -1.0)
    for t in range(frames):
        for b in range(balls):
            col = 6 + (t if right else -t)
            v[t, :, 1 + 5 * b : 3 + 5 * b, col : col + 2] = 1.0
    return v


def test_class_scores_reads_count_and_drift_from_the_pixels():
    """Four videos asked for labels 2 (balls - 1) + right; the stub classifier answers fixed labels, so every
    share is known by hand."""
    from minivgpt.judge import class_scores

    videos = torch.stack([_balls_video(1, True), _balls_video(2, False), _balls_video(3, True), _balls_video(2, True)])
    videos[3, 2] = -1.0  # a blank frame: the median count survives it, "acc, no blank" does not
    asked = torch.tensor([1, 2, 3, 3])  # as drawn: 1 ball right, 2 left; then 2 right asked of 3 balls; as drawn
    answers = torch.tensor([1, 3, 3, 3])  # the classifier: right, drift wrong, right (pixels: no), right (blank)
    clf = lambda v: torch.nn.functional.one_hot(answers[: len(v)], 6).float()  # noqa: E731
    s = class_scores(clf, videos, asked)
    assert s["accuracy"] == 0.75 and s["acc, no blank"] == 0.5
    assert s["count acc"] == 1.0 and s["drift acc"] == 0.75
    assert s["pixel count"] == 0.75 and s["pixel drift"] == 1.0 and s["pixel class"] == 0.75
    with pytest.raises(ValueError, match="asked"):
        class_scores(clf, videos, asked[:3])


def test_count_readings_by_hand():
    """Three 4-frame videos of 2x2 squares (clips of 2 frames): one keeps its 2 balls, one loses one of 3 in
    frame 3, one has a blank first frame; every share is counted by hand."""
    from minivgpt.judge import count_readings

    videos = torch.stack([_balls_video(2, True), _balls_video(3, True), _balls_video(1, False)])
    videos[1, 2:, :, 11:13] = -1.0  # the third ball gone from frame 3 on
    videos[2, 0] = -1.0  # nothing in frame 1
    r = count_readings(videos, torch.tensor([2, 3, 1]), frames_per_clip=2)
    assert r["objects, frame 1"] == pytest.approx(5 / 3) and r["objects, last"] == pytest.approx(5 / 3)
    assert r["right, frame 1"] == pytest.approx(2 / 3)  # the blank one is wrong
    assert r["right, frame 3"] == pytest.approx(2 / 3) and r["right, last"] == pytest.approx(2 / 3)  # the lost ball
    assert r["per frame"].tolist() == pytest.approx([5 / 3, 2.0, 5 / 3, 5 / 3])
    with pytest.raises(ValueError, match="balls"):
        count_readings(videos, torch.tensor([2, 3]), 2)
    with pytest.raises(ValueError, match="frames_per_clip=4"):
        count_readings(videos, torch.tensor([2, 3, 1]), 4)
