"""Finite-element ground truth (DOLFINx + PETSc): :func:`solve_fe`.

DOLFINx is imported only when :func:`solve_fe` is called, so ``import pde``
and ``import pde.fe`` work without it; the call then raises ImportError
saying how to install it. Every DOLFINx call lives in
:mod:`pde.fe._dolfinx_adapter`; the discretisation is described in
:mod:`pde.fe.operators` and :mod:`pde.fe.solver` and in docs/fe.md.
"""

from __future__ import annotations

__all__ = ["solve_fe", "available"]


def available() -> bool:
    """True when DOLFINx, petsc4py and mpi4py import."""
    try:
        from . import _dolfinx_adapter  # noqa: F401
    except ImportError:
        return False
    return True


def solve_fe(problem, n=None, nt=None, mesh=None, h=None, progress=True, **options):
    """Solve ``problem`` by P1 finite elements; see :func:`pde.fe.solver.solve_fe`."""
    from .solver import solve_fe as _solve

    return _solve(problem, n=n, nt=nt, mesh=mesh, h=h, progress=progress, **options)
