"""Neural flows: exact derivatives, losses, training loop (resume, guards), grid evaluation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import neural
import pde
from neural.integrate import divergence
from neural.models import OTFlow, score_hjb_residual

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def prob1d():
    return pde.load_problem("examples/otflow_gaussian_1d.toml")


@pytest.fixture(scope="module")
def sgm1d():
    return pde.load_problem("examples/sgm_mixture_1d.toml")


def _mix2d():
    return pde.GaussianMixture([0.3, 0.7], [[-1.0, 0.5], [1.0, -0.5]],
                               [[[0.3, 0.1], [0.1, 0.2]], [[0.5, -0.2], [-0.2, 0.4]]])


TINY_OT = dict(width=8, nsteps=4)


# ----------------------------------------------------------------------------
# exact derivatives
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("d,nlayers", [(1, 2), (2, 2), (2, 4)])
def test_potential_gradient_and_laplacian_match_autograd(d, nlayers):
    torch.manual_seed(3)
    net = neural.PotentialNet(d, width=16, nlayers=nlayers).double()
    with torch.no_grad():  # make the ResNet layers matter (w = 1 and tiny weights would hide errors)
        for p in net.parameters():
            p.mul_(2.0)
    x = torch.randn(50, d, dtype=torch.float64, requires_grad=True)
    t = torch.rand(50, dtype=torch.float64, requires_grad=True)
    phi, g, lap = net.grad_lap(x, t)
    ref = net(x, t)
    gx, gt = torch.autograd.grad(ref.sum(), (x, t), create_graph=True)
    lap_ref = sum(torch.autograd.grad(gx[:, j].sum(), x, retain_graph=True)[0][:, j] for j in range(d))
    # float64 round-off on O(1..100) values: 1e-10 is the bar, ~1e5 ulps of head-room
    assert torch.allclose(phi, ref, rtol=0, atol=1e-10)
    assert (g[:, :d] - gx).abs().max() < 1e-10
    assert (g[:, d] - gt).abs().max() < 1e-10
    assert (lap - lap_ref).abs().max() < 1e-10
    assert lap.abs().max() > 1e-2  # the check is not vacuous


@pytest.mark.parametrize("d,nlayers", [(1, 2), (2, 2), (2, 4), (3, 3)])
def test_fused_training_flow_matches_the_reference_dynamics(d, nlayers):
    """potential_flow (fused RHS, time as a state column, -1/λ folded into the weights) against RK4 of
    the reference grad_lap dynamics: states and every parameter gradient, float64."""
    from neural.models import potential_flow, potential_flow_reference

    torch.manual_seed(5)
    net = neural.PotentialNet(d, width=16, nlayers=nlayers).double()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(2.0)
    x = torch.randn(64, d, dtype=torch.float64)
    lam, t0, t1, n = 0.7, 0.2, 1.1, 6
    y = potential_flow(net, x, t0, t1, n, lam)
    ref = potential_flow_reference(net, x, t0, t1, n, lam)
    assert y.shape == ref.shape
    # values up to ~1e4 (doubled weights): relative round-off of a few 1e-12 after 24 stages
    assert ((y - ref).abs().max() / ref.abs().max()) < 1e-10
    params = [p for n_, p in net.named_parameters() if n_ != "c"]  # c does not enter the dynamics
    w = torch.randn_like(ref)
    g_fused = torch.autograd.grad((w * y).sum(), params)
    g_ref = torch.autograd.grad((w * ref).sum(), params)
    for (name, _), a, b in zip([np_ for np_ in net.named_parameters() if np_[0] != "c"], g_fused, g_ref):
        assert ((a - b).abs().max() / b.abs().max()) < 1e-10, name
        assert b.abs().max() > 1e-3, name  # the comparison is not vacuous


# ----------------------------------------------------------------------------
# score models
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [1.0, 2.5])
def test_hjb_residual_of_exact_ou_score_vanishes(beta):
    law = _mix2d()
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.normal(size=(200, 2)) * 1.5, dtype=torch.float64)
    s = torch.as_tensor(0.05 + rng.random(200), dtype=torch.float64)
    R = score_hjb_residual(lambda a, b: neural.ou_mixture_score(a, b, law, beta), x, s, beta, create_graph=False)
    S = neural.ou_mixture_score(x, s, law, beta).detach()
    # the torch score matches the numpy closed form of pde (independent implementation)
    ref = np.stack([law.ou_marginal(si, beta).score(xi) for xi, si in zip(x.numpy(), s.numpy())])
    assert np.abs(S.numpy() - ref).max() < 1e-10
    # terms of R are O(1..10^2) here; float64 cancellation leaves ~1e-12
    assert R.abs().max() < 1e-9
    # a wrong score (scaled by 1.1) leaves an O(1) residual: the residual detects errors
    R_bad = score_hjb_residual(lambda a, b: 1.1 * neural.ou_mixture_score(a, b, law, beta), x, s, beta,
                               create_graph=False)
    assert R_bad.abs().max() > 0.1


@pytest.mark.parametrize("activation,d", [("silu", 1), ("silu", 2), ("tanh", 2), ("softplus", 3)])
def test_forward_derivatives_match_autograd(activation, d):
    """MLPField.derivatives (one forward sweep) against autograd: value, ∇_x, ∂_t and Δ_x, float64."""
    torch.manual_seed(11)
    net = neural.MLPField(d, d, width=16, depth=3, activation=activation).double()
    x = torch.randn(40, d, dtype=torch.float64, requires_grad=True)
    t = torch.rand(40, dtype=torch.float64, requires_grad=True)
    f, Jx, ft, lap = net.derivatives(x, t)
    f0 = net(x, t)
    J = torch.stack([torch.autograd.grad(f0[:, i].sum(), x, create_graph=True)[0] for i in range(d)], 2)
    ft0 = torch.stack([torch.autograd.grad(f0[:, i].sum(), t, retain_graph=True)[0] for i in range(d)], 1)
    lap0 = torch.stack([sum(torch.autograd.grad(J[:, j, i].sum(), x, retain_graph=True)[0][:, j] for j in range(d))
                        for i in range(d)], 1)
    # O(1) values, a dozen flops deep: 1e-12 is ~1e4 ulps
    for a, b in ((f, f0), (Jx, J), (ft, ft0), (lap, lap0)):
        assert (a - b).abs().max() < 1e-12
    assert lap0.abs().max() > 1e-3
    # the divergence used by the free-form CNF and the probability-flow likelihood
    _, div = net.divergence(x, t)
    assert (div - divergence(f0, x, create_graph=False)).abs().max() < 1e-12
    with torch.no_grad():  # evaluation takes the fused-kernel branch for σ'
        f1, J1, ft1, _ = net.derivatives(x, t, need_lap=False)
    for a, b in ((f1, f0), (J1, J), (ft1, ft0)):
        assert (a - b).abs().max() < 1e-12


def test_forward_hjb_residual_and_its_gradients_match_autograd(sgm1d):
    """The HJB-SGM loss's residual (forward derivatives) equals score_hjb_residual (autograd), and so do the
    parameter gradients of the HJB term, in 1D and 2D."""
    prob2 = pde.sgm(_mix2d(), domain=[[-6.0, 6.0], [-6.0, 6.0]], T=1.0, beta=2.0, n=(16, 16), nt=2)
    for prob in (sgm1d, prob2):
        torch.manual_seed(4)
        m = neural.get_model("hjb-sgm")(prob, width=16, depth=3).double()
        arrays = m.draw(64, np.random.default_rng(2), 0)
        b = {k: torch.as_tensor(v) for k, v in arrays.items()}
        a = torch.exp(-0.5 * m.beta * b["s"])[:, None]
        xs = a * b["x"] + m.sigma(b["s"])[:, None] * b["z"]
        f, R = m.hjb_residual(xs, b["s"])
        R0 = score_hjb_residual(m.score, xs, b["s"], m.beta)
        assert (R - R0).abs().max() < 1e-10 * max(1.0, float(R0.detach().abs().max()))
        assert (f - m.net(xs, b["s"])).abs().max() < 1e-13
        params = list(m.parameters())
        g = torch.autograd.grad(R.norm(dim=1).mean(), params)
        g0 = torch.autograd.grad(R0.norm(dim=1).mean(), params)
        for u, v in zip(g, g0):
            assert (u - v).abs().max() < 1e-9 * max(1.0, float(v.detach().abs().max()))
        # the implicit score-matching term at s = ε uses the same forward Jacobian
        m.alpha_T = 1.0
        ism = m.loss(b)[1]["ism"]
        xe = b["x"].clone().requires_grad_(True)
        S = m.score(xe, m.eps)
        ism0 = (0.5 * (S * S).sum(1) + divergence(S, xe, create_graph=False)).mean()
        assert abs(float(ism.detach() - ism0.detach())) < 1e-10 * max(1.0, abs(float(ism0.detach())))


def test_alpha_hjb_zero_gives_plain_loss_exactly(sgm1d):
    def build(name, **kw):
        with torch.random.fork_rng():
            torch.manual_seed(7)
            return neural.get_model(name)(sgm1d, width=16, depth=2, **kw).double()

    plain, zero, reg = build("sgm"), build("hjb-sgm", alpha_hjb=0.0), build("hjb-sgm")
    arrays = plain.draw(64, np.random.default_rng(1), 0)
    batch = {k: torch.as_tensor(v) for k, v in arrays.items()}
    l0, _ = plain.loss(batch)
    l1, _ = zero.loss(batch)
    l2, parts = reg.loss(batch)
    assert l0.item() == l1.item()  # bit-identical, not merely close
    assert l2.item() > l0.item() and parts["hjb"].item() > 0


def test_dsm_loss_falls_and_samplers_run(sgm1d):
    res = neural.train(sgm1d, "sgm", steps=60, seed=0, progress=False, batch=256, width=32, depth=2, nsteps=16,
                       lr=5e-3)
    assert res.losses[-10:].mean() < res.losses[:10].mean()
    # the DSM loss has a large irreducible part; judge learning by the σ-weighted error to the exact score
    rng = np.random.default_rng(5)
    s = 0.05 + 0.95 * rng.random(400)
    x = np.stack([sgm1d.data.ou_marginal(si).sample(1, rng)[0] for si in s])
    exact = np.stack([sgm1d.data.ou_marginal(si).score(xi) for si, xi in zip(s, x)])
    sig = np.sqrt(-np.expm1(-s))[:, None]

    def err(model):
        with torch.no_grad():
            sc = model.score(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(s, dtype=torch.float32))
        return float(np.mean((sig * (sc.numpy() - exact)) ** 2))

    untrained = neural.train(sgm1d, "sgm", steps=1, seed=0, progress=False, batch=2, width=32, depth=2, lr=1e-12)
    # 60 Adam steps take an untrained net (error ~0.3) most of the way; 0.3× is a clear margin
    assert err(res.model) < 0.3 * err(untrained.model), (err(res.model), err(untrained.model))
    rng = np.random.default_rng(0)
    for method in ("ode", "sde"):
        xs = res.model.sample(500, rng, method=method, nsteps=16)
        assert xs.shape == (500, 1) and np.all(np.isfinite(xs))
    sol = neural.evaluate_on_grid(res, n=40, nt=4, nsteps=8)
    assert sol.extras["score"].shape == (5, 40, 1)
    np.testing.assert_array_equal(sol.extras["velocity"], sgm1d.params["beta"] * sol.extras["score"])
    # the probability-flow density at t = 0 is η_T pushed through the ODE over zero time: exact
    exact0 = sgm1d.rho0.pdf(sol.grid().points())
    np.testing.assert_allclose(sol.rho[0], exact0, rtol=1e-4, atol=0)  # float32 nodes, as for otflow
    # later times: a density (mass ≈ 1 on a box holding all but 1e-6 of η)
    assert np.all(np.abs(sol.mass() - 1) < 0.05)
    assert np.allclose(sol.phi, -np.log(sol.rho))


def test_hjb_sgm_trains_with_terminal_ism(sgm1d):
    res = neural.train(sgm1d, "hjb-sgm", steps=20, seed=1, progress=False, batch=64, width=16, depth=2,
                       alpha_T=0.1)
    assert set(res.parts) == {"dsm", "hjb", "ism"}
    assert np.all(np.isfinite(res.losses))
    assert res.losses[-5:].mean() < res.losses[:5].mean()


# ----------------------------------------------------------------------------
# flows and the training loop
# ----------------------------------------------------------------------------


def test_otflow_loss_falls_and_grid_evaluation(prob1d):
    res = neural.train(prob1d, "otflow", steps=40, seed=0, progress=False, batch=128, **TINY_OT)
    assert res.losses[-5:].mean() < res.losses[:5].mean() - 0.5  # starts ~10, optimum ~1.4
    sol = neural.evaluate_on_grid(res, n=120, nt=4)
    g = sol.grid()
    # t = 0: no integration, the density is ρ₀ itself, up to rounding the nodes to float32
    # (|Δlog ρ| ≤ |∂x log ρ|·|x|·6e-8 ≲ 3e-5 on this box)
    np.testing.assert_allclose(sol.rho[0], prob1d.rho0.pdf(g.points()), rtol=1e-4, atol=0)
    # the exact log-determinant transports mass: ∫ρ_t = 1 up to quadrature/RK4 error (float32)
    assert np.all(np.abs(sol.mass() - 1) < 2e-3), sol.mass()
    # v = -∂xφ/λ: check against centred differences of the returned φ (O(h²) ≈ 1e-2 here)
    h = g.h[0]
    dphi = (sol.phi[:, 2:] - sol.phi[:, :-2]) / (2 * h)
    v = sol.extras["velocity"][:, 1:-1, 0]
    assert np.abs(v + dphi / prob1d.lam).max() < 5e-2 * max(1.0, np.abs(v).max())
    traj = neural.trajectories(res, prob1d.rho0.sample(50, np.random.default_rng(0)), nt=4)
    assert traj.shape == (5, 50, 1)


def test_ffjord_and_wgf_train(prob1d):
    res = neural.train(prob1d, "ffjord", steps=25, seed=0, progress=False, batch=128, width=16, depth=2, nsteps=4)
    assert res.losses[-5:].mean() < res.losses[:5].mean()
    sol = neural.evaluate_on_grid(res, n=60, nt=2)
    assert np.all(np.isnan(sol.phi)) and np.all(np.isfinite(sol.rho))
    wgf = pde.wgf(pde.Gaussian([1.0], [[0.5]]), domain=[[-7, 7]], T=0.2, tau=0.1, n=60, nt=4)
    res = neural.train(wgf, "wgf", steps=20, seed=0, progress=False, batch=128, width=8, nsteps=2)
    assert res.config["steps_per_block"] == 10 and set(res.parts["block"]) == {0.0, 1.0}
    sol = neural.evaluate_on_grid(res)
    assert sol.rho.shape == (5, 60) and np.all(np.isfinite(sol.phi))
    assert np.all(np.abs(sol.mass() - 1) < 5e-3)


def _interrupt_at(monkeypatch, cls, step_stop):
    orig = cls.draw

    def draw(self, n, rng, step):
        if step == step_stop:
            raise KeyboardInterrupt
        return orig(self, n, rng, step)

    monkeypatch.setattr(cls, "draw", draw)
    return orig


@pytest.mark.parametrize("name", ["otflow", "sgm"])
def test_resume_reproduces_uninterrupted_run(tmp_path, monkeypatch, prob1d, sgm1d, name):
    prob = prob1d if name == "otflow" else sgm1d
    kw = dict(steps=6, seed=3, progress=False, batch=32, ckpt_every=100)
    kw.update(TINY_OT if name == "otflow" else dict(width=8, depth=1))
    full = neural.train(prob, name, out_dir=tmp_path / "a", **kw)
    cls = neural.MODELS[name]
    orig = _interrupt_at(monkeypatch, cls, 3)
    with pytest.raises(KeyboardInterrupt):
        neural.train(prob, name, out_dir=tmp_path / "b", **kw)
    assert neural.load_checkpoint(tmp_path / "b" / "checkpoint.pt")["step"] == 3
    monkeypatch.setattr(cls, "draw", orig)
    resumed = neural.train(prob, name, out_dir=tmp_path / "b", **kw)
    # same batches (seeded by step), same Adam state: bit-identical on CPU
    np.testing.assert_array_equal(resumed.losses, full.losses)
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    # a finished run resumes to itself without training
    again = neural.train(prob, name, out_dir=tmp_path / "b", **kw)
    np.testing.assert_array_equal(again.losses, full.losses)


def test_load_roundtrip_and_float64(tmp_path, prob1d):
    res = neural.train(prob1d, "otflow", steps=3, seed=0, progress=False, batch=32, dtype="float64",
                       out_dir=tmp_path, **TINY_OT)
    assert next(res.model.parameters()).dtype == torch.float64
    back = neural.load(tmp_path)
    assert back.model_name == "otflow" and back.step == 3 and back.dtype == "float64"
    a = neural.evaluate_on_grid(res, n=30, nt=2)
    b = neural.evaluate_on_grid(back, n=30, nt=2)
    np.testing.assert_array_equal(a.rho, b.rho)
    np.testing.assert_array_equal(a.phi, b.phi)
    ck = neural.load_checkpoint(tmp_path / "checkpoint.pt")
    assert json.loads(ck["problem"])["family"] == "otflow"


# ----------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------


def test_unknown_model_and_device(prob1d):
    with pytest.raises(ValueError, match="expected one of.*ffjord.*hjb-sgm.*otflow.*sgm.*wgf"):
        neural.train(prob1d, "flowmatch", steps=1)
    with pytest.raises(ValueError, match="cuda:7"):
        neural.resolve_device("cuda:7")
    with pytest.raises(ValueError, match="not a device name"):
        neural.resolve_device("gpu0")
    with pytest.raises(ValueError, match="family sgm"):
        neural.train(prob1d, "sgm", steps=1)
    with pytest.raises(ValueError, match="dtype"):
        neural.train(prob1d, "otflow", steps=1, dtype="float16")


def test_bad_checkpoints(tmp_path, prob1d):
    neural.train(prob1d, "otflow", steps=1, seed=0, progress=False, batch=16, out_dir=tmp_path, **TINY_OT)
    with pytest.raises(neural.CheckpointError, match="holds model 'otflow'; expected 'ffjord'"):
        neural.train(prob1d, "ffjord", steps=2, progress=False, out_dir=tmp_path)
    with pytest.raises(neural.CheckpointError, match="different settings"):
        neural.train(prob1d, "otflow", steps=2, seed=1, progress=False, out_dir=tmp_path, **TINY_OT)
    bad = tmp_path / "bad.pt"
    raw = (tmp_path / "checkpoint.pt").read_bytes()
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(neural.CheckpointError, match="corrupted"):
        neural.load(bad)
    junk = tmp_path / "junk.pt"
    torch.save({"weights": torch.zeros(3)}, junk)
    with pytest.raises(neural.CheckpointError, match="not an mfglab neural checkpoint"):
        neural.load(junk)
    with pytest.raises(FileNotFoundError):
        neural.load(tmp_path / "missing.pt")


def test_nan_data_and_nan_loss(tmp_path, monkeypatch, prob1d):
    orig_draw = OTFlow.draw

    def nan_draw(self, n, rng, step):
        out = orig_draw(self, n, rng, step)
        out["x"][0, 0] = np.nan
        return out

    monkeypatch.setattr(OTFlow, "draw", nan_draw)
    with pytest.raises(ValueError, match="NaN/Inf"):
        neural.train(prob1d, "otflow", steps=2, progress=False, batch=16, **TINY_OT)
    monkeypatch.setattr(OTFlow, "draw", orig_draw)
    orig_loss = OTFlow.loss

    def nan_loss(self, batch, step=0):
        loss, parts = orig_loss(self, batch, step)
        return (loss * float("nan") if step == 2 else loss), parts

    monkeypatch.setattr(OTFlow, "loss", nan_loss)
    with pytest.raises(neural.NonFiniteLossError, match="step 2"):
        neural.train(prob1d, "otflow", steps=5, progress=False, batch=16, out_dir=tmp_path, ckpt_every=100, **TINY_OT)
    ck = neural.load_checkpoint(tmp_path / "checkpoint.pt")
    assert ck["step"] == 2 and all(torch.isfinite(v).all() for v in ck["state"].values())


# ----------------------------------------------------------------------------
# slow: accuracy against the closed form
# ----------------------------------------------------------------------------


@pytest.mark.slow
def test_otflow_1d_gaussian_reaches_closed_form(prob1d):
    res = neural.train(prob1d, "otflow", steps=500, seed=0, progress=False, batch=1024)
    sol = neural.evaluate_on_grid(res, n=400, nt=4)
    cf = pde.closed_form(prob1d)
    g = sol.grid()
    l1 = g.integrate(np.abs(sol.rho[-1] - cf.rho(g.points(), prob1d.T)))
    print(f"L1(rho_T) = {l1:.4f} after {res.step} steps, {res.wall_time:.1f} s")
    assert l1 <= 0.05  # the target


@pytest.mark.slow
def test_neural_wgf_follows_exact_jko_chain():
    from pde.exact import otflow_terminal_gaussian

    prob = pde.wgf(pde.Gaussian([1.5], [[0.25]]), domain=[[-7, 7]], T=0.5, tau=0.1, n=200, nt=5)
    res = neural.train(prob, "wgf", steps=2000, seed=0, progress=False, batch=512)
    sol = neural.evaluate_on_grid(res)
    g = sol.grid()
    m, s = 1.5, 0.5
    errs = []
    for k in range(1, 6):  # the exact Gaussian JKO step: W2-prox of KL(·‖N(0,1)) with τ = 0.1
        m, s = (float(v) for v in otflow_terminal_gaussian(m, s, 0.0, 1.0, 0.1))
        errs.append(g.integrate(np.abs(sol.rho[k] - pde.Gaussian([m], [[s * s]]).pdf(g.points()))))
    print("L1 vs exact JKO chain per block:", np.round(errs, 4))
    assert max(errs) <= 0.05  # the same bar as the otflow target, per block of the chain
    assert np.all(np.abs(sol.mass() - 1) < 1e-5)  # exact log-determinant through 5 blocks


def test_shifted_logcosh_is_accurate_in_the_tails():
    """ũ(z) = log cosh z + log 2 of the fused flow, float64, across the softplus switch (|z| ≈ 10..25)."""
    from neural.nets import _ShiftedLogCosh

    z = torch.linspace(-30.0, 30.0, 6001, dtype=torch.float64)
    u = _ShiftedLogCosh.apply(z, torch.tanh(z))
    ref = neural.nets.logcosh(z) + math.log(2.0)
    assert (u - ref).abs().max() < 1e-13 * ref.abs().max()

