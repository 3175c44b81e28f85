# Quickstart targets (see README.md). Each sets up .venv on first use.
#   make demo   install, then segment 9 organs of a real abdominal CT (prints DSC, writes out/demo)
#   make test   install, then run the whole test suite
#   make bench  install, then benchmarks/run.py (speed and memory; writes benchmarks/results/latest.*)
PYTHON ?= python3
VENV ?= .venv
# PyTorch wheel(s); for a CPU-only install elsewhere:
#   make demo TORCH="torch --index-url https://download.pytorch.org/whl/cpu"
TORCH ?= torch==2.14.1 torchvision==0.29.1
DATA ?= ../shared/data/abdomen-ts
ORGANS ?= spleen,kidney_right,kidney_left,gallbladder,liver,stomach,pancreas,aorta,inferior_vena_cava
BIN = $(VENV)/bin

.PHONY: demo test bench install clean dicom3tools

install: $(VENV)/.installed dicom3tools

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python .ci/qt_system_libs.py
	touch $@

# dciodvfy (Debian package dicom3tools) validates the DICOM objects in Testing/test_dicom_out.py.
# Installed as root where apt-get exists (CI); elsewhere those checks skip, and this says why.
dicom3tools:
	@if command -v dciodvfy >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dicom3tools >/dev/null; \
	else \
	  echo "dciodvfy not installed (it needs root and apt-get: apt-get install dicom3tools):" \
	       "the DICOM validation tests will skip."; \
	fi

demo: install
	@data="$(DATA)"; \
	if [ ! -f "$$data/ct_small.nii.gz" ]; then \
	  echo "$$data not found: downloading the public sample CT into data/abdomen-ts"; \
	  $(BIN)/ursam sample-data -o data/abdomen-ts || exit 1; data=data/abdomen-ts; \
	fi; \
	$(BIN)/ursam segment "$$data/ct_small.nii.gz" -o out/demo --overwrite \
	  --prompt-labels "$$data/labels_small.nii.gz" --classes "$$data/classes.json" \
	  --prompt-mode slice --organs $(ORGANS)

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) out
