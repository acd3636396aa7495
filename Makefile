# mfglab: `make demo` and `make test` install what is missing, then run.
PY      := .venv/bin/python
STAMP   := .venv/.mfglab-stamp
PYTEST  := $(PY) -m pytest

.PHONY: setup demo test test-all test-mpi test-debian13 bench teach gpu-check clean

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

# `make test` inside a Debian 13 chroot (DOLFINx 0.9, PETSc 3.22, Python 3.13); built once, cached
# in $$MFGLAB_TRIXIE_ROOT (default /var/cache/mfglab-trixie). Needs root or sudo.
test-debian13:
	bash .ci/test-debian13.sh

bench: $(STAMP)
	$(PY) -m benchmarks.run

teach: $(STAMP)
	for s in coupling score kinetic stability bridge; do $(PY) -m compare.cli wellposed $$s --force || exit 1; done

gpu-check:
	bash benchmarks/gpu_check.sh

clean:
	rm -rf .pytest_cache build *.egg-info
