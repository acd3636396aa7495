"""Nothing is dropped silently: per-time reasons, at_T, sample/paths metrics, the Helmholtz split."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import fitted_order

import pde
from compare import metrics as M

EX = "examples"


def _otflow_1d(n=120, nt=10):
    p = pde.load_problem(f"{EX}/otflow_gaussian_1d.toml", {"n": [n], "nt": nt})
    return p, pde.solve(p, "exact")


def test_one_nan_in_the_model_density_drops_only_that_time():
    p, s = _otflow_1d()
    rho = s.rho.copy()
    rho[5, 17] = np.nan  # t = 0.5
    model = pde.MFGSolution(s.t, s.axes, rho, s.phi)
    out = M.evaluate(s, model, p, times=[0.0, 0.5, 1.0])
    for name in ("l1", "hellinger", "kl_truth_model", "w2", "mass_model"):
        m = out["metrics"][name]
        ref = 1.0 if name == "mass_model" else 0.0
        assert m["values"][0] == pytest.approx(ref, abs=1e-9) and m["values"][2] == pytest.approx(ref, abs=1e-9)
        assert m["values"][1] is None and "1 non-finite values" in m["reasons"]["0.5"], name
    assert "kinetic_bound_model" in out["summary"]  # ρ at 0 and T is usable
    json.dumps(out, allow_nan=False)


def test_a_nan_sample_gives_a_reason_not_a_silent_none(rng):
    p, s = _otflow_1d()
    cf = pde.closed_form(p)
    smp = {t: cf.law(t).sample(200, rng) for t in (0.0, 0.5, 1.0)}
    smp[1.0][3, 0] = np.nan
    out = M.evaluate(s, s, p, times=[0.0, 0.5, 1.0], samples=smp)
    for name in ("w2_samples", "energy_distance"):
        m = out["metrics"][name]
        assert m["values"][2] is None and "1 of 200 model samples are not finite" in m["reasons"]["1"]
        assert m["values"][0] is not None and m["values"][1] is not None


def test_non_finite_hjb_residual_of_the_model_is_reported_not_masked():
    p, s = _otflow_1d()
    phi = s.phi.copy()
    k = int(np.argmax(s.rho[5]))
    phi[5, k] = np.inf  # inside R_t
    model = pde.MFGSolution(s.t, s.axes, s.rho, phi)
    out = M.evaluate(s, model, p, times=[0.0, 0.5, 1.0])
    h = out["metrics"]["hjb_residual_l1"]
    assert h["values"][1] is None and "not finite at" in h["reasons"]["0.5"]
    # the neighbours in time see it through ∂tφ (np.gradient): t = 0.4 and 0.6 are not measured, 0 and 1 are clean
    assert h["values"][0] is not None and h["values"][2] is not None


def test_at_T_is_the_value_at_T_or_none():
    p, s = _otflow_1d()
    model = pde.solve(p.replace(lam=0.8), "exact")
    out = M.evaluate(s, model, p, times=[0.0, 0.5])
    l1 = out["summary"]["l1"]
    assert l1["at_T"] is None and l1["t_last"] == 0.5 and l1["at_last"] == out["metrics"]["l1"]["values"][-1]
    out = M.evaluate(s, model, p, times=[0.0, 1.0])
    assert out["summary"]["l1"]["at_T"] == out["metrics"]["l1"]["values"][-1] > 0.01


def test_every_metric_is_measured_or_has_a_reason():
    p, s = _otflow_1d()
    nan = np.full_like(s.rho, np.nan)
    out = M.evaluate(s, pde.MFGSolution(s.t, s.axes, nan, nan), p)
    names = {"l1", "tv", "hellinger", "kl_truth_model", "kl_model_truth", "mass_model", "w2", "w2_samples",
             "w2_sample_floor", "energy_distance", "energy_distance_floor", "path_kinetic_energy",
             "path_straightness", "phi_l2", "phi_max", "score_l2", "score_l2_rel", "kinetic_energy_model",
             "kinetic_bound", "nongradient_fraction", "hjb_residual_l1", "hjb_residual_max"}
    missing = names - set(out["metrics"]) - set(out["skipped"])
    assert not missing
    assert all(isinstance(v, str) and v for v in out["skipped"].values())


def test_energy_distance_zero_for_equal_sets_and_floor_shrinks(rng):
    X = rng.standard_normal((300, 2))
    assert M.energy_distance(X, X) == pytest.approx(0.0, abs=1e-12)
    # shift δ between Gaussians: D² → 2E|Z + δ| − 2E|Z| (Z ~ N(0, 2I) difference of two standard normals)
    fl = [M.energy_distance(rng.standard_normal((n, 1)), rng.standard_normal((n, 1))) for n in (100, 400, 1600)]
    assert fl[2] < fl[0]


def test_path_metrics_of_straight_and_bent_paths(rng):
    x0 = rng.standard_normal((500, 2))
    t = np.linspace(0.0, 1.0, 11)
    straight = x0[None] + t[:, None, None] * np.array([1.0, 0.5])
    assert M.path_straightness(straight, t) == pytest.approx(1.0, abs=1e-12)
    assert M.path_kinetic_energy(straight, t, lam=2.0) == pytest.approx(1.25, rel=1e-12)  # (λ/2)|v|² T
    # a quarter circle about the origin: the chord over the arc length, squared (constant speed)
    ang = 0.5 * math.pi * t
    circ = np.stack([np.cos(ang), np.sin(ang)], -1)[:, None, :].repeat(3, axis=1)
    chord2, arc = 2.0, 0.5 * math.pi
    # the polygon has 10 chords of angle π/20: its length is 20 sin(π/40)
    poly = 20 * math.sin(math.pi / 40)
    assert M.path_straightness(circ, t) == pytest.approx(chord2 / poly**2, rel=1e-12)
    assert chord2 / arc**2 < M.path_straightness(circ, t) < 1


def _radial_case(n):
    g = pde.Grid([[-5, 5], [-5, 5]], [n, n], 1, 1.0)
    X = g.points()
    r2 = (X**2).sum(-1)
    rho = np.exp(-r2 / 2) / (2 * math.pi)
    grad = -X  # a gradient field (of -r²/2)
    rot = np.stack([-X[..., 1], X[..., 0]], -1) * np.exp(-r2 / 4)[..., None]  # ∇·(ρ rot) = 0
    return g, rho, grad, rot


def test_nongradient_fraction_of_a_rotation_of_a_radial_density():
    fr, er = [], []
    hs = []
    for n in (24, 48, 96):
        g, rho, grad, rot = _radial_case(n)
        vol = g.cell_volume
        # exact: energies of the two parts (orthogonal in L²(ρ)) by the midpoint rule
        Eg = (rho * (grad**2).sum(-1)).sum() * vol
        Er = (rho * (rot**2).sum(-1)).sum() * vol
        f, _ = M.nongradient_fraction(grad + rot, rho, g.axes)
        fr.append(abs(f - Er / (Eg + Er)))
        er.append(M.nongradient_fraction(grad, rho, g.axes)[0])
        hs.append(g.h[0])
        assert M.nongradient_fraction(rot, rho, g.axes)[0] == pytest.approx(1.0, abs=0.02)
    # measured |error| 5.8e-3, 1.5e-3, 3.8e-4 (order 2); the linear gradient field -x is split exactly
    assert fr[-1] < 1e-3 and fitted_order(hs, fr) > 1.8
    assert max(er) < 1e-10


def test_nongradient_fraction_is_zero_in_1d(rng):
    g = pde.Grid([[-4, 4]], [80], 1, 1.0)
    x = g.axes[0]
    rho = np.exp(-x**2)
    v = rng.standard_normal((80, 1))
    assert M.nongradient_fraction(v, rho, g.axes)[0] == pytest.approx(0.0, abs=1e-10)


def test_nongradient_fraction_rejects_bad_shapes_and_nans():
    g, rho, grad, rot = _radial_case(16)
    with pytest.raises(ValueError, match="expected"):
        M.nongradient_fraction(grad[..., :1], rho, g.axes)
    bad = grad.copy()
    bad[3, 3, 0] = np.nan
    with pytest.raises(ValueError, match="not finite"):
        M.nongradient_fraction(bad, rho, g.axes)
