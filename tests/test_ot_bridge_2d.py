"""The ot route on 2D bridges with ν = 0 (Benamou–Brenier): the W₂ map by the Monge–Ampère polish.

Checks: the correlated Gaussian closed form (ρ_t at T/4, T/2, 3T/4, φ up to its constant, kinetic
energy against (λ/2T)W₂²), self-convergence on N(0, I) → eight Gaussians (slow), and the errors.
"""

from __future__ import annotations

import numpy as np
import pytest

import pde
from pde import exact
from pde.ot.bfm import OTConvergenceError


def gaussian_2d(nt=8):
    return pde.bridge(pde.Gaussian([-1.0, 0.5], [[0.5, 0.2], [0.2, 0.3]]),
                      pde.Gaussian([1.0, -0.5], [[0.4, -0.25], [-0.25, 0.6]]), domain=[[-5, 5]] * 2, T=1.0, nu=0.0,
                      nt=nt)


def eight_gaussians(nt=4, radius=2.0, std=0.6):
    ang = 2 * np.pi * np.arange(8) / 8
    target = pde.GaussianMixture([1 / 8] * 8, [[radius * np.cos(a), radius * np.sin(a)] for a in ang],
                                 [[[std**2, 0.0], [0.0, std**2]]] * 8)
    return pde.bridge(pde.Gaussian([0.0, 0.0], [[1.0, 0.0], [0.0, 1.0]]), target, domain=[[-5.5, 5.5]] * 2, T=1.0,
                      nu=0.0, nt=nt)


def _l1(a, b, h):
    return float(np.abs(a - b).sum() * np.prod(h))


def test_gaussian_bridge_2d_against_benamou_brenier():
    problem = gaussian_2d()
    cf = exact.closed_form(problem)
    assert isinstance(cf, exact.BenamouBrenierGaussian)
    sol = pde.solve(problem, "ot", n=128)
    m = sol.meta
    assert m["route"] == "brenier-map" and sol.status in ("converged", "accepted-on-stall")
    pts = sol.grid().points()
    for k in (2, 4, 6):  # T/4, T/2, 3T/4. Target 1e-3; measured 9e-8 to 1.8e-7 (the scheme is exact for affine maps)
        assert _l1(sol.rho[k], cf.rho(pts, sol.t[k]), sol.h) < 1e-6, k
        d = sol.phi[k] - cf.phi(pts, sol.t[k])
        w = sol.rho[k] >= 1e-3 * sol.rho[k].max()
        assert float(np.ptp(d[w])) < 1e-3, k  # φ up to a constant; Hopf–Lax of the refined c-transform: O(h²)
    w2 = problem.lam / (2 * problem.T) * cf.w2sq()
    # target 1e-3 relative; measured 5.7e-9 (static) and 1.5e-8 (from the returned levels)
    assert abs(m["kinetic_energy"] - w2) / w2 < 1e-6
    assert abs(m["kinetic_energy_from_levels"] - w2) / w2 < 1e-3
    assert m["marginal_error_2"] < 1e-5 and m["mass_error"] < 1e-12


def test_polish_that_cannot_reach_accept_tol_raises_naming_it():
    with pytest.raises(OTConvergenceError, match=r"marginal error .* accept_tol = 1e-05"):
        pde.solve(eight_gaussians(), "ot", n=32, accept_tol=1e-5)


@pytest.mark.slow
def test_eight_gaussians_self_convergence():
    """N(0, I) → eight Gaussians: the continuation stalls at marginal errors 9e-4 / 7e-4 / 5e-4 (64², 128², 256²),
    accepted with accept_tol = 1.5e-3; the distances between successive grids fall at order ≈ 2.1–2.4."""
    sols = [pde.solve(eight_gaussians(), "ot", n=n, accept_tol=1.5e-3) for n in (64, 128, 256)]
    for k in (1, 2, 3):
        d = []
        for a, b in zip(sols, sols[1:]):
            rb = b.rho[k]
            rc = 0.25 * (rb[0::2, 0::2] + rb[1::2, 0::2] + rb[0::2, 1::2] + rb[1::2, 1::2])
            d.append(_l1(a.rho[k], rc, a.h))
        order = np.log2(d[0] / d[1])
        assert order > 1.5, (k, d)
        assert d[1] < 5e-3, (k, d)
    ke = [s.meta["kinetic_energy"] for s in sols]
    assert abs(ke[2] - ke[1]) < abs(ke[1] - ke[0])
