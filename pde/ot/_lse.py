"""Numba kernel of the log-domain heat kernel (twin: :func:`pde.ot.heat.lse_apply_np`).

Compiled under the project's one jit policy (:mod:`pde.fd._jit`); imported
only when the log-domain Sinkhorn runs, so ``import pde`` compiles nothing.
"""

from __future__ import annotations

import math

import numpy as np

from numba import prange

from ..fd._jit import fd_jit

__all__ = ["lse_rows", "lse_gauss_lines"]


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


@fd_jit(parallel=True)
def lse_gauss_lines(Ue, n, alpha, logc, cut, out):
    """log-sum-exp with a Gaussian kernel on a uniform line, only over the terms that matter.

    out[r, i] = log Σ_k exp(logc − alpha (i + n − k)² + Ue[r, k]),  i < n, k < Ue.shape[1]
    (Ue: the line extended by its images, node i of the line at index i + n; alpha = h²/(2·var)).

    For each i the exact max-plus value M_i = max_k (Ue[k] − alpha (i+n−k)²) comes from the lower
    envelope of parabolas (Felzenszwalb–Huttenlocher, O(length)); the sum then runs outward from
    the maximiser and stops on each side once even the largest Ue beyond (prefix/suffix maxima)
    cannot give a term above M_i − cut: the terms left out total below length·e^{−cut}·e^{M_i}.
    """
    R, L = Ue.shape
    for r in prange(R):
        u = Ue[r]
        # suffix and prefix maxima of u
        pre = np.empty(L)
        suf = np.empty(L)
        m = -math.inf
        for k in range(L):
            if u[k] > m:
                m = u[k]
            pre[k] = m
        m = -math.inf
        for k in range(L - 1, -1, -1):
            if u[k] > m:
                m = u[k]
            suf[k] = m
        # lower envelope of f(k) + (p − k)², f = −u/alpha, over finite u
        vv = np.empty(L, dtype=np.int64)
        zz = np.empty(L + 1)
        nv = 0
        for k in range(L):
            if not (u[k] > -math.inf):
                continue
            fk = -u[k] / alpha
            while True:
                if nv == 0:
                    vv[0] = k
                    zz[0] = -math.inf
                    zz[1] = math.inf
                    nv = 1
                    break
                q = vv[nv - 1]
                fq = -u[q] / alpha
                s = ((fk + k * k) - (fq + q * q)) / (2.0 * (k - q))
                if s <= zz[nv - 1]:
                    nv -= 1
                    continue
                vv[nv] = k
                zz[nv] = s
                zz[nv + 1] = math.inf
                nv += 1
                break
        j = 0
        for i in range(n):
            p = i + n
            if nv == 0:
                out[r, i] = -math.inf
                continue
            while zz[j + 1] < p:
                j += 1
            ks = vv[j]
            Mi = u[ks] - alpha * (p - ks) * (p - ks)
            acc = 0.0
            # rightwards from ks
            k = ks
            while k < L:
                d = p - k
                if k >= p and suf[k] - alpha * d * d < Mi - cut:
                    break
                v = u[k] - alpha * d * d - Mi
                if v > -745.0:
                    acc += math.exp(v)
                k += 1
            # leftwards from ks − 1
            k = ks - 1
            while k >= 0:
                d = p - k
                if k <= p and pre[k] - alpha * d * d < Mi - cut:
                    break
                v = u[k] - alpha * d * d - Mi
                if v > -745.0:
                    acc += math.exp(v)
                k -= 1
            out[r, i] = logc + Mi + math.log(acc)
