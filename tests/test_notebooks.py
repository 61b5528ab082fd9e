"""Execute every notebook top to bottom, as CI does, with tiny parameters (MINIVGPT_CI=1)."""

from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    papermill = pytest.importorskip("papermill")
    monkeypatch.setenv("MINIVGPT_CI", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    papermill.execute_notebook(
        str(path), str(tmp_path / path.name), cwd=str(path.parent), kernel_name="python3", progress_bar=False
    )


def test_notebooks_are_stored_clean():
    import json

    assert NOTEBOOKS, "no notebooks found"
    for path in NOTEBOOKS:
        nb = json.loads(path.read_text())
        tags = [c.get("metadata", {}).get("tags", []) for c in nb["cells"]]
        assert any("parameters" in t for t in tags), f"{path.name} has no cell tagged 'parameters'"
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert not cell.get("outputs") and cell.get("execution_count") is None, f"{path.name} has outputs"



NB08 = Path(__file__).resolve().parent.parent / "notebooks" / "08_pretrain_at_scale.ipynb"
TINY08 = dict(steps=4, batch_size=2, width=32, depth=1, heads=2, patch_size=8, clips=2, stages="",
              ckpt_every=2, log_every=1, progress=False)


@pytest.mark.slow
def test_papermill_unknown_parameter_names_closest(tmp_path, monkeypatch):
    papermill = pytest.importorskip("papermill")
    monkeypatch.setenv("MINIVGPT_CI", "0")
    with pytest.raises(papermill.PapermillExecutionError, match="did you mean 'steps'"):
        papermill.execute_notebook(str(NB08), str(tmp_path / "o.ipynb"), parameters={**TINY08, "stepz": 3},
                                   cwd=str(NB08.parent), kernel_name="python3", progress_bar=False)


@pytest.mark.slow
def test_papermill_moving_mnist_full_path(tmp_path, monkeypatch):
    """`papermill ... -p data moving_mnist:PATH` on a small file in the standard (T, N, 64, 64) uint8 format."""
    import numpy as np

    papermill = pytest.importorskip("papermill")
    monkeypatch.setenv("MINIVGPT_CI", "0")
    arr = (np.random.default_rng(0).random((8, 6, 64, 64)) > 0.9).astype(np.uint8) * 255
    np.save(tmp_path / "mm.npy", arr)
    params = {**TINY08, "data": f"moving_mnist:{tmp_path / 'mm.npy'}", "image_size": 32, "out": str(tmp_path / "run")}
    papermill.execute_notebook(str(NB08), str(tmp_path / "o.ipynb"), parameters=params, cwd=str(NB08.parent),
                               kernel_name="python3", progress_bar=False)
    assert (tmp_path / "run" / "last.pt").exists()
