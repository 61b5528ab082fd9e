# minivgpt — every target creates/uses .venv on its own.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Notebooks run in CI with tiny parameters (see tests/test_notebooks.py).
export MINIVGPT_CI ?= 1

.PHONY: demo pretrain test lab figures bench lint book clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev]' 2>&1 | { grep -v "is ignored" || true; }
	touch $(STAMP)

demo: $(STAMP)
	MINIVGPT_CI=0 $(BIN)/python -m minivgpt.demo

# The shared backbone of notebooks 05-07: the demo's recipe on 1-3 balls (collisions), with its forecast report.
# preset=backbone (minivgpt.demo.PRESETS): max_balls=3 minutes=11 steps=1500 with the network every transfer figure
# was measured on, head=linear batch_size=16 width=128 mlp_ratio=4 head_hidden=0 (docs/results.md, "the output
# head"; the demo's batch became 8 and its network 96 wide with MLP ratio 2 later).
pretrain: $(STAMP)
	MINIVGPT_CI=0 $(BIN)/python -m minivgpt.demo preset=backbone out=runs/pretrain overwrite=true

test: $(STAMP)
	$(BIN)/python -m pytest tests -q

lab: $(STAMP)
	MINIVGPT_CI=0 $(BIN)/jupyter lab notebooks

figures: $(STAMP)
	MINIVGPT_CI=0 $(BIN)/python scripts/make_figures.py

bench: $(STAMP)
	$(BIN)/python -m minivgpt.bench json=runs/bench.json

lint: $(STAMP)
	$(BIN)/ruff check minivgpt tests scripts

# The notebooks executed with their CI parameters as a static site (book/conf.py); jupyter-cache re-executes
# only the notebooks whose code changed. Open book/_build/html/index.html.
book: $(STAMP)
	$(BIN)/sphinx-build -q -b html -c book . book/_build/html 2>&1 | { grep -v "Kernel is running over TCP" || true; }
	@echo "book: book/_build/html/index.html"

clean:
	rm -rf $(VENV) runs .pytest_cache book/_build
