"""One entry point for every ground-truth method: ``solve(problem, method)``.

Methods register here by name and are imported lazily, so ``import pde``
needs neither Numba-compiled kernels nor DOLFINx. An unknown name lists the
valid ones.
"""

from __future__ import annotations

import importlib
from typing import Callable

from .problem import MFGProblem
from .solution import MFGSolution

__all__ = ["solve", "register_method", "METHODS"]

#: method name -> "module:function"
METHODS: dict[str, str] = {
    "exact": "pde.exact:solve_exact",
    "fd": "pde.fd:solve_fd",
    "fe": "pde.fe:solve_fe",
    "ot": "pde.ot:solve_ot",
}


def register_method(name: str, target: str | Callable) -> None:
    """Register a solver ``f(problem, **options) -> MFGSolution`` under ``name``."""
    METHODS[name] = target


def _resolve(name: str) -> Callable:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; expected one of {sorted(METHODS)}")
    target = METHODS[name]
    if callable(target):
        return target
    mod, func = target.split(":")
    return getattr(importlib.import_module(mod), func)


def solve(problem: MFGProblem, method: str = "fd", **options) -> MFGSolution:
    """Solve ``problem`` with a registered method and return the solution.

    Non-convergence raises (see each method); the returned solution carries
    status, iteration history and timings in ``meta``.
    """
    if not isinstance(problem, MFGProblem):
        raise TypeError(f"problem must be an MFGProblem (got {type(problem).__name__})")
    return _resolve(method)(problem, **options)
