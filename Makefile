# mfglab: `make demo` and `make test` install what is missing, then run.
PY      := .venv/bin/python
STAMP   := .venv/.mfglab-stamp
PYTEST  := $(PY) -m pytest

.PHONY: setup demo test test-all test-mpi bench gpu-check clean

$(STAMP): pyproject.toml .ci/setup.sh
	bash .ci/setup.sh

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m compare.cli demo

test: $(STAMP)
	$(PYTEST) -q

test-all: $(STAMP)
	$(PYTEST) -q -m "slow or not slow"

test-mpi: $(STAMP)
	$(PYTEST) -q -m mpi

bench: $(STAMP)
	$(PY) -m benchmarks.run

gpu-check:
	bash benchmarks/gpu_check.sh

clean:
	rm -rf .pytest_cache build *.egg-info
