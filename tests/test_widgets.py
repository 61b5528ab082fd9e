"""The interactive explorers, without a browser: pure parts, then the widgets driven programmatically."""

import io

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from minivgpt import widgets  # noqa: E402
from minivgpt.masks import hierarchical_mask  # noqa: E402
from minivgpt.sequence import token_layout  # noqa: E402


def _png_size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


@pytest.mark.parametrize("K,F,N", [(1, 1, 1), (3, 2, 4), (4, 3, 2)])
@pytest.mark.parametrize("drop", [False, True])
def test_attended_by_is_the_mask_row(K, F, N, drop):
    full = hierarchical_mask(K, F, N)
    L = 2 * K * F * N - (F * N if drop else 0)
    for q in range(L):
        row, text = widgets.attended_by(q, K, F, N, drop)
        assert row.dtype == torch.bool and row.shape == (L,)
        assert torch.equal(row, full[q, :L])
        assert " attends to: " in text and text != ""


def test_attended_by_descriptions():
    K, F, N = 3, 2, 4
    S = F * N
    # noisy clip 2, frame 0, patch 1: the clean history and its own clip
    q = 4 * S + 1
    row, text = widgets.attended_by(q, K, F, N)
    assert text == (
        "noisy clip 2, frame 0, patch 1 attends to: "
        "clean clips 0-1 (all frames) and noisy clip 2 (all frames)"
    )
    assert int(row.sum()) == 3 * S
    # the first noisy clip has no history
    _, text = widgets.attended_by(0, K, F, N)
    assert text.startswith("noisy clip 0, frame 0, patch 0 attends to: noisy clip 0 (all frames)")
    assert "no history" in text
    # clean clip 1, frame 0: frame-causal inside its own clip
    _, text = widgets.attended_by(3 * S + 2, K, F, N)
    assert text == (
        "clean clip 1, frame 0, patch 2 attends to: clean clip 0 (all frames) and clean clip 1 (frame 0)"
    )
    # clean clip 2, last frame: every clean clip, nothing noisy
    _, text = widgets.attended_by(6 * S - 1, K, F, N)
    assert text == "clean clip 2, frame 1, patch 3 attends to: clean clips 0-2 (all frames)"


def test_attended_by_rejects_out_of_range():
    with pytest.raises(IndexError, match="outside the sequence"):
        widgets.attended_by(48, 3, 2, 4)
    with pytest.raises(IndexError, match="drop_last_clean=True"):
        widgets.attended_by(40, 3, 2, 4, drop_last_clean=True)


def test_describe_row_generic_rows():
    layout = token_layout(2, 3, 2)  # L = 24, each copy 6 tokens
    row = torch.zeros(24, dtype=torch.bool)
    assert widgets.describe_row(row, layout) == "nothing"
    row[6:10] = True  # clean clip 0, frames 0-1
    assert widgets.describe_row(row, layout) == "clean clip 0 (frames 0-1)"
    row[10] = True  # one patch of frame 2
    assert widgets.describe_row(row, layout) == "clean clip 0 (frames 0-2, some patches)"
    with pytest.raises(ValueError, match="shape"):
        widgets.describe_row(torch.zeros(5, dtype=torch.bool), layout)


def test_draw_query_and_png():
    fig = widgets.draw_query(5, 2, 2, 2, drop_last_clean=True)
    data = widgets.figure_png(fig, dpi=50)
    w, h = _png_size(data)
    assert w > 100 and h > 100


def test_mask_explorer_updates_when_sliders_move():
    ex = widgets.mask_explorer(max_clips=4, max_frames=3, max_tokens=4)
    assert ex.clips.max == 4 and ex.frames.max == 3 and ex.tokens.max == 4
    first_png, first_text = ex.image.value, ex.last_text
    assert first_png and first_text and first_text in ex.text.value
    assert ex.query.max == ex.seq_len() - 1

    ex.query.value = 0
    assert ex.last_text.startswith("noisy clip 0")
    assert ex.image.value != first_png

    ex.clips.value, ex.frames.value, ex.tokens.value = 4, 3, 4
    assert ex.query.max == 2 * 4 * 3 * 4 - 1
    ex.query.value = ex.query.max
    assert ex.last_text.startswith("clean clip 3, frame 2, patch 3")

    # dropping the last clean copy shortens the sequence and clamps the query into it
    ex.drop.value = True
    assert ex.query.max == 2 * 4 * 3 * 4 - 3 * 4 - 1 and ex.query.value == ex.query.max
    assert ex.last_text.startswith("noisy clip 3, frame 2, patch 3")

    # shrinking to a single token still works
    ex.drop.value = False
    ex.clips.value, ex.frames.value, ex.tokens.value = 1, 1, 1
    assert ex.query.max == 1 and ex.query.value <= 1
    ex.query.value = 1
    assert ex.last_text == "clean clip 0, frame 0, patch 0 attends to: clean clip 0 (all frames)"


def test_frame_png():
    v = torch.linspace(-1, 1, 3 * 3 * 4 * 5).reshape(3, 3, 4, 5)
    assert _png_size(widgets.frame_png(v, 0, scale=2)) == (10, 8)
    assert widgets.frame_png(v, 7) == widgets.frame_png(v, 2)  # past the end: last frame
    with pytest.raises(ValueError, match=r"\(T, C, H, W\)"):
        widgets.frame_png(v[0], 0)


def test_rollout_viewer_scrubs():
    g = torch.Generator().manual_seed(0)
    truth = torch.rand(6, 3, 8, 8, generator=g) * 2 - 1
    model = torch.rand(1, 4, 1, 8, 8, generator=g) * 2 - 1  # a leading batch of 1 and grayscale are fine
    view = widgets.rollout_viewer({"truth": truth, "model": model}, scale=2, context_frames=2)
    assert view.slider.max == 5 and set(view.images) == {"truth", "model"}
    assert "context" in view.label.value
    before = view.images["truth"].value
    view.slider.value = 3
    assert view.images["truth"].value != before and "predicted" in view.label.value
    view.slider.value = 5
    assert "model" in view.label.value  # the shorter video holds its last frame
    assert view.images["model"].value == widgets.frame_png(model[0], 3, 2)
    with pytest.raises(ValueError, match="empty"):
        widgets.rollout_viewer({})
    with pytest.raises(ValueError, match="must be"):
        widgets.rollout_viewer({"x": torch.zeros(3, 8, 8)})
