"""The static optimal-transport route (``method="ot"``) for otflow, wgf and bridges.

ν = 0: the back-and-forth method on the dual of one JKO step; ν > 0: Sinkhorn
with the Neumann heat kernel and the Schrödinger system (``entropic``).
NumPy/SciPy/Numba only: nothing here imports torch or DOLFINx.

Entry point :func:`solve_ot` (registered as method ``"ot"`` in :func:`pde.solve`);
:func:`memory_estimate` gives the bytes a solve needs. The pieces: c-transform
kernels (:mod:`.legendre`), push-forwards (:mod:`.push`), the JKO step
(:mod:`.bfm`, :mod:`.monge_ampere`), time levels (:mod:`.interpolate`), the wgf
chain (:mod:`.wgf`). See ``docs/ot.md``.
"""

from .bfm import JKOResult, OTConvergenceError, jko_step
from .route import OTInputError, memory_estimate, solve_ot

__all__ = ["solve_ot", "memory_estimate", "jko_step", "JKOResult", "OTConvergenceError", "OTInputError"]
