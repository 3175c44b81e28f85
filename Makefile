# Quickstart targets (see README.md). Each sets up .venv on first use.
#   make demo   install, then segment 9 organs of a real abdominal CT (prints DSC, writes out/demo)
#   make test   install, then lint (ruff) and run the whole test suite, printing the 15 slowest tests
#   make test-fast  the tests without a real network or a long run (pytest -m "not slow and not model")
#   make bench  install, then benchmarks/run.py (speed and memory; writes benchmarks/results/latest.*)
PYTHON ?= python3
VENV ?= .venv
# PyTorch wheel(s); for a CPU-only install elsewhere:
#   make demo TORCH="torch --index-url https://download.pytorch.org/whl/cpu"
TORCH ?= torch==2.14.1 torchvision==0.29.1
DATA ?= ../shared/data/abdomen-ts
ORGANS ?= spleen,kidney_right,kidney_left,gallbladder,liver,stomach,pancreas,aorta,inferior_vena_cava
BIN = $(VENV)/bin

.PHONY: demo test test-fast lint bench install clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python .ci/qt_system_libs.py
	touch $@

demo: install
	@data="$(DATA)"; \
	if [ ! -f "$$data/ct_small.nii.gz" ]; then \
	  echo "$$data not found: downloading the public sample CT into data/abdomen-ts"; \
	  $(BIN)/ursam sample-data -o data/abdomen-ts || exit 1; data=data/abdomen-ts; \
	fi; \
	$(BIN)/ursam segment "$$data/ct_small.nii.gz" -o out/demo --overwrite \
	  --prompt-labels "$$data/labels_small.nii.gz" --classes "$$data/classes.json" \
	  --prompt-mode slice --organs $(ORGANS)

lint: install
	$(BIN)/ruff check .

test: install lint
	$(BIN)/python -m pytest --durations=15

test-fast: install
	$(BIN)/python -m pytest -m "not slow and not model"

bench: install
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) out
