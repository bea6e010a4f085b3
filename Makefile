# Everything runs inside a local virtual environment built from requirements.txt.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: venv test test-all demo bench clean

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade "pip>=24"
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $(STAMP)

venv: $(STAMP)   ## create or update .venv from requirements.txt

test: $(STAMP)   ## the fast CPU suite (CI runs this)
	$(PY) -m pytest -q

test-all: $(STAMP)   ## also the heavy tests (ViT-B/16 shapes, Houston-sized scenes)
	$(PY) -m pytest -q -m ""

demo: $(STAMP)   ## synthetic scene -> Arrow -> train MaMOL (tiny CLIP) -> evaluate under missing settings
	$(PY) -m mamol.demo --out demo_out

bench: $(STAMP)   ## model benchmarks (ratios measured side by side)
	$(PY) -m mamol.bench

clean:
	rm -rf demo_out bench_out .pytest_cache
