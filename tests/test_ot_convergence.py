"""Convergence of the ot route: FD converges to it at FD's own order; its own observed order on a mixture."""

from __future__ import annotations

import numpy as np

import pde
from pde.ot.push import Interpolant

MIX1D = pde.GaussianMixture([0.5, 0.5], [[-1.0], [1.5]], [[[0.3]], [[0.5]]])
MIX2D = pde.GaussianMixture([0.4, 0.6], [[-1.5, 0.5], [1.2, -0.8]],
                            [[[0.3, 0.1], [0.1, 0.25]], [[0.35, -0.1], [-0.1, 0.3]]])


def _on(values, axes_from, axes_to):
    """Cubic-spline values of a fine-grid density at the nodes of a coarser grid (O(h⁴): no averaging bias)."""
    return Interpolant(values, axes_from)(np.stack(np.meshgrid(*axes_to, indexing="ij")))


def _order(hs, errs):
    return float(np.polyfit(np.log(hs), np.log(errs), 1)[0])


def test_fd_distance_to_ot_falls_at_fds_own_order():
    """Two independent discretisations of a 1D mixture otflow converge to one answer."""
    def prob(n, nt):
        return pde.otflow(MIX1D, domain=[[-6.0, 6.0]], T=1.0, lam=1.0, n=(n,), nt=nt)

    ref = pde.solve(prob(1600, 2), "ot")
    ns = (100, 200, 400)
    fd = [pde.solve(prob(n, n // 2), "fd") for n in ns]
    dist = []
    for s in fd:
        x = s.axes[0]
        dist.append(float(np.abs(s.rho[-1] - _on(ref.rho[-1], ref.axes, s.axes)).sum() * (x[1] - x[0])))
    # FD's own observed order from its successive differences (finer one interpolated to the coarser nodes)
    selfd = [float(np.abs(a.rho[-1] - _on(b.rho[-1], b.axes, a.axes)).sum() * (a.axes[0][1] - a.axes[0][0]))
             for a, b in zip(fd[:-1], fd[1:])]
    p_fd = float(np.log2(selfd[0] / selfd[1]))
    p_dist = _order([12.0 / n for n in ns], dist)
    assert dist[0] > dist[1] > dist[2]
    assert abs(p_dist - p_fd) <= 0.3, (dist, selfd, p_dist, p_fd)  # measured: 1.08 vs 1.04
    assert p_dist >= 0.8


def test_mixture_2d_observed_order():  # ~5 s: default
    """Self-convergence of ρ at T/2 and T over 32² → 64² → 128² → 256² (successive differences)."""
    sols = {n: pde.solve(pde.otflow(MIX2D, domain=[[-6, 6], [-6, 6]], n=(n, n), nt=2), "ot") for n in (32, 64, 128, 256)}
    for k in (1, 2):
        d = []
        for a, b in ((32, 64), (64, 128), (128, 256)):
            sa, sb = sols[a], sols[b]
            d.append(float(np.abs(sa.rho[k] - _on(sb.rho[k], sb.axes, sa.axes)).sum() * sa.cell_volume))
        order = _order([12.0 / 32, 12.0 / 64, 12.0 / 128], d)
        assert order >= 1.5, (k, d, order)
        assert d[-1] <= 5e-4, (k, d)


def test_gaussian_2d_256_vs_closed_form():  # ~2 s: default
    from pde.exact import closed_form

    prob = pde.otflow(pde.Gaussian([1.0, -0.5], [[0.5, 0.0], [0.0, 0.3]]), domain=[[-6, 6], [-6, 6]],
                      n=(256, 256), nt=2)
    sol = pde.solve(prob, "ot")
    grid = prob.grid()
    cf = closed_form(prob)
    for k, t in enumerate(grid.t):
        # the target at 256² is 3e-4; measured 2-3e-6 (exact for affine maps up to the polish's stall)
        assert float(grid.integrate(np.abs(sol.rho[k] - cf.rho(grid.points(), t)))) <= 3e-5
