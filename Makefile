# Quickstart targets (see README.md). Each sets up .venv on first use.
#   make demo   install, then segment the organs at risk of a head-and-neck CT that nobody labelled for it,
#               automatically (--region), and print the DSC beside per-slice label-box prompting
#   make test   install, then lint (ruff) and run the whole test suite, printing the 15 slowest tests
#   make test-fast  the tests of logic alone: no real network, CT data, other process or long run (under 2 min)
#   make test-slicer-py312  the 3D Slicer module's glue tests on Python 3.12 (Slicer 5.10+'s), without torch
#   make bench  install, then benchmarks/run.py (speed and memory; writes benchmarks/results/latest.*)
PYTHON ?= python3
VENV ?= .venv
# PyTorch wheel(s); for a CPU-only install elsewhere:
#   make demo TORCH="torch --index-url https://download.pytorch.org/whl/cpu"
TORCH ?= torch==2.14.1 torchvision==0.29.1
DATA ?= ../shared/data
# A validation patient: never part of the built-in template nor of the localizer's training.
PATIENT ?= pt_201
BIN = $(VENV)/bin

.PHONY: demo test test-fast test-slicer-py312 lint bench install clean dicom3tools

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
	@hn="$(DATA)/hn-openkbp/validation"; \
	if [ -f "$$hn/$(PATIENT)_ct.nii.gz" ]; then \
	  ct="$$hn/$(PATIENT)_ct.nii.gz"; labels="$$hn/$(PATIENT)_oar.nii.gz"; classes="$$hn/../classes.json"; region=head-and-neck; \
	else \
	  echo "$$hn not found: downloading the public abdominal sample CT into data/abdomen-ts (the abdomen template's own scan)"; \
	  $(BIN)/ursam sample-data -o data/abdomen-ts || exit 1; \
	  ct=data/abdomen-ts/ct_small.nii.gz; labels=data/abdomen-ts/labels_small.nii.gz; classes=data/abdomen-ts/classes.json; region=abdomen; \
	fi; \
	echo "1/2 automatic: ursam segment $$ct --region $$region"; \
	$(BIN)/ursam segment "$$ct" -o out/demo --overwrite --region $$region --reference "$$labels" || exit 1; \
	echo "2/2 for comparison, prompted by per-slice boxes of the labels"; \
	$(BIN)/ursam segment "$$ct" -o out/demo-label-boxes --overwrite --prompt-labels "$$labels" --classes "$$classes" \
	  --prompt-mode slice --quiet || exit 1; \
	$(BIN)/python scripts/demo_table.py out/demo out/demo-label-boxes

lint: install
	$(BIN)/ruff check .

test: install lint
	$(BIN)/python -m pytest --durations=15
	@$(MAKE) --no-print-directory test-slicer-py312

# The Slicer module's glue tests (Testing/test_slicer_*.py) on the Python of Slicer 5.10 and later, in a
# virtual environment of only what they need, their versions as pyproject.toml declares them. torch is not
# installed there: the glue must not import it (the real model tests, marked `model`, are left out).
# Without python3.12 the check is skipped with a message (make test-slicer-py312 PY312=/path/to/python3.12).
# The first working Python 3.12: on PATH, else one pyenv installed (its python3.12 shim may be inactive).
PY312 ?= $(firstword $(foreach p,python3.12 $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12),\
  $(if $(shell $(p) -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && echo ok),$(p))) python3.12)
VENV312 ?= .venv-py312
SLICER_GLUE = numpy scipy SimpleITK scikit-image pydicom slicer-core PySide6-Essentials pytest hypothesis cmake

$(VENV312)/.installed: pyproject.toml Testing/slicer_glue_requirements.py
	$(PY312) -m venv $(VENV312)
	$(VENV312)/bin/python Testing/slicer_glue_requirements.py $(SLICER_GLUE) > $(VENV312)/requirements.txt
	$(VENV312)/bin/python -m pip install --quiet --disable-pip-version-check -r $(VENV312)/requirements.txt
	touch $@

test-slicer-py312:
	@if ! $(PY312) -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1; then \
	  echo "$(PY312) is not a working Python 3.12: the Slicer glue tests on Python 3.12 are skipped."; exit 0; fi; \
	$(MAKE) --no-print-directory $(VENV312)/.installed && \
	PYTHONPATH=$(CURDIR) $(VENV312)/bin/python -m pytest -q -p no:cacheprovider -m "not model" Testing/test_slicer_*.py

test-fast: install
	$(BIN)/python -m pytest -m "not slow and not model and not data and not subprocess"

bench: install
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) $(VENV312) out
