"""Finite-difference ground truth: a monotone implicit scheme solved all at once by Newton.

Entry point :func:`solve_fd` (registered as method ``"fd"`` in
:func:`pde.solve`). The scheme, its certificates and the options are
described in ``docs/fd.md``; the kernels in :mod:`pde.fd.kernels`.

Importing this package does not compile anything; Numba compiles (or loads
from its on-disk cache) on the first solve, and that time is reported as
``meta["timings"]["compile_s"]``.
"""

from __future__ import annotations

from .driver import FDConvergenceError, NonFiniteError, FDInputError, build_discretization, solve_fd

__all__ = ["solve_fd", "build_discretization", "FDConvergenceError", "NonFiniteError", "FDInputError"]
