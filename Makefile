# Everything runs inside a local virtual environment built from requirements.txt.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: venv lint test test-all test-slurm test-postgres test-latex demo figures bench clean

# The project itself is installed editable (pyproject.toml), without build isolation: setuptools<81 is
# already in the venv, and nothing is downloaded to build it.
$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade "pip>=24"
	$(VENV)/bin/pip install --quiet -r requirements.txt
	$(VENV)/bin/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)   ## create or update .venv from requirements.txt and pyproject.toml

lint: $(STAMP)   ## ruff on the whole tree (configured in pyproject.toml)
	$(VENV)/bin/ruff check .

test: lint   ## lint, then the fast CPU suite (CI runs this)
	$(PY) -m pytest -q

test-all: lint   ## also the heavy tests (ViT-B/16 shapes, Houston-sized scenes, the longer trainings)
	$(PY) -m pytest -q -m ""

test-slurm: lint   ## sweeps through launcher=slurm on a real one-node SLURM: scripts/slurm_local.sh up, tests, down (root)
	scripts/slurm_local.sh up
	$(PY) -m pytest -q -m slurm tests/experiments/test_slurm.py; status=$$?; scripts/slurm_local.sh down; exit $$status

test-postgres: lint   ## sweeps recorded by Sacred's SQL observer in a real PostgreSQL: scripts/postgres_local.sh up, tests, down (root)
	scripts/postgres_local.sh up
	MAMOL_POSTGRES_URL=$$(scripts/postgres_local.sh url) $(PY) -m pytest -q -m postgres tests/experiments/test_observers.py; \
	status=$$?; scripts/postgres_local.sh down; exit $$status

test-latex: lint   ## report.tex through a real pdflatex (scripts/install_latex.sh installs TeX Live if missing; root)
	scripts/install_latex.sh
	$(PY) -m pytest -q -m latex tests/experiments/test_report_latex.py

demo: $(STAMP)   ## synthetic scene -> Arrow -> train MaMOL (tiny CLIP) -> grid of missing settings -> map
	$(PY) -m mamol.demo --out demo_out

figures: $(STAMP)   ## the README's pictures (fig/robustness.png, fig/map_complete.png, fig/curves.png), made by the demo
	$(PY) -m mamol.demo --out demo_out --figures fig

bench: $(STAMP)   ## model benchmarks (ratios measured side by side)
	$(PY) -m mamol.bench

clean:
	rm -rf demo_out bench_out report_page_out .pytest_cache
