"""The case registry: every case builds, its closed form runs, examples agree with the registry."""

from __future__ import annotations

import numpy as np
import pytest

import pde
from compare import cases as C

CASE_NAMES = [c.name for c in C.list_cases()]


def test_registry_has_enough_cases_covering_families_and_dimensions():
    assert len(CASE_NAMES) >= 8
    probs = [C.get_case(n).build() for n in CASE_NAMES]
    assert {p.family for p in probs} >= {"otflow", "sgm", "wgf", "lq"}
    assert {p.dim for p in probs} == {1, 2}
    assert any("fe" in C.get_case(n).truth for n in CASE_NAMES)
    assert C.DEFAULT_CASE in C.CASES


def test_unknown_case_lists_the_valid_ones():
    with pytest.raises(C.UnknownCase) as err:
        C.get_case("otflow-gausian-1d")
    msg = str(err.value)
    assert "otflow-gausian-1d" in msg and all(n in msg for n in CASE_NAMES)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_case_builds_and_describes_itself(name):
    case = C.get_case(name)
    prob = case.build()
    assert isinstance(prob, pde.MFGProblem)
    assert prob.name == name
    assert case.primary_truth in C.TRUTH_ROUTES and case.model in C.MODELS
    d = case.to_dict()
    assert d["truth"] == list(case.truth) and d["dim"] == prob.dim
    # default grid is small enough for the 2-core CPU: at most ~60k space-time nodes in 2D
    assert np.prod(prob.n) * (prob.nt + 1) <= 60_000
    assert name in C.format_cases()


@pytest.mark.parametrize("name", [n for n in CASE_NAMES if "exact" in C.get_case(n).truth])
def test_exact_route_runs_on_a_coarse_grid(name):
    case = C.get_case(name)
    prob = case.problem(n=24, nt=4)
    sol = pde.solve(prob, "exact")
    assert sol.rho.shape == (5,) + (24,) * prob.dim
    assert np.all(np.isfinite(sol.rho))
    # φ = -log ρ may be +inf where ρ underflows (checkerboard corners), never NaN or -inf
    assert not np.any(np.isnan(sol.phi)) and not np.any(sol.phi == -np.inf)
    # the box holds the laws to 1e-6 (problem validation); h = 0.5 puts the checkerboard's edges on
    # cell faces and resolves the narrowest law (lq-gaussian-2d at T, std 0.28) to 1% of unit mass
    assert np.all(np.abs(sol.mass() - 1.0) < 0.01), sol.mass()


def test_no_exact_route_where_the_closed_form_does_not_hold():
    # otflow with mixture data has no closed form; the obstacle case's closed form would ignore the hole
    with pytest.raises(ValueError):
        pde.closed_form(C.get_case("otflow-mixture-2d").build())
    assert C.get_case("obstacle-sgm-2d").truth == ("fe",)
    assert C.get_case("obstacle-sgm-2d").build().params["fe"]["mesh"] == "obstacle"


def test_obstacle_case_data_avoid_the_hole():
    """The FE solve starts from ρ₀ = η_T and refuses a mesh that misses more than 1e-3 of its mass
    (``solve_fe(mass_tol=1e-3)``): the obstacle's hole must hold well under that (at T = 1 it held 0.113)."""
    from meshes.generate import obstacle_geometry

    prob = C.get_case("obstacle-sgm-2d").build()
    (cx, cy), r = obstacle_geometry(prob.domain)
    g = np.linspace(-r, r, 801)
    X, Y = np.meshgrid(cx + g, cy + g, indexing="ij")
    inside = (X - cx) ** 2 + (Y - cy) ** 2 <= r * r
    pts = np.stack([X[inside], Y[inside]], axis=1)
    in_hole = float(prob.rho0.pdf(pts).sum() * (g[1] - g[0]) ** 2)
    assert in_hole < 1e-4, in_hole  # measured 6.2e-5 at T = 0.1


@pytest.mark.parametrize("name", [n for n in CASE_NAMES if C.get_case(n).example])
def test_example_file_holds_the_same_problem(name):
    case = C.get_case(name)
    path = C.EXAMPLES_DIR / case.example
    prob = case.build()
    from_file = pde.load_problem(path, {"n": list(prob.n), "nt": prob.nt})
    assert from_file.describe() == prob.describe()


@pytest.mark.parametrize("name", [n for n in CASE_NAMES if "exact" in C.get_case(n).truth])
def test_closed_form_truth_scores_zero_against_itself(name):
    from compare.metrics import evaluate

    prob = C.get_case(name).problem(n=24, nt=8)
    sol = pde.solve(prob, "exact")
    out = evaluate(sol, sol, prob)
    for key in ("l1", "hellinger", "kl_truth_model", "kl_model_truth", "w2", "phi_l2", "phi_max"):
        vals = [v for v in out["metrics"][key]["values"] if v is not None]
        assert vals and max(abs(v) for v in vals) < 1e-9, (key, vals)  # identical arrays: zero up to round-off
