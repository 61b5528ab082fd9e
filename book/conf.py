"""Sphinx configuration of the minivgpt book: the README as front page, the notebooks executed with their CI
parameters (cached by jupyter-cache), the worked solutions, and docs/ as appendix pages.

Build with ``make book`` (it runs ``sphinx-build -c book . book/_build/html``: the source folder is the
repository root, so the README's links to ``notebooks/`` and ``docs/`` resolve as they do on GitHub). Pure
Python (Sphinx, myst-nb, sphinx-book-theme); nothing is downloaded at build time. A rebuild re-executes only
the notebooks whose code changed (jupyter-cache); ``rm -rf book/_build`` starts from scratch.
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The notebooks run with their tiny CI parameters (notebook.ci_overrides), and with the inline matplotlib
# backend so that every figure is embedded in its page (MPLBACKEND=Agg, as the tests set it, would drop them).
os.environ.setdefault("MINIVGPT_CI", "1")
os.environ.pop("MPLBACKEND", None)
os.environ.setdefault("OMP_NUM_THREADS", "1")

project = "minivgpt"
author = "minivgpt contributors"
copyright = "minivgpt contributors, MIT licence"

extensions = ["myst_nb"]
root_doc = "README"
# the source folder is the repository root: read only what the book shows
include_patterns = ["README.md", "docs/*.md", "notebooks/[0-9][0-9]_*.ipynb", "notebooks/solutions/*.ipynb"]
exclude_patterns = ["book/_build", ".venv", "runs", "data"]
suppress_warnings = ["myst.header", "misc.highlighting_failure"]

# ---- myst-nb: execute with the CI parameters, cache the executed notebooks
nb_execution_mode = "cache"
# the cache lives next to the output folder: book/_build/.jupyter_cache for book/_build/html
nb_execution_timeout = 900  # seconds per cell
nb_execution_raise_on_error = True  # a notebook that fails is a failed build, not a chapter with a traceback
nb_execution_show_tb = True
nb_ipywidgets_js = {}  # no widget JavaScript from a CDN: widgets show their text form in the static pages
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

# ---- HTML
html_theme = "sphinx_book_theme"
html_title = "minivgpt: Video-GPT via next clip diffusion, by hand"
html_theme_options = {"show_toc_level": 2, "home_page_in_toc": True}
html_static_path = []

# The table of contents: chapters, solutions, appendix. It is added to the front page (the README) when the
# book is read, so the README itself stays a plain GitHub README.
CHAPTERS = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SOLUTIONS = sorted(p.stem for p in (ROOT / "notebooks" / "solutions").glob("*.ipynb"))
TOC = "\n\n".join(
    f"```{{toctree}}\n:caption: {caption}\n:maxdepth: 1\n\n" + "\n".join(entries) + "\n```"
    for caption, entries in (
        ("Chapters", [f"notebooks/{s}" for s in CHAPTERS]),
        ("Solutions to the exercises", [f"notebooks/solutions/{s}" for s in SOLUTIONS]),
        ("Appendix", ["docs/results", "docs/paper", "docs/design"]),
    )
)


def _add_toc(app, docname, source):
    if docname == root_doc:
        source[0] += "\n\n" + TOC + "\n"


def _index_redirect(app, exception):
    """``index.html`` opens the front page, so the folder can be served or opened as it is."""
    if exception is None and app.builder.format == "html":
        Path(app.outdir, "index.html").write_text(
            f'<!DOCTYPE html><meta charset="utf-8"><meta http-equiv="refresh" content="0; url={root_doc}.html">'
            f'<a href="{root_doc}.html">{project}</a>\n'
        )


def setup(app):
    app.connect("source-read", _add_toc)
    app.connect("build-finished", _index_redirect)
