"""The truth cache: a second call loads instead of solving; grid, method and options change the key."""

from __future__ import annotations

import numpy as np

import pde
from compare.cache import cache_key, cached_solve
from compare.cases import get_case


class CountingSolve:
    def __init__(self):
        self.calls = 0

    def __call__(self, problem, method, **opts):
        self.calls += 1
        return pde.solve(problem, "exact")


def test_cache_hit_miss_and_corrupt_file(tmp_path):
    prob = get_case("sgm-mixture-1d").problem(n=40, nt=4)
    solve = CountingSolve()
    a = cached_solve(prob, "fd", tmp_path, solve=solve)
    b = cached_solve(prob, "fd", tmp_path, solve=solve)
    assert (a.hit, b.hit, solve.calls) == (False, True, 1)
    np.testing.assert_array_equal(a.solution.rho, b.solution.rho)
    np.testing.assert_array_equal(a.solution.extras["score"], b.solution.extras["score"])
    assert cached_solve(prob.with_grid(n=48), "fd", tmp_path, solve=solve).hit is False
    assert cached_solve(prob, "fe", tmp_path, solve=solve).hit is False
    assert cached_solve(prob, "fd", tmp_path, solve=solve, tol=1e-8).hit is False
    assert solve.calls == 4
    a.path.write_bytes(b"not a zip file")  # an interrupted foreign write: solved again, replaced
    c = cached_solve(prob, "fd", tmp_path, solve=solve)
    assert c.hit is False and solve.calls == 5
    assert cached_solve(prob, "fd", tmp_path, solve=solve).hit is True


def test_key_is_stable_across_rebuilds_of_the_same_problem():
    c = get_case("wgf-gaussian-2d")
    assert cache_key(c.build(), "fd") == cache_key(c.build(), "fd")
    assert cache_key(c.build(), "fd") != cache_key(c.problem(nt=30), "fd")
