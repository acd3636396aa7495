"""The one jit policy of the FD solver.

Every compiled kernel goes through :func:`fd_jit`, which

- compiles top-level functions with ``cache=True`` (so a fresh process reuses
  the machine code on disk instead of recompiling per test or per run);
- uses only the *safe* fastmath flags (``contract``, ``arcp`` off, no
  ``nnan``/``ninf``: NaN and Inf must survive so that the solver can report
  them, and reassociation would break the bitwise kernel/twin comparisons
  at the 1e-12 level less than it helps);
- keeps a serial and a ``parallel=True`` variant of kernels that loop over
  independent time levels, and dispatches to the parallel one only above
  :data:`PARALLEL_THRESHOLD` unknowns (thread start-up costs more than it
  saves on small grids);
- counts compilations (:func:`compile_count`), so that tests can assert that
  a parameter sweep does not recompile: physical parameters are kernel
  *arguments*, never closure constants.
"""

from __future__ import annotations

import time

__all__ = ["fd_jit", "compile_count", "compile_seconds", "PARALLEL_THRESHOLD", "KERNELS"]

#: unknowns (time levels × nodes) above which the parallel variant is used
PARALLEL_THRESHOLD = 200_000

#: safe fastmath subset: fused multiply-add contraction only
_FASTMATH = {"contract"}

#: every dispatcher created through fd_jit, by name
KERNELS: dict = {}
_COMPILE_SECONDS = [0.0]


class _Kernel:
    """A jitted function with an optional parallel twin, dispatched by size."""

    def __init__(self, fn, parallel: bool):
        import numba

        self.py_func = fn
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__
        self.serial = numba.njit(cache=True, fastmath=_FASTMATH, parallel=False)(fn)
        self.parallel = numba.njit(cache=True, fastmath=_FASTMATH, parallel=True)(fn) if parallel else None

    def __call__(self, *args, size: int = 0):
        disp = self.parallel if (self.parallel is not None and size > PARALLEL_THRESHOLD) else self.serial
        # len(overloads), not len(signatures): the latter copies the list, which costs more
        # than a small kernel call in the inner loops of the Krylov solvers
        before = len(disp.overloads)
        t0 = time.perf_counter()
        out = disp(*args)
        if len(disp.overloads) != before:  # this call compiled (or loaded from the disk cache)
            _COMPILE_SECONDS[0] += time.perf_counter() - t0
        return out

    def compiled(self) -> int:
        n = len(self.serial.overloads)
        if self.parallel is not None:
            n += len(self.parallel.overloads)
        return n


def fd_jit(parallel: bool = False):
    """Decorator: compile ``fn`` under the FD jit policy (see module docstring)."""

    def deco(fn):
        k = _Kernel(fn, parallel)
        KERNELS[fn.__name__] = k
        return k

    return deco


def compile_count() -> int:
    """Total number of compiled signatures over all FD kernels."""
    return sum(k.compiled() for k in KERNELS.values())


def compile_seconds() -> float:
    """Wall seconds spent in calls that compiled (or loaded cached code)."""
    return _COMPILE_SECONDS[0]
