"""Execute every notebook top to bottom, as CI does, with tiny parameters (MINIVGPT_CI=1)."""

from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SOLUTIONS = sorted((Path(__file__).resolve().parent.parent / "notebooks" / "solutions").glob("*.ipynb"))


def _execute_ci(path, tmp_path, monkeypatch):
    """Run one notebook top to bottom with its CI parameters (MINIVGPT_CI=1), as `make test` does."""
    papermill = pytest.importorskip("papermill")
    monkeypatch.setenv("MINIVGPT_CI", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    papermill.execute_notebook(
        str(path), str(tmp_path / path.name), cwd=str(path.parent), kernel_name="python3", progress_bar=False
    )


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    _execute_ci(path, tmp_path, monkeypatch)


def test_notebooks_are_stored_clean():
    import json

    assert NOTEBOOKS and SOLUTIONS, "no notebooks found"
    for path in NOTEBOOKS + SOLUTIONS:
        nb = json.loads(path.read_text())
        tags = [c.get("metadata", {}).get("tags", []) for c in nb["cells"]]
        assert any("parameters" in t for t in tags), f"{path.name} has no cell tagged 'parameters'"
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert not cell.get("outputs") and cell.get("execution_count") is None, f"{path.name} has outputs"


def _section_numbers(path):
    import json
    import re

    nb = json.loads(path.read_text())
    return [int(m.group(1)) for c in nb["cells"] if c["cell_type"] == "markdown"
            for m in re.finditer(r"^## (\d+)\. ", "".join(c["source"]), re.M)]


def test_sections_are_numbered_in_order_and_references_to_them_exist():
    """Each chapter's '## N.' sections run 1, 2, 3, ...; every 'notebook 04 §10' / 'notebooks/05, section 4'
    in the library, scripts, docs, README, notebooks and tests names a section that exists."""
    import re

    root = NOTEBOOKS[0].parent.parent
    sections = {p.name[:2]: _section_numbers(p) for p in NOTEBOOKS}
    for name, numbers in sections.items():
        assert numbers == list(range(1, len(numbers) + 1)), f"notebook {name}: sections numbered {numbers}"
    ref = re.compile(r"notebooks?[/ ](\d\d)\b[^§\n]{0,4}(?:§ ?|sections? )(\d+)")
    files = [*root.glob("minivgpt/*.py"), *root.glob("scripts/*.py"), *root.glob("docs/*.md"), root / "README.md",
             *NOTEBOOKS, *SOLUTIONS, *root.glob("tests/*.py")]
    found = 0
    for path in files:
        for m in ref.finditer(path.read_text()):
            found += 1
            assert int(m.group(2)) in sections.get(m.group(1), []), (
                f"{path.relative_to(root)}: '{m.group(0)}' names a section notebook {m.group(1)} does not have "
                f"(it has {sections.get(m.group(1))})"
            )
    assert found >= 10, f"only {found} section references found: has the pattern stopped matching?"


def test_papermill_reads_every_parameter():
    """papermill parses the parameters cell line by line and skips (with only a log warning) a line with more
    than one '=' (one in a comment is enough); such a parameter is then missing from `papermill
    --help-notebook` and reported as "unknown" when passed with -p. Every assigned name must be found."""
    import ast
    import json

    translators = pytest.importorskip("papermill.translators")
    for path in NOTEBOOKS + SOLUTIONS:
        nb = json.loads(path.read_text())
        cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
        source = "".join(cell["source"])
        assigned = {t.id for node in ast.parse(source).body if isinstance(node, ast.Assign)
                    for t in node.targets if isinstance(t, ast.Name)}
        found = {p.name for p in translators.PythonTranslator.inspect({"source": source})}
        missing = sorted(assigned - found)
        assert not missing, f"{path.name}: papermill cannot read {missing} (a second '=' on the line?)"


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


# ----------------------------------------------------------------------------------------- exercises
# Every exercise check must pass on the worked answer (also executed in notebooks/solutions/) and raise
# ExerciseError on a wrong one, so no check passes whatever the learner writes.
SOLUTIONS = sorted((Path(__file__).resolve().parent.parent / "notebooks" / "solutions").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", SOLUTIONS, ids=[f"solutions/{p.stem}" for p in SOLUTIONS])
def test_solution_notebook_runs(path, tmp_path, monkeypatch):
    _execute_ci(path, tmp_path, monkeypatch)


def test_every_chapter_with_exercises_has_solutions():
    names = {p.stem for p in SOLUTIONS}
    for chapter in ("01", "02", "03", "04", "05", "06", "07", "08"):
        assert any(n.startswith(chapter) for n in names), f"no solutions for notebook {chapter}"


def _right_answers():
    import torch

    from minivgpt.masks import hierarchical_mask
    from minivgpt.sequence import token_layout
    from minivgpt.train import step_generator

    def t_per_video(B, K, g):
        return torch.rand(B, 1, generator=g).expand(B, K)

    def leaky(K, F, N):
        lay = token_layout(K, F, N)
        n, c = lay.is_noisy, lay.clip
        return hierarchical_mask(K, F, N) | (n[:, None] & n[None, :] & (c[None, :] < c[:, None]))

    def indices(step, rank, world, size=100, batch=8):
        idx = torch.randint(size, (batch,), generator=step_generator(0, step))
        local = batch // world
        return idx[rank * local : (rank + 1) * local].tolist()

    return dict(
        t_per_video=t_per_video,
        leaky=leaky,
        v_from_x=lambda xh, xt, t: (xh - xt) / (1 - t).reshape(-1, *[1] * (xh.ndim - 1)),
        weight=lambda t: (1 - t) ** 2,
        history_mse=lambda h, x_var: (1 - h) ** 2 / 3 * (1 + x_var),
        positions=lambda c, p, w: [list(range(max(0, k - w), k + 1)) for k in range(c, c + p)],
        indices=indices,
        tokens_per_frame=lambda H, W, s, p: (H // s // p) * (W // s // p),
        uncond=lambda model, history, x_t, t, cond: model.denoise(x_t, t, None, None),
        chance_levels=lambda y, c: (1 / c, torch.bincount(y, minlength=c).max().item() / len(y)),
    )


def test_exercise_checks_pass_right_and_reject_wrong_answers(capsys):
    import torch

    from minivgpt import notebook as nbk
    from minivgpt.masks import hierarchical_mask

    ok = _right_answers()
    assert nbk.check_t_per_video(ok["t_per_video"], 2.0, num_clips=4) == pytest.approx(2.0, rel=0.2)
    assert nbk.check_leaky_mask(ok["leaky"], False) > 1e-3
    nbk.check_x_vs_v(ok["v_from_x"], ok["weight"])
    assert nbk.check_history_mse(ok["history_mse"])[1.0] == 0.0
    nbk.check_guidance_sweep({1.0: 0.5, 1.5: 0.4, 3.0: 0.6}, 1.5, reference_mse=0.5)
    nbk.check_window_positions(ok["positions"], 1)
    nbk.check_rank_indices(ok["indices"])
    assert nbk.check_tokens_per_frame(ok["tokens_per_frame"], 256, 8192) == 256
    assert nbk.check_uncond_branch(ok["uncond"], 1.0, 0.0) > 1e-2
    nbk.check_chance_levels(ok["chance_levels"])
    nbk.check_block_sweep({0: 0.4, 1: 0.6, 2: 0.5}, 1, depth=3, reference_block=2, reference_acc=0.5)
    wrong = [
        lambda: nbk.check_t_per_video(lambda B, K, g: torch.rand(B, K, generator=g), 2.0),  # per clip, not per video
        lambda: nbk.check_t_per_video(ok["t_per_video"], 1.0),  # wrong ratio
        lambda: nbk.check_leaky_mask(lambda K, F, N: hierarchical_mask(K, F, N), False),  # the unchanged mask
        lambda: nbk.check_leaky_mask(ok["leaky"], True),  # "still exact"
        lambda: nbk.check_x_vs_v(lambda xh, xt, t: xh - xt, ok["weight"]),
        lambda: nbk.check_x_vs_v(ok["v_from_x"], lambda t: 1 - t),
        lambda: nbk.check_history_mse(lambda h, x_var: (1 - h) ** 2 / 3),  # forgets the clean part x
        lambda: nbk.check_history_mse(lambda h, x_var: (1 - h) ** 2 / 2 * (1 + x_var)),  # E[(1-t)^2] as a triangle
        lambda: nbk.check_guidance_sweep({1.0: 0.5, 1.5: 0.4, 3.0: 0.6}, 3.0, reference_mse=0.5),
        lambda: nbk.check_guidance_sweep({1.0: 0.7, 1.5: 0.4, 3.0: 0.6}, 1.5, reference_mse=0.5),
        lambda: nbk.check_window_positions(lambda c, p, w: [list(range(k + 1)) for k in range(c, c + p)], 1),
        lambda: nbk.check_window_positions(ok["positions"], 0),
        lambda: nbk.check_rank_indices(lambda step, rank, world: ok["indices"](step, 0, world)),
        lambda: nbk.check_tokens_per_frame(lambda H, W, s, p: (H // p) * (W // p), 256, 8192),  # forgets the VAE
        lambda: nbk.check_tokens_per_frame(lambda H, W, s, p: H // s // p, 256, 8192),  # one side only
        lambda: nbk.check_tokens_per_frame(ok["tokens_per_frame"], 256, 2 * 16 * 256 // 2),  # one copy per clip
        lambda: nbk.check_tokens_per_frame(ok["tokens_per_frame"], 1024, 8192),  # pixels 8x down, patch 1
        lambda: nbk.check_uncond_branch(  # keeps the history, drops only the condition
            lambda model, history, x_t, t, cond: model.denoise(x_t, t, model.prefill(history), None), 1.0, 0.0
        ),
        lambda: nbk.check_uncond_branch(  # drops the history, keeps the condition
            lambda model, history, x_t, t, cond: model.denoise(x_t, t, None, cond), 1.0, 0.0
        ),
        lambda: nbk.check_uncond_branch(ok["uncond"], 0.0, 1.0),  # the scales swapped
        lambda: nbk.check_chance_levels(lambda y, c: (1 / c, 1 / c)),  # ignores the label frequencies
        lambda: nbk.check_chance_levels(lambda y, c: (1 / len(y.unique()), ok["chance_levels"](y, c)[1])),
        lambda: nbk.check_block_sweep({0: 0.4, 1: 0.6, 2: 0.5}, 2, depth=3, reference_block=2, reference_acc=0.5),
        lambda: nbk.check_block_sweep({0: 0.4, 2: 0.5}, 2, depth=3, reference_block=2, reference_acc=0.5),
        lambda: nbk.check_block_sweep({0: 0.4, 1: 0.6, 2: 0.3}, 1, depth=3, reference_block=2, reference_acc=0.5),
    ]
    for i, call in enumerate(wrong):
        with pytest.raises(nbk.ExerciseError):
            call()
            pytest.fail(f"wrong answer {i} was accepted")
    assert nbk.check_x_vs_v(None, None) is None  # not attempted: says so, raises nothing
    assert "not attempted" in capsys.readouterr().out


def test_notebook08_parameters_are_the_config():
    """The parameters cell of notebook 08 names every config key exactly once, and nothing else."""
    import ast
    import json

    from minivgpt.config import valid_keys

    cells = json.loads(NB08.read_text())["cells"]
    src = next("".join(c["source"]) for c in cells if "parameters" in c.get("metadata", {}).get("tags", []))
    names = [t.id for node in ast.parse(src).body if isinstance(node, ast.Assign) for t in node.targets]
    assert sorted(names) == sorted(valid_keys()), set(names) ^ set(valid_keys())


def test_backbone_folders_default_chain_and_a_missing_run(tmp_path):
    """Notebooks 06-07's `backbone_run`: empty -> runs/pretrain then runs/nb04; a given run must hold a checkpoint
    (a clear error naming it, not a quiet fallback training), and is taken as given when it does."""
    from minivgpt.notebook import backbone_folders

    default = backbone_folders("")
    assert [p.name for p in default] == ["pretrain", "nb04"]
    with pytest.raises(FileNotFoundError, match="no last.pt in .*nowhere"):
        backbone_folders(str(tmp_path / "nowhere"))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "last.pt").write_bytes(b"")
    assert backbone_folders(str(tmp_path / "mine")) == [tmp_path / "mine"]


def test_gpu_script_runs_notebook08_moving_mnist_recipe():
    """scripts/gpu_run.sh (RECIPE=anchor) trains with notebook 08's papermill command for Moving MNIST, parameter
    for parameter (apart from where it writes and for how long), and every one of them is a valid config value;
    RECIPE=short differs from it only by 4-frame videos, a larger batch, and its own step and checkpoint counts."""
    import json
    import os
    import re
    import shlex
    import subprocess

    from minivgpt.config import from_params, parse_cli

    cells = json.loads(NB08.read_text())["cells"]
    md = next("".join(c["source"]) for c in cells if "runs/mm_gpu.ipynb" in "".join(c["source"]))
    command = re.search(r"papermill notebooks/08\S* runs/mm_gpu\.ipynb(.*?)\n(?!\s)", md, re.S).group(1)
    words = shlex.split(command.replace("\\\n", " "))
    assert words[::3] == ["-p"] * (len(words) // 3) and len(words) % 3 == 0, words
    notebook = dict(zip(words[1::3], words[2::3]))

    def recipe(name: str) -> dict[str, str]:
        env = {**os.environ, "RECIPE": name, "DRY": "1", "MNIST": "data/mnist", "TRAIN_MINUTES": "6.5"}
        root = NB08.parent.parent
        out = subprocess.run(["bash", str(root / "scripts" / "gpu_run.sh")], env=env, cwd=root, check=True,
                             capture_output=True, text=True).stdout
        return parse_cli(out.split())

    anchor, short = recipe("anchor"), recipe("short")
    where = {"out", "minutes", "overwrite", "log_every", "ckpt_every", "progress", "device"}
    assert set(anchor) - where == set(notebook) - {"out"}, set(anchor) ^ set(notebook)
    same = {k: v for k, v in notebook.items() if k != "out"}  # values as the config reads them (0.001 == 1e-3)
    assert from_params({k: anchor[k] for k in same}) == from_params(same)
    from_params(anchor)  # every name and value of the script's command is the config's
    differ = {k for k in anchor.keys() | short.keys() if anchor.get(k) != short.get(k)}
    assert differ == {"clips", "batch_size", "steps", "ckpt_every"}, differ
    assert (int(short["clips"]), int(short["batch_size"])) == (2, 128)
