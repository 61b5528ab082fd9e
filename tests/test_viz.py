import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from minivgpt import viz  # noqa: E402
from minivgpt.masks import hierarchical_mask  # noqa: E402
from minivgpt.sequence import token_layout  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _video(T=5, C=3, H=8, W=8, seed=0):
    return torch.rand(T, C, H, W, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _render(ax):
    ax.figure.canvas.draw()
    return ax


def test_to_image():
    rgb = viz.to_image(_video(C=3)[0])
    assert rgb.shape == (8, 8, 3) and rgb.min() >= 0 and rgb.max() <= 1
    gray = viz.to_image(_video(C=1)[0])
    assert gray.shape == (8, 8)
    assert viz.to_image(-torch.ones(1, 2, 2)).max() == 0 and viz.to_image(torch.ones(1, 2, 2)).min() == 1
    assert viz.to_image(_video(C=4)[0]).shape == (8, 8)


@pytest.mark.parametrize("C", [1, 3])
def test_strips_and_rows(C):
    v = _video(T=20, C=C)
    ax = _render(viz.show_strip(v, title="strip", max_frames=6))
    assert isinstance(ax, matplotlib.axes.Axes) and len(ax.get_xticks()) == 6
    rows = {"truth": v, "model": v[12:], "copy-last": v[-1:].expand(8, -1, -1, -1)}
    ax = _render(viz.show_videos(rows, context_frames=12, align="right", max_frames=20))
    assert [t.get_text() for t in ax.get_yticklabels()] == list(rows)
    assert len(ax.get_lines()) == 1  # the context | prediction line
    _, ax0 = plt.subplots()
    assert viz.show_strip(v[None], ax=ax0) is ax0


def test_plot_clips():
    clips = _video(T=6, C=1).reshape(3, 2, 1, 8, 8)
    ax = _render(viz.plot_clips(clips, title="clips"))
    assert len(ax.patches) == 3
    assert [t.get_text() for t in ax.get_xticklabels()] == ["clip 0", "clip 1", "clip 2"]


def test_plot_mask_with_layout():
    layout = token_layout(2, 2, 4)
    mask = hierarchical_mask(2, 2, 4)
    ax = _render(viz.plot_mask(mask, layout=layout))
    assert [t.get_text() for t in ax.get_xticklabels()] == ["n0", "c0", "n1", "c1"]
    L = len(layout)
    cut = mask[: L - 8, : L - 8]  # without the last clean copy
    ax = _render(viz.plot_mask(cut, layout=layout))
    assert [t.get_text() for t in ax.get_xticklabels()] == ["n0", "c0", "n1"]
    _render(viz.plot_mask(mask.numpy()))
    with pytest.raises(ValueError):
        viz.plot_mask(mask, layout=token_layout(1, 2, 4))


def test_plot_sequence_strip():
    layout = token_layout(3, 2, 4, drop_last_clean=True)
    ax = _render(viz.plot_sequence_strip(layout))
    assert len(ax.patches) == 5
    t_clip = torch.tensor([0.2, 0.5, 1.0])
    _render(viz.plot_sequence_strip(layout, t=t_clip))
    _render(viz.plot_sequence_strip(layout, t=torch.rand(len(layout))))
    with pytest.raises(ValueError):
        viz.plot_sequence_strip(layout, t=torch.rand(2))


@pytest.mark.parametrize("shape", [(5, 3, 8, 8), (5, 1, 8, 8), (3, 5, 3, 8, 8), (4, 5, 1, 6, 6)])
def test_save_gif(tmp_path, shape):
    video = torch.rand(*shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    path = viz.save_gif(video, tmp_path / "sub" / "v.gif", fps=5, scale=3)
    assert path.exists() and not [p for p in path.parent.iterdir() if p.name != "v.gif"]  # no temp left
    with Image.open(path) as im:
        assert im.format == "GIF" and im.n_frames == 5
        H, W = shape[-2:]
        if len(shape) == 4:
            assert im.size == (3 * W, 3 * H)
        else:
            ncol = int(np.ceil(np.sqrt(shape[0])))
            nrow = int(np.ceil(shape[0] / ncol))
            assert im.size == (3 * (ncol * W + ncol - 1), 3 * (nrow * H + nrow - 1))
        assert im.info["duration"] == 200


def test_save_gif_pixels_upscaled_nearest(tmp_path):
    video = -torch.ones(2, 1, 2, 2)
    video[:, :, 0, 0] = 1.0
    video[1, :, 1, 1] = 1.0
    path = viz.save_gif(video, tmp_path / "p.gif", scale=4)
    with Image.open(path) as im:
        im.seek(1)
        a = np.asarray(im.convert("L"))
    assert (
        a.shape == (8, 8) and (a[:4, :4] == 255).all() and (a[4:, 4:] == 255).all() and (a[:4, 4:] == 0).all()
    )


def test_video_html():
    html = viz.video_html(_video())
    assert isinstance(html, str) and html.startswith('<img src="data:image/gif;base64,')
    assert html._repr_html_() == str(html)


def test_plot_curves(tmp_path):
    records = [{"step": i, "loss": 1.0 / (i + 1), "lr": 1e-3} for i in range(10)]
    records.append({"step": 10, "eval_mse": 0.3})
    ax = _render(viz.plot_curves(records, keys=("loss", "lr", "missing"), logy=True))
    assert len(ax.get_lines()) == 2
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    ax = _render(viz.plot_curves(path, keys=("loss", "eval_mse")))
    assert len(ax.get_lines()) == 2 and list(ax.get_lines()[1].get_xdata()) == [10]
