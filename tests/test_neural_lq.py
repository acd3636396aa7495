"""Neural lq model (direct method): exact-potential checks, training loop, grid density, bad input."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from conftest import fitted_order
from scipy.special import ndtr

import neural
import pde
from neural.models import NeuralLQ, lq_hjb_residual
from neural.particles import mixture_cell_density

torch.set_num_threads(1)

TINY = dict(width=8, nsteps=6, eval_particles=20000, eval_steps=8)


@pytest.fixture(scope="module")
def lq1d():
    return pde.load_problem("examples/lq_mixture_1d.toml", {"n": [120], "nt": 8})


def _lq_riccati_1d(nu=0.2):
    # q ≠ qT and λ ≠ 1: η(t) is not constant and every λ in the formulas matters
    return pde.lq(pde.GaussianMixture([0.4, 0.6], [[-1.0], [1.2]], [[[0.3]], [[0.5]]]), domain=[[-7, 7]], T=1.0,
                  q=1.3, qT=0.7, nu=nu, lam=0.8, n=140, nt=10)


def _lq_2d():
    return pde.lq(pde.Gaussian([0.5, -0.5], [[0.6, 0.2], [0.2, 0.4]]), domain=[[-6, 6], [-6, 6]], T=1.0, q=1.0,
                  qT=2.0, nu=0.1, lam=1.0, n=(40, 40), nt=6)


def _exact_model(prob, **kw):
    m = NeuralLQ(prob, **kw).double()
    m.net = neural.LQExactPotential(prob).double()
    return m


# ----------------------------------------------------------------------------
# the exact potential in the loss / residual code
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("make", [_lq_riccati_1d, _lq_2d])
def test_exact_lq_potential_has_zero_hjb_residual(make):
    prob = make()
    pot = neural.LQExactPotential(prob).double()
    cf = pde.closed_form(prob)
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.normal(size=(300, prob.dim)) * 2.0)
    t = torch.as_tensor(rng.random(300))
    phi, g, lap = pot.grad_lap(x, t)
    xn, tn = x.numpy(), t.numpy()
    # the torch potential is pde's closed form (an independent numpy implementation)
    ref = np.array([cf.phi(xi, ti) for xi, ti in zip(xn, tn)])
    vel = np.array([cf.velocity(xi, ti) for xi, ti in zip(xn, tn)])
    assert np.abs(phi.numpy() - ref).max() < 1e-12
    assert np.abs(g[:, :-1].numpy() + prob.lam * vel).max() < 1e-12
    # ∂tφ against centred differences of pde's φ: truncation δ²|∂t³φ|/6 ≲ 1e-10·700/6 ≈ 1e-8 (d³η/dt³ ≈ 66
    # near T for q_T = 2, |x - m̄|²/2 ≲ 10), round-off 1e-16·|φ|/δ ≈ 3e-10
    d = 1e-5
    fd = np.array([(cf.phi(xi, ti + d) - cf.phi(xi, ti - d)) / (2 * d) for xi, ti in zip(xn, tn)])
    assert np.abs(g[:, -1].numpy() - fd).max() < 1e-7
    R, _ = lq_hjb_residual(pot.grad_lap, x, t, pot.mbar, cf.q, prob.nu, prob.lam)
    # terms are O(1..10); float64 cancellation leaves ~1e-15
    assert R.abs().max().item() < 1e-12
    assert lap.abs().min().item() > 0.1  # the ν-terms are not vacuous

    class Scaled(torch.nn.Module):  # a wrong potential (1.1 φ) leaves an O(1) residual
        def grad_lap(self, x, t, need_lap=True, need_phi=True):
            p, gg, ll = pot.grad_lap(x, t, need_lap, need_phi)
            return None, 1.1 * gg, 1.1 * ll

    R_bad, _ = lq_hjb_residual(Scaled().grad_lap, x, t, pot.mbar, cf.q, prob.nu, prob.lam)
    assert R_bad.abs().max().item() > 0.1


def test_loss_of_exact_potential_is_the_value_function():
    # the optimal control's expected cost is E φ(X₀, 0) (the representative agent's value at the
    # equilibrium m̄): the loss code (kinetic + mean-field coupling + terminal, batch means) must give it
    prob = _lq_riccati_1d()
    cf = pde.closed_form(prob)
    out = []
    for nsteps in (25, 50, 100):
        m = _exact_model(prob, nsteps=nsteps, alpha_R=1.0)
        arr = m.draw(20000, np.random.default_rng(1), 0)
        loss, parts = m.loss({k: torch.as_tensor(v) for k, v in arr.items()})
        value = float(np.mean(cf.phi(arr["x"], 0.0)))  # the same X₀: only the path noise differs
        cost = (parts["kinetic"] + parts["coupling"] + parts["terminal"]).item()
        out.append(cost - value)
        # the residual along the particles is only the batch-mean error q|x - m̄||m̄_k - m̄| = O(n^{-1/2})
        assert parts["hjb"].item() < 0.02
        assert loss.item() == pytest.approx(cost + parts["hjb"].item(), abs=1e-12)
    errs = np.abs(out)
    print("cost - value for nsteps 25, 50, 100:", np.round(out, 5))
    # Euler–Maruyama weak error O(Δt) (measured 0.022, 0.012, 0.0047) plus Monte-Carlo noise ~1.5e-3
    # (std of the path cost minus φ(X₀, 0) ≈ 0.2, n = 2e4)
    assert errs[-1] < 0.01
    order = fitted_order(1.0 / np.array([25, 50, 100]), errs)
    assert 0.7 < order < 1.6, order  # weak order 1 of EM; the band allows for the MC noise on the finest error


# ----------------------------------------------------------------------------
# the density estimator
# ----------------------------------------------------------------------------


def test_mixture_cell_density_exact_cells_and_mass():
    e = np.linspace(-6, 6, 201)
    for c0, sig in [(0.0123, 0.05), (-1.77, 0.3), (2.5, 0.004)]:
        r = mixture_cell_density(np.array([[c0]]), sig, [[-6, 6]], (200,)) * 0.06
        # cell integrals of N(c0, σ²): the tabulated interpolation is accurate to ~1e-8
        assert np.abs(r - np.diff(ndtr((e - c0) / sig))).max() < 1e-7
    # near a wall the kernel is folded (reflecting) or wrapped (periodic): mass stays exactly 1
    for bc in ("reflecting", "periodic"):
        r = mixture_cell_density(np.array([[5.99], [-5.9]]), 0.3, [[-6, 6]], (200,), bc)
        assert abs(r.sum() * 0.06 - 1) < 1e-13
    rng = np.random.default_rng(0)
    c2 = rng.normal(size=(5000, 2))
    for sig in (0.0, 0.05, 0.6):
        r = mixture_cell_density(c2, sig, [[-3, 3], [-3, 3]], (30, 24))  # particles beyond the walls: folded
        assert abs(r.sum() * 0.2 * 0.25 - 1) < 1e-12 and r.shape == (30, 24)
    # 2-D product structure: a separable check against the 1-D cells
    r = mixture_cell_density(np.array([[0.1, -0.2]]), 0.2, [[-3, 3], [-3, 3]], (30, 24))
    rx = mixture_cell_density(np.array([[0.1]]), 0.2, [[-3, 3]], (30,))
    ry = mixture_cell_density(np.array([[-0.2]]), 0.2, [[-3, 3]], (24,))
    assert np.abs(r - np.outer(rx, ry)).max() < 1e-12


def test_particle_density_of_exact_potential_matches_closed_form():
    # the whole evaluation path with the exact control: what is left is the estimator's error.
    # Bound: E|p̂_j - p_j| ≤ sqrt(Var p̂_j) ≤ sqrt(p_j/N) for cell masses (the kernel average has at most
    # the histogram's variance), so E L1 ≤ Σ_j sqrt(p_j/N); plus 0.005 for the EM (O(h)) and cell-average
    # (h²/24 ρ'') biases (the whole L1 is ≤ 0.0055 at N = 8e5 on lq-mixture-1d, docs/neural.md).
    prob = _lq_riccati_1d()
    N = 40000
    m = _exact_model(prob, eval_particles=N, eval_steps=40)
    rho, phi, extras = m.evaluate_grid(prob.grid())
    g = prob.grid()
    cf = pde.closed_form(prob)
    for k in range(1, g.t.size):
        p = cf.rho(g.points(), g.t[k])
        bound = np.sqrt(np.clip(p * g.h[0], 0, None) / N).sum() + 0.005
        l1 = g.integrate(np.abs(rho[k] - p))
        assert l1 < bound, (k, l1, bound)
        assert abs(g.integrate(rho[k]) - 1) < 1e-12  # cell averages of a folded mixture: mass to round-off
    np.testing.assert_allclose(extras["velocity"][3, :, 0], cf.velocity(g.points(), g.t[3])[:, 0], rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------
# training loop
# ----------------------------------------------------------------------------


def test_lq_loss_falls_grid_and_trajectories(lq1d):
    res = neural.train(lq1d, "lq", steps=40, seed=0, progress=False, batch=128, **TINY)
    assert set(res.parts) == {"kinetic", "coupling", "terminal"}
    # the untrained Φ starts at ≈ 1.6; the optimum is the value E φ(X₀, 0) ≈ 1.08 (+ the O(Δt) EM bias)
    assert res.losses[-5:].mean() < res.losses[:5].mean() - 0.3, (res.losses[:5], res.losses[-5:])
    sol = neural.evaluate_on_grid(res)
    g = sol.grid()
    assert sol.rho.shape == (9, 120) and sol.meta["density"].startswith("particles")
    np.testing.assert_allclose(sol.rho[0], lq1d.rho0.pdf(g.points()), rtol=1e-12)
    assert np.all(np.abs(sol.mass()[1:] - 1) < 1e-12)
    # v = -∂xφ/λ (centred differences of the returned φ, O(h²))
    h = g.h[0]
    dphi = (sol.phi[:, 2:] - sol.phi[:, :-2]) / (2 * h)
    v = sol.extras["velocity"][:, 1:-1, 0]
    assert np.abs(v + dphi / lq1d.lam).max() < 5e-2 * max(1.0, np.abs(v).max())
    x0 = lq1d.rho0.sample(64, np.random.default_rng(0))
    a = neural.trajectories(res, x0, nt=4)
    b = neural.trajectories(res, x0, nt=4)
    c = neural.trajectories(res, x0, nt=4, seed=5)
    assert a.shape == (5, 64, 1)
    np.testing.assert_array_equal(a, b)  # seeded noise
    assert np.abs(a[-1] - c[-1]).max() > 1e-3  # ν > 0: another seed, other paths
    np.testing.assert_array_equal(a[0], x0)


def test_lq_hjb_penalty_and_terminal_term_train():
    res = neural.train(_lq_2d(), "lq", steps=15, seed=1, progress=False, batch=64, alpha_R=1.0, alpha_T=0.5,
                       **TINY)
    assert set(res.parts) == {"kinetic", "coupling", "terminal", "hjb", "terminal_mismatch"}
    assert np.all(np.isfinite(res.losses))
    assert res.losses[-3:].mean() < res.losses[:3].mean()


def test_lq_resume_reproduces_uninterrupted_run(tmp_path, monkeypatch, lq1d):
    kw = dict(steps=6, seed=3, progress=False, batch=32, ckpt_every=100, **TINY)
    full = neural.train(lq1d, "lq", out_dir=tmp_path / "a", **kw)
    orig = NeuralLQ.draw

    def draw(self, n, rng, step):
        if step == 3:
            raise KeyboardInterrupt
        return orig(self, n, rng, step)

    monkeypatch.setattr(NeuralLQ, "draw", draw)
    with pytest.raises(KeyboardInterrupt):
        neural.train(lq1d, "lq", out_dir=tmp_path / "b", **kw)
    assert neural.load_checkpoint(tmp_path / "b" / "checkpoint.pt")["step"] == 3
    monkeypatch.setattr(NeuralLQ, "draw", orig)
    resumed = neural.train(lq1d, "lq", out_dir=tmp_path / "b", **kw)
    # same batches and noise (seeded by step), same Adam state: bit-identical on CPU
    np.testing.assert_array_equal(resumed.losses, full.losses)
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    back = neural.load(tmp_path / "b")
    assert back.model_name == "lq" and back.problem.fingerprint() == lq1d.fingerprint()


# ----------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------


def test_lq_bad_input(lq1d):
    ot = pde.load_problem("examples/otflow_gaussian_1d.toml")
    with pytest.raises(ValueError, match="model 'lq' needs a problem of family lq.*got family 'otflow'"):
        neural.train(ot, "lq", steps=1)
    with pytest.raises(ValueError, match="family otflow"):
        neural.train(lq1d, "otflow", steps=1)
    with pytest.raises(ValueError, match="nsteps=0"):
        NeuralLQ(lq1d, nsteps=0)
    with pytest.raises(ValueError, match="eval_particles=1"):
        NeuralLQ(lq1d, eval_particles=1)
    with pytest.raises(ValueError, match="bandwidth=-0.1"):
        NeuralLQ(lq1d, bandwidth=-0.1)
    with pytest.raises(ValueError, match="alpha_R=-1"):
        NeuralLQ(lq1d, alpha_R=-1.0)
    with pytest.raises(ValueError, match="nu"):  # ν < 0 cannot even be built
        pde.lq(lq1d.rho0, domain=[[-6, 6]], nu=-0.1)
    with pytest.raises(ValueError, match="sigma"):
        mixture_cell_density(np.zeros((3, 1)), -1.0, [[-1, 1]], (10,))


# ----------------------------------------------------------------------------
# slow: accuracy against the Riccati closed form
# ----------------------------------------------------------------------------


def discrete_riccati_gain(q, qT, lam, T, nsteps):
    """η of the Euler-discretised problem: the optimal feedback ∇Φ(x, t_k) = η_k (x - m̄).

    With piecewise-constant controls over steps Δt the optimum of Σ(λ/2)|u|²Δt + (q/2)|y|²Δt + (q_T/2)|y_N|²,
    y_{k+1} = y_k + uΔt (+ noise: certainty equivalence), is u_k = -P_{k+1} y_k/(λ + P_{k+1}Δt) with
    P_N = q_T, P_k = qΔt + λP_{k+1}/(λ + P_{k+1}Δt); so η_k = λP_{k+1}/(λ + P_{k+1}Δt) = η(t_k) + O(Δt).
    """
    dt = T / nsteps
    P = qT
    eta = np.empty(nsteps)
    for k in range(nsteps - 1, -1, -1):
        eta[k] = lam * P / (lam + P * dt)
        P = q * dt + lam * P / (lam + P * dt)
    return eta


@pytest.mark.slow
def test_lq_mixture_1d_matches_riccati():
    from compare.cases import get_case

    case = get_case("lq-mixture-1d")
    prob = case.problem()
    res = neural.train(prob, "lq", steps=case.budget, seed=0, progress=False)
    sol = neural.evaluate_on_grid(res)
    g = sol.grid()
    cf = pde.closed_form(prob)
    P = g.points()
    dev = (P - cf.mbar)[..., 0]
    etas, l1s = [], []
    for k in range(0, g.t.size, 10):
        r = cf.rho(P, g.t[k])
        grad = -prob.lam * sol.extras["velocity"][k, :, 0]
        etas.append(float((r * grad * dev).sum() / (r * dev * dev).sum()))  # ρ-weighted LS fit of ∇Φ = η(x - m̄)
        l1s.append(g.integrate(np.abs(sol.rho[k] - r)))
    eta_exact = cf.eta(g.t[::10])
    eta_disc = discrete_riccati_gain(cf.q, cf.qT, prob.lam, prob.T, res.model.nsteps)
    print(f"{res.step} steps, {res.wall_time:.1f} s; eta fit {np.round(etas, 4)} vs exact {np.round(eta_exact, 4)} "
          f"(discrete-time optimum {eta_disc[0]:.4f}); L1(rho_t) {np.round(l1s, 4)}")
    # the learned gain is within 5 % of the Riccati η (the EM discretisation alone accounts for ηΔt/(2λ))
    assert np.abs(np.asarray(etas) - eta_exact).max() < 0.05 * eta_exact.max()
    assert l1s[-1] <= 0.05  # the same bar as the otflow target
    assert np.all(np.abs(sol.mass()[1:] - 1) < 1e-12)
