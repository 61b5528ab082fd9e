"""`make book`: the book builds from the notebooks, every chapter page exists and embeds its figures."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SOLUTIONS = sorted((ROOT / "notebooks" / "solutions").glob("*.ipynb"))
PLOTS = re.compile(r"plt\.show\(|plt\.subplots\(|viz\.(plot|show)_")


def plots(path: Path) -> bool:
    """Whether a notebook draws a figure (a code cell calls matplotlib or a viz plot helper)."""
    cells = json.loads(path.read_text())["cells"]
    return any(PLOTS.search("".join(c["source"])) for c in cells if c["cell_type"] == "code")


def test_the_figure_rule_sees_the_plotting_notebooks():
    assert all(plots(p) for p in CHAPTERS), "every chapter draws figures"


@pytest.mark.slow
def test_book_builds_with_every_chapter_and_its_figures(tmp_path, monkeypatch):
    pytest.importorskip("myst_nb")
    pytest.importorskip("sphinx_book_theme")
    monkeypatch.setenv("MINIVGPT_CI", "1")
    out = tmp_path / "html"
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-q", "-b", "html", "-c", "book", ".", str(out)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    warnings = [w for w in proc.stderr.splitlines() if "WARNING" in w and "Kernel is running over TCP" not in w]
    assert not warnings, "\n".join(warnings[:20])

    front = (out / "README.html").read_text()
    assert (out / "index.html").exists() and "README.html" in (out / "index.html").read_text()
    for page in ["docs/paper", "docs/design"] + [f"notebooks/{p.stem}" for p in CHAPTERS] + [
        f"notebooks/solutions/{p.stem}" for p in SOLUTIONS
    ]:
        assert (out / f"{page}.html").exists(), f"{page}.html was not built"
        assert f'href="{page}.html"' in front, f"{page} is missing from the table of contents"
    for nb in CHAPTERS + SOLUTIONS:
        html = (out / nb.relative_to(ROOT).with_suffix(".html")).read_text()
        assert "Traceback (most recent call last)" not in html, f"{nb.name} shows an error"
        if plots(nb):
            imgs = re.findall(r'<img[^>]+src="([^"]+)"', html)
            figures = [s for s in imgs if "_images/" in s]
            assert figures, f"{nb.name} plots but its page embeds no figure"
            page_dir = out / nb.relative_to(ROOT).parent
            assert all((page_dir / s).resolve().is_file() for s in figures), f"{nb.name}: a figure file is missing"
