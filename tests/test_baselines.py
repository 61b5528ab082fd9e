"""Tests for the forecasting baselines of minivgpt.metrics, above all the object-level constant velocity."""

from __future__ import annotations

import pytest
import torch

from minivgpt import metrics
from minivgpt.metrics import connected_components, constant_velocity


def moving_squares(num_frames: int, squares, size: int = 32, channels: int = 1, background: float = -1.0):
    """A video ``(T, C, size, size)`` of bright squares moving at constant velocity over a flat background.

    ``squares``: ``(y0, x0, vy, vx, side, value)`` per square (integer pixels per frame)."""
    video = torch.full((num_frames, channels, size, size), background)
    for t in range(num_frames):
        for y0, x0, vy, vx, side, value in squares:
            y, x = y0 + vy * t, x0 + vx * t
            ys, xs = slice(max(y, 0), max(y + side, 0)), slice(max(x, 0), max(x + side, 0))
            video[t, :, ys, xs] = value
    return video


def test_connected_components():
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    mask[0, 1:3, 1:3] = True  # a square
    mask[0, 5, 5] = mask[0, 6, 6] = True  # diagonal neighbours: one 8-connected component
    mask[0, 0, 7] = True
    labels = connected_components(mask)
    assert labels.shape == (2, 8, 8) and labels.dtype == torch.int64
    assert labels[0].max() == 3 and labels[1].max() == 0
    assert labels[0, 5, 5] == labels[0, 6, 6] != 0
    assert len({int(labels[0, 1, 1]), int(labels[0, 5, 5]), int(labels[0, 0, 7])}) == 3
    assert torch.equal(labels[0] > 0, mask[0])
    snake = torch.zeros(9, 9, dtype=torch.bool)  # a long winding path is still one component
    snake[0, :] = snake[:, 8] = snake[8, :] = snake[2:, 0] = snake[2, :7] = True
    assert connected_components(snake).max() == 1


def test_square_at_constant_velocity_is_exact():
    T, horizon = 6, 4
    video = moving_squares(T + horizon, [(4, 2, 1, 3, 4, 0.8)])
    pred = constant_velocity(video[:T].unsqueeze(0), horizon)
    assert pred.shape == (1, horizon, 1, 32, 32) and pred.dtype == video.dtype
    assert metrics.mse(pred[0], video[T:]) == 0
    # copy-last and pixel-wise linear extrapolation both miss it
    assert metrics.mse(metrics.copy_last(video[:T], horizon), video[T:]) > 0
    assert metrics.mse(metrics.linear_extrapolation(video[:T], horizon), video[T:]) > 0


def test_two_objects_with_different_velocities():
    T, horizon = 6, 3
    squares = [(2, 2, 0, 3, 4, 0.9), (24, 26, -2, -3, 5, 0.4)]
    video = moving_squares(T + horizon, squares, size=40, channels=3)
    batch = torch.stack([video, moving_squares(T + horizon, squares[:1], size=40, channels=3)])
    pred = constant_velocity(batch[:, :T], horizon)
    assert pred.shape == (2, horizon, 3, 40, 40)
    assert torch.equal(pred, batch[:, T:])


def test_object_leaving_the_frame_disappears():
    T, horizon = 4, 6
    video = moving_squares(T + horizon, [(10, 20, 0, 4, 4, 1.0)], size=32)  # reaches x >= 32 at t = 3
    pred = constant_velocity(video[:T], horizon)
    assert pred.shape == (horizon, 1, 32, 32)
    assert torch.equal(pred, video[T:])  # the truth also loses the square past the edge
    assert (pred[-1] == -1).all()


def test_reflect_folds_between_two_mirrors():
    position = torch.tensor([0.0, 3.0, 10.0, 11.0, 12.5, 20.0, 23.0, -2.0, -12.0])
    assert metrics.reflect(position, 10).tolist() == [0.0, 3.0, 10.0, 9.0, 7.5, 0.0, 3.0, 2.0, 8.0]
    assert metrics.reflect(position, 0).tolist() == [0.0] * 9


def test_walls_bounce_an_object_instead_of_losing_it():
    """A 4-pixel square moving right at 4 px/frame in a 32-pixel frame: its left edge at 16, 20, 24 in the
    context, then 28 (touching the wall), 24, 20, 16 as it bounces back (written out by hand)."""
    T, horizon, side = 3, 4, 4
    lefts = [16, 20, 24, 28, 24, 20, 16]
    video = torch.full((T + horizon, 1, 32, 32), -1.0)
    for t, x in enumerate(lefts):
        video[t, :, 6 : 6 + side, x : x + side] = 0.7
    bounced = constant_velocity(video[:T], horizon, walls=True)
    assert torch.equal(bounced, video[T:])
    plain = constant_velocity(video[:T], horizon)  # without walls it leaves: the square is gone after frame 1
    assert torch.equal(plain[0], video[T]) and (plain[1:] == -1).all()
    # an object moving away from every wall is the same either way
    free = moving_squares(T + horizon, [(4, 2, 1, 3, 4, 0.8)])
    assert torch.equal(constant_velocity(free[:T], horizon, walls=True), constant_velocity(free[:T], horizon))
    both = metrics.baselines(video[:T].unsqueeze(0), horizon)
    assert torch.equal(both["constant_velocity_walls"][0], bounced) and torch.equal(both["constant_velocity"][0], plain)


def test_static_video_gives_the_background():
    torch.manual_seed(0)
    frame = torch.rand(2, 3, 16, 16) * 2 - 1
    video = frame.unsqueeze(1).expand(2, 5, 3, 16, 16)
    pred = constant_velocity(video, 3)
    assert torch.equal(pred, frame.unsqueeze(1).expand(2, 3, 3, 16, 16))
    single = constant_velocity(video[:, :1], 2)  # one context frame: zero velocity
    assert torch.equal(single, frame.unsqueeze(1).expand(2, 2, 3, 16, 16))


def test_constant_velocity_errors():
    video = torch.zeros(1, 4, 1, 8, 8)
    with pytest.raises(ValueError, match="horizon must be >= 1"):
        constant_velocity(video, 0)
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\)"):
        constant_velocity(torch.zeros(8, 8), 2)
    with pytest.raises(TypeError, match="floating-point"):
        constant_velocity(video.to(torch.uint8), 2)


def test_evaluate_all_has_the_constant_velocity_row():
    T, horizon = 6, 2
    video = moving_squares(T + horizon, [(4, 2, 1, 3, 4, 0.8)]).unsqueeze(0)
    scores = metrics.evaluate_all(video[:, T:], video[:, :T], video[:, T:])
    assert scores["constant_velocity"]["mse"] == 0
    assert scores["copy_last"]["mse"] > 0


def test_object_shape_sees_a_ball_blur_and_fade():
    """A sharp ball predicted sharp: ratios 1; blurred (mass kept): more area, less peak; faded: peak 0.5."""
    H = 24
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(H), indexing="ij")

    def ball(cx, sigma=1.5, amp=2.0):
        return -1 + amp * torch.exp(-((yy - 12) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))

    ctx = torch.stack([ball(2), ball(22)])[None, :, None]  # (1, 2, 1, H, H); their median is the empty frame
    truth = torch.stack([ball(8), ball(10)])[None, :, None]
    same = metrics.object_shape(truth, truth, ctx)
    assert same["area_ratio"] == [1.0, 1.0] and same["peak_ratio"] == [1.0, 1.0]
    blurred = [ball(cx, 3.0, amp=0.5) for cx in (8, 10)]  # twice as wide, the same mass: a quarter of the peak
    blur = metrics.object_shape(torch.stack(blurred)[None, :, None], truth, ctx)
    assert all(a > 1.5 for a in blur["area_ratio"]) and all(p < 0.7 for p in blur["peak_ratio"])
    faded = metrics.object_shape(torch.stack([ball(8, amp=1.0), ball(10, amp=1.0)])[None, :, None], truth, ctx)
    assert faded["peak_ratio"] == pytest.approx([0.5, 0.5], abs=1e-6)
    with pytest.raises(ValueError, match="context must be"):
        metrics.object_shape(truth, truth, ctx[0])
