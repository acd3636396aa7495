"""The truth's own error beside each metric: second route, coarser grid, marks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import trapezoid

import pde
from compare import metrics as M
from compare.cases import get_case
from compare.trutherror import attach_truth_error, coarsen_solution, mark_unresolved, truth_error_estimate


def test_second_route_estimate_is_the_fd_error_against_the_closed_form(tmp_path):
    c = get_case("otflow-gaussian-1d")
    p = c.problem(n=100, nt=10)
    fd = pde.solve(p, "fd")
    est = truth_error_estimate(c, p, "fd", fd, [0.0, 1.0], work_dir=tmp_path)
    ex = pde.solve(p, "exact")
    assert est["metrics"]["l1"]["values"][-1] == pytest.approx(M.l1_distance(fd.rho[-1], ex.rho[-1], fd.cell_volume))
    assert "closed form" in est["method"]


def test_coarser_grid_estimate_is_of_the_size_of_the_truth_error():
    p = get_case("otflow-gaussian-1d").problem(n=200, nt=20)
    fd = pde.solve(p, "fd")
    est = truth_error_estimate(None, p, "fd", fd, [1.0])  # one route only: the halved grid
    actual = M.l1_distance(fd.rho[-1], pde.solve(p, "exact").rho[-1], fd.cell_volume)
    e = est["metrics"]["l1"]["values"][-1]
    # first-order FD (measured order 0.9): e(2h) - e(h) ≈ e(h); the estimate is within a factor 2 of the error
    assert 0.5 * actual < e < 2.0 * actual
    assert "halved" in est["method"]


def test_coarsen_solution_averages_cells_and_refuses_odd_grids():
    p = get_case("otflow-gaussian-2d").problem(n=(12, 12), nt=4)
    s = pde.solve(p, "exact")
    c = coarsen_solution(s)
    coarse_exact = pde.solve(p.with_grid(n=(6, 6), nt=2), "exact")
    assert c.rho.shape == (3, 6, 6) and np.allclose(c.t, coarse_exact.t)
    np.testing.assert_allclose(c.axes[0], coarse_exact.axes[0], rtol=0, atol=1e-12)
    # the fine closed form restricted to the coarse nodes is the coarse closed form, to the interpolation error
    err = [M.l1_distance(c.rho[k], coarse_exact.rho[k], coarse_exact.cell_volume) for k in range(3)]
    fine = pde.solve(p.with_grid(n=(48, 48), nt=4), "exact")
    cf = coarsen_solution(fine)
    ref = pde.solve(p.with_grid(n=(24, 24), nt=2), "exact")
    err2 = [M.l1_distance(cf.rho[k], ref.rho[k], ref.cell_volume) for k in range(3)]
    assert max(err2) < max(err) / 8  # fourth order away from the two edge cells: ≥ 16× per halving of h
    assert coarsen_solution(pde.solve(p.with_grid(n=(13, 12)), "exact")) is None


def test_marks_values_at_or_below_the_truth_error():
    metrics = {"l1": {"t": [0.0, 1.0], "values": [1e-4, 0.05]}, "w2": {"t": [0.0, 1.0], "values": [None, 0.01]}}
    terr = {"method": "x", "metrics": {"l1": {"t": [0.0, 1.0], "values": [1e-3, 1e-3]},
                                       "w2": {"t": [0.0, 1.0], "values": [0.0, 0.02]}}}
    assert mark_unresolved(metrics, terr) == {"l1": [0.0], "w2": [1.0]}
    res = attach_truth_error({"metrics": metrics}, terr)
    assert res["truth_error"]["unresolved"]["w2"] == [1.0]


def test_closed_form_cutoff_error_is_the_metric_between_the_box_truth_and_the_whole_space_density():
    from scipy.stats import norm

    from compare.trutherror import exact_cutoff_error

    a = 2.5  # N(0, 1) cut to [−a, a]: m = 0.0124, large enough to read every formula
    m = 2 * norm.cdf(-a)
    x = np.linspace(-a, a, 200001)
    p = norm.pdf(x)
    ph = p / (1 - m)
    h2 = 1 - trapezoid(np.sqrt(ph * p), x)  # the closed form is 0 outside the box's support of p̂
    kl = trapezoid(ph * np.log(ph / p), x)
    est = exact_cutoff_error(m, [1.0])
    v = {k: s["values"][0] for k, s in est["metrics"].items()}
    assert v["l1"] == pytest.approx(m) and v["tv"] == pytest.approx(m / 2)
    assert v["hellinger"] == pytest.approx(np.sqrt(h2), rel=1e-6)
    assert v["kl_truth_model"] == pytest.approx(kl, rel=1e-6)
    # not estimated from m alone: no value, so no "not resolved" mark can come from it
    assert "w2" not in v and "kl_model_truth" not in v and set(est["not_estimated"]) == {"w2", "kl_model_truth"}
    marks = mark_unresolved({"w2": {"t": [1.0], "values": [0.0]}}, est)
    assert marks == {}


def test_halved_grid_estimate_says_which_measured_times_it_does_not_cover():
    p = get_case("otflow-gaussian-1d").problem(n=100, nt=10)
    fd = pde.solve(p, "fd")
    est = truth_error_estimate(None, p, "fd", fd, [0.1, 0.2])  # 0.1 is an odd level: not on the halved grid
    assert est["metrics"]["l1"]["t"] == pytest.approx([0.2]) and "not estimated at t = [0.1]" in est["method"]
    assert truth_error_estimate(None, p, "fd", fd, [0.1])["metrics"] == {}
