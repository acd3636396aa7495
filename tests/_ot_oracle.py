"""An independent oracle for the 1D JKO step: minimisation over quantile functions.

In 1D the optimal map is the monotone rearrangement, so the JKO step
ρ_T = argmin KL(ρ‖γ) + W₂²(μ, ρ)/(2τ) is, in terms of the quantile function
Q of ρ (u ∈ (0, 1), ρ(Q(u)) = 1/Q'(u)),

    min_Q ∫₀¹ [ log(1/Q'(u)) − log γ(Q(u)) + (Q(u) − Q_μ(u))²/(2τ) ] du,

with Q_μ the quantile function of μ. Discretised on u = Φ(z), z uniform on
[−z_max, z_max] (fine where the tails are), Q increasing through
log-increments, and minimised by L-BFGS with the exact gradient. Shares no
code with ``pde.ot``.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, special


def quantile_oracle(weights, means, stds, gamma_mean: float, gamma_std: float, tau: float, M: int = 2000,
                    zmax: float = 7.5):
    """Returns (Q at segment midpoints, density there, scipy result) for μ a 1D Gaussian mixture."""
    w, m, c = (np.asarray(a, dtype=float) for a in (weights, means, stds))
    z = np.linspace(-zmax, zmax, M + 1)
    u = special.ndtr(z)
    du = np.diff(u)
    um = 0.5 * (u[1:] + u[:-1])
    lo, hi = np.full(M, -30.0), np.full(M, 30.0)
    for _ in range(90):  # bisection on the mixture cdf
        mid = 0.5 * (lo + hi)
        below = (w[None, :] * special.ndtr((mid[:, None] - m[None, :]) / c[None, :])).sum(1) < um
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    qmu = 0.5 * (lo + hi)

    def objective(p):
        dq = np.exp(p[1:])
        qn = p[0] + np.concatenate([[0.0], np.cumsum(dq)])
        qm = 0.5 * (qn[1:] + qn[:-1])
        f = np.sum(du * (np.log(du / dq) + 0.5 * ((qm - gamma_mean) / gamma_std) ** 2 + (qm - qmu) ** 2 / (2 * tau)))
        dqm = du * ((qm - gamma_mean) / gamma_std**2 + (qm - qmu) / tau)
        g_dq = np.cumsum(dqm[::-1])[::-1] - 0.5 * dqm - du / dq
        return f, np.concatenate([[dqm.sum()], g_dq * dq])

    edges = np.concatenate([[qmu[0] - 0.5 * (qmu[1] - qmu[0])], 0.5 * (qmu[1:] + qmu[:-1]),
                            [qmu[-1] + 0.5 * (qmu[-1] - qmu[-2])]])
    p0 = np.concatenate([[edges[0]], np.log(np.maximum(np.diff(edges), 1e-12))])
    res = optimize.minimize(objective, p0, jac=True, method="L-BFGS-B",
                            options={"maxiter": 20000, "maxfun": 40000, "gtol": 1e-13, "ftol": 1e-16})
    dq = np.exp(res.x[1:])
    qn = res.x[0] + np.concatenate([[0.0], np.cumsum(dq)])
    return 0.5 * (qn[1:] + qn[:-1]), du / dq, res
