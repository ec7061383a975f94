# Set-up and entry points. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MUTATION_STAMP := $(VENV)/.installed-mutation

DOCS_STAMP := $(VENV)/.installed-docs
RAY_STAMP := $(VENV)/.installed-ray

.PHONY: setup data demo test test-slow test-ray bench docs mutate mutate-results clean

# torch is pinned to the CPU build first so that the package's torch range is already met
# and pip never pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

setup: $(STAMP) data

data: $(STAMP)
	$(BIN)/metavae data mnist

demo: setup
	$(BIN)/metavae demo

test: setup
	$(BIN)/python -m pytest

test-slow: setup
	$(BIN)/python -m pytest -m slow

$(RAY_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[test,ray]"
	touch $(RAY_STAMP)

# The Ray engine of `metavae reproduce` on a local Ray instance (ray is an optional extra, so
# `make test` skips this test when ray is absent).
test-ray: setup $(RAY_STAMP)
	METAVAE_REQUIRE_RAY=1 $(BIN)/python -m pytest tests/test_executor.py -k ray_engine_gives_the_local_results

bench: setup
	$(BIN)/python benchmarks/train_step.py
	$(BIN)/python benchmarks/data_parallel.py

$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[test,docs]"
	touch $(DOCS_STAMP)

# The documentation site (quick start, the Task protocol, API reference from the docstrings) into
# site/; --strict turns every warning (a broken link, a docstring naming a missing parameter) into a failure.
docs: $(DOCS_STAMP)
	$(BIN)/mkdocs build --strict --quiet

$(MUTATION_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[test,mutation]"
	touch $(MUTATION_STAMP)

# Mutation testing, not part of `make test` (see MUTATION.md). Settings in [tool.mutmut] of
# pyproject.toml. One worker and one torch thread: the machine is shared. npm is kept offline so
# that no mutant of the MNIST fetcher downloads anything. Narrow a run with MUTANTS, e.g.
#   make mutate MUTANTS='metavae.objectives.*'
# Results are kept in mutants/ and reused: only changed functions are re-tested next time.
MUTANTS ?=
mutate: $(MUTATION_STAMP)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 npm_config_offline=true $(BIN)/mutmut run --max-children 1 $(MUTANTS)

mutate-results: $(MUTATION_STAMP)
	$(BIN)/mutmut results

clean:
	rm -rf $(VENV) build src/*.egg-info mutants site
