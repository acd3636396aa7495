"""Numba kernel of the log-domain heat kernel (twin: :func:`pde.ot.heat.lse_apply_np`).

Compiled under the project's one jit policy (:mod:`pde.fd._jit`); imported
only when the log-domain Sinkhorn runs, so ``import pde`` compiles nothing.
"""

from __future__ import annotations

import math

from numba import prange

from ..fd._jit import fd_jit

__all__ = ["lse_rows"]


@fd_jit(parallel=True)
def lse_rows(logM, U, out):
    """out[r, i] = log Σ_l exp(logM[i, l] + U[r, l]) by a one-pass streaming log-sum-exp.

    Args:
        logM: (m, n) log kernel (−inf allowed).
        U: (R, n) log values along the lines (−inf allowed).
        out: (R, m) output.
    """
    R, n = U.shape
    m = logM.shape[0]
    for r in prange(R):
        for i in range(m):
            mx = -math.inf
            acc = 0.0
            for l in range(n):
                v = logM[i, l] + U[r, l]
                if v > mx:
                    acc = acc * math.exp(mx - v) + 1.0
                    mx = v
                elif v > -math.inf:
                    acc += math.exp(v - mx)
            out[r, i] = mx + math.log(acc) if mx > -math.inf else -math.inf
