"""Any model against the truth: derivations (characteristics, Helmholtz), conventions, file, torch adapter."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import fitted_order
from scipy import stats

import pde
from compare import metrics as M
from compare.model import Model, ModelFile, ModelFileError, derive

EX = "examples"


def _otflow_1d(n=200, nt=20):
    p = pde.load_problem(f"{EX}/otflow_gaussian_1d.toml", {"n": [n], "nt": nt})
    return p, pde.solve(p, "exact")


def _l1_max(D, s):
    return max(M.l1_distance(D.solution.rho[k], s.rho[k], s.cell_volume) for k in range(s.t.size))


# ---------------------------------------------------------------- characteristics


@pytest.mark.parametrize("dim", [1, 2])
def test_truth_velocity_reproduces_truth_density_by_characteristics(dim):
    # nt = 2: the levels 0, T/2, T, so that 2, 4, 8 steps over [0, T] are 1, 2, 4 steps per level interval
    if dim == 1:
        p, s = _otflow_1d(nt=2)
    else:
        p = pde.otflow(pde.Gaussian([1.0, -0.5], [[0.5, 0.0], [0.0, 0.3]]), domain=[[-6, 6], [-6, 6]], n=(40, 40), nt=2)
        s = pde.solve(p, "exact")
    cf = pde.closed_form(p)
    errs, steps = [], (2, 4, 8)
    for n in steps:
        D = derive(Model(velocity=cf.velocity), s, p, [0.0, 1.0], steps=n, n_samples=50)
        errs.append(_l1_max(D, s))
    # RK4: measured L1 2.4e-5, 1.6e-6, 9.8e-8 in 1D (order 4); the divergence by central differences of the
    # callable (step 1e-4) is exact for this affine velocity up to round-off
    assert errs[-1] <= 1e-4
    assert fitted_order([1 / n for n in steps], errs) >= 2.0
    assert "backward characteristics" in D.derivation["rho"]


def test_rotation_of_a_radial_density_leaves_rho_and_shows_in_the_nongradient_fraction():
    # data = reference = N(0, I): the optimal flow is at rest (s_T = s_0 for τ = 1); a model that rotates the
    # Gaussian keeps ρ exactly and spends all its kinetic energy on stirring
    p = pde.otflow(pde.Gaussian([0.0, 0.0], np.eye(2)), domain=[[-6, 6], [-6, 6]], n=(40, 40), nt=4, lam=1.0, T=1.0)
    truth_const = pde.solve(p, "exact")
    assert np.ptp(truth_const.rho, axis=0).max() < 1e-12
    omega = 0.7
    rot = lambda x, t: omega * np.stack([-x[:, 1], x[:, 0]], -1)  # noqa: E731  ∇·(ρ rot) = 0 for radial ρ
    D = derive(Model(velocity=rot), truth_const, p, [0.0, 0.5, 1.0], steps=16, n_samples=50)
    out = M.evaluate(truth_const, D.solution, p, times=[0.0, 0.5, 1.0])
    assert max(out["metrics"]["l1"]["values"]) < 1e-6  # ρ is invariant (RK4 error only)
    assert out["metrics"]["nongradient_fraction"]["values"] == pytest.approx([1.0] * 3, abs=1e-3)


# ---------------------------------------------------------------- known errors


def test_shifted_closed_form_gives_analytic_l1_kl_w2_at_every_time(rng):
    p, s = _otflow_1d(n=400, nt=20)
    cf = pde.closed_form(p)
    delta = 0.3
    times = [0.0, 0.25, 0.5, 0.75, 1.0]
    m = Model(log_density=lambda x, t: cf.law(t).logpdf(x - delta),
              sample=lambda n, ts, g: np.stack([cf.law(t).sample(n, g) + delta for t in ts]))
    D = derive(m, s, p, times, n_samples=1000)
    out = M.evaluate(s, D.solution, p, times=times, samples=D.samples)
    for k, t in enumerate(times):
        sd = math.sqrt(cf.law(t).covs[0][0, 0])
        l1 = 2 * (2 * stats.norm.cdf(delta / (2 * sd)) - 1)
        kl = delta**2 / (2 * sd**2)
        # floors (docs/compare.md): midpoint rule O(h²) for L1/KL (h = 0.03), histogram W2 within 1e-4 here
        assert out["metrics"]["l1"]["values"][k] == pytest.approx(l1, abs=2e-4)
        assert out["metrics"]["kl_truth_model"]["values"][k] == pytest.approx(kl, rel=1e-3)
        assert out["metrics"]["w2"]["values"][k] == pytest.approx(delta, abs=1e-4)
        ws, fl = out["metrics"]["w2_samples"]["values"][k], out["metrics"]["w2_sample_floor"]["values"][k]
        # triangle inequality: |ws − δ| ≤ W2(X, μ_t + δ) + W2(Y, μ_t), each one set's sampling error ≈ fl/√2
        # (fl is W2 between two sets), so ≈ √2·fl; observed at most 0.84·fl
        assert abs(ws - delta) < 1.5 * fl
    assert "log_density" in D.derivation["rho"] and "paths" not in D.derivation


def test_shifted_2d_model_w2_equals_the_shift():
    p = pde.otflow(pde.Gaussian([0.5, -0.5], [[0.5, 0.0], [0.0, 0.3]]), domain=[[-6, 6], [-6, 6]], n=(40, 40), nt=4)
    s = pde.solve(p, "exact")
    cf = pde.closed_form(p)
    dx = np.array([0.3, -0.4])  # |δ| = 0.5: a translation by whole... not a multiple of h; lattice bias ≤ √2 h
    D = derive(Model(log_density=lambda x, t: cf.law(t).logpdf(x - dx)), s, p, [0.0, 1.0])
    out = M.evaluate(s, D.solution, p, times=[0.0, 1.0])
    kl = [0.5 * dx @ np.linalg.solve(cf.moments(t)[1], dx) for t in (0.0, 1.0)]
    assert out["metrics"]["kl_truth_model"]["values"] == pytest.approx(kl, rel=5e-3)
    assert out["metrics"]["w2"]["values"] == pytest.approx([0.5, 0.5], abs=math.sqrt(2) * s.h[0])


# ---------------------------------------------------------------- time conventions


def test_noising_and_generative_sgm_score_models_give_identical_metrics():
    p = pde.load_problem(f"{EX}/sgm_mixture_1d.toml", {"n": [120], "nt": 10})
    s = pde.solve(p, "exact")
    cf = pde.closed_form(p)
    T = p.T
    wrong = lambda x, t: 0.9 * cf.score(x, t)  # noqa: E731  a model with a known score error
    gen = Model(score=wrong, time="generative")
    noi = Model(score=lambda x, sn: wrong(x, T - sn), time="noising", T=T)
    times = [0.0, 0.5, 1.0]
    outs = []
    for m in (gen, noi):
        D = derive(m, s, p, times, steps=16, n_samples=200)
        outs.append(M.evaluate(s, D.solution, p, times=times, samples=D.samples, paths=D.paths))
    a, b = outs
    assert a["metrics"].keys() == b["metrics"].keys()
    for k in a["metrics"]:
        np.testing.assert_allclose(np.array(a["metrics"][k]["values"], float), np.array(b["metrics"][k]["values"], float),
                                   rtol=1e-10, atol=1e-14, err_msg=k)
    assert a["metrics"]["score_l2_rel"]["values"] == pytest.approx([0.1] * 3, rel=1e-9)
    assert a["metrics"]["l1"]["values"][-1] > 1e-3  # the wrong score moves the density


def test_noising_velocity_is_negated_and_relabelled():
    p, s = _otflow_1d(n=100, nt=10)
    cf = pde.closed_form(p)
    T = p.T
    D1 = derive(Model(velocity=cf.velocity), s, p, [1.0], steps=8, n_samples=20)
    D2 = derive(Model(velocity=lambda x, sn: -cf.velocity(x, T - sn), time="noising", T=T), s, p, [1.0], steps=8,
                n_samples=20)
    np.testing.assert_allclose(D1.solution.rho, D2.solution.rho, rtol=1e-12)


# ---------------------------------------------------------------- the model file


def test_model_file_round_trip_and_same_grid_is_used_as_given(tmp_path):
    p, s = _otflow_1d(n=80, nt=8)
    smp = np.stack([s.rho[0:1].T[:5, :1]] * s.t.size)  # any (K, N, 1)
    mf = ModelFile(s.t, {"name": "exact", "paired": True}, samples=smp, axes=s.axes, rho=s.rho, phi=s.phi)
    path = mf.save(tmp_path / "m.npz")
    back = ModelFile.load(path)
    assert back.meta["format"] == "mfglab.model/1" and back.meta["paired"] is True
    D = derive(Model.from_file(path), s, p, [0.0, 1.0])
    np.testing.assert_array_equal(D.solution.rho, s.rho)
    assert D.paths is not None and "model file" in D.derivation["rho"]


def test_model_file_on_its_own_grid_is_interpolated_at_second_order():
    errs, hs = [], []
    p, s = _otflow_1d(n=100, nt=10)
    cf = pde.closed_form(p)
    for n in (60, 120, 240):
        x = np.linspace(-6, 6, n)
        rho = np.stack([cf.rho(x[:, None], t) for t in s.t])
        D = derive(Model.from_file(ModelFile(s.t, {}, axes=(x,), rho=rho)), s, p, [0.5])
        errs.append(_l1_max(D, s))
        hs.append(x[1] - x[0])
    assert fitted_order(hs, errs) > 1.8


def test_bad_model_files_give_clear_errors(tmp_path):
    p, s = _otflow_1d(n=60, nt=6)
    with pytest.raises(ValueError, match=r"expected times within \[0, T"):
        derive(Model.from_file(ModelFile(np.array([0.0, 2.0]), {}, samples=np.zeros((2, 5, 1)))), s, p, [0.0])
    x = np.linspace(-3, 3, 30)
    with pytest.raises(ValueError, match="does not cover the truth's"):
        derive(Model.from_file(ModelFile(s.t, {}, axes=(x,), rho=np.ones((s.t.size, 30)))), s, p, [0.0])
    with pytest.raises(ValueError, match="2-D but the truth is 1-D"):
        derive(Model.from_file(ModelFile(s.t, {}, samples=np.zeros((s.t.size, 5, 2)))), s, p, [0.0])
    with pytest.raises(ModelFileError, match="expected"):
        ModelFile(s.t, {}, axes=s.axes, rho=np.ones((3, 60)))
    with pytest.raises(ModelFileError, match="needs the horizon"):
        ModelFile(s.t, {"time": "noising"}, samples=np.zeros((s.t.size, 5, 1)))
    good = ModelFile(s.t, {}, axes=s.axes, rho=s.rho).save(tmp_path / "good.npz")
    data = good.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="cut.npz"):
        ModelFile.load(cut)
    with pytest.raises(ModelFileError, match="no such model file"):
        ModelFile.load(tmp_path / "missing.npz")


def test_nan_values_in_a_model_are_reasoned_not_a_crash():
    p, s = _otflow_1d(n=60, nt=6)
    cf = pde.closed_form(p)

    def vel(x, t):
        v = cf.velocity(x, t)
        if t > 0.6:
            v[0] = np.nan
        return v

    D = derive(Model(velocity=vel), s, p, [0.0, 0.5, 1.0], steps=6, n_samples=30)
    out = M.evaluate(s, D.solution, p, times=[0.0, 0.5, 1.0], samples=D.samples)
    l1 = out["metrics"]["l1"]
    assert l1["values"][1] is not None and l1["values"][2] is None and "non-finite" in l1["reasons"]["1"]


def test_a_samples_only_model_lists_what_it_cannot_give(rng):
    p, s = _otflow_1d(n=60, nt=6)
    cf = pde.closed_form(p)
    m = Model(sample=lambda n, ts, g: np.stack([cf.law(t).sample(n, g) for t in ts]))
    D = derive(m, s, p, [0.0, 1.0], n_samples=100)
    assert "rho" in D.not_derived and "only sample metrics" in D.not_derived["rho"]
    out = M.evaluate(s, D.solution, p, times=[0.0, 1.0], samples=D.samples)
    assert "w2_samples" in out["metrics"] and "not usable" in out["skipped"]["l1"]


# ---------------------------------------------------------------- torch


def test_from_torch_divergence_equals_autograd_in_float64():
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.f = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))

        def forward(self, x, t):
            return self.f(torch.cat([x, t[:, None]], 1))

    torch.manual_seed(0)
    net = Net().double()
    m = Model.from_torch(net, kind="velocity", batch=7)
    x = np.random.default_rng(1).standard_normal((20, 2))
    div = m.divergence(x, 0.3)
    xt = torch.tensor(x, requires_grad=True)
    out = net(xt, torch.full((20,), 0.3, dtype=torch.float64))
    ref = sum(torch.autograd.grad(out[:, j].sum(), xt, retain_graph=True)[0][:, j] for j in range(2))
    np.testing.assert_allclose(div, ref.detach().numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(m.velocity(x, 0.3), out.detach().numpy(), rtol=0, atol=1e-14)


def test_from_torch_potential_gradient_and_laplacian():
    torch = pytest.importorskip("torch")

    class Quad(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Parameter(torch.tensor([0.7, 1.3], dtype=torch.float64))

        def forward(self, x, t):
            return 0.5 * (self.a * x * x).sum(-1) * (1 + t)

    m = Model.from_torch(Quad(), kind="potential")
    x = np.random.default_rng(2).standard_normal((5, 2))
    np.testing.assert_allclose(m.potential_grad(x, 0.5), 1.5 * np.array([0.7, 1.3]) * x, atol=1e-12)
    np.testing.assert_allclose(m.potential_laplacian(x, 0.5), np.full(5, 1.5 * 2.0), atol=1e-12)


def test_from_torch_score_model_matches_its_numpy_twin():
    # the same score network through from_torch (exact divergence, cached values) and as a plain NumPy callable
    # (central-difference divergence, step 1e-4): the densities agree to the O(step²) difference error
    torch = pytest.importorskip("torch")
    p = pde.load_problem(f"{EX}/sgm_mixture_1d.toml", {"n": [80], "nt": 8})
    s = pde.solve(p, "exact")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()

    class Score(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x, t):
            return self.net(torch.cat([x, t[:, None]], 1)) - x  # ≈ the score of N(0, 1) plus a small net

    mt = Model.from_torch(Score(), kind="score", time="noising", T=p.T)

    def np_score(x, sn):
        with torch.no_grad():
            xt = torch.tensor(x)
            return Score()(xt, torch.full((x.shape[0],), float(sn), dtype=torch.float64)).numpy()

    mn = Model(score=np_score, time="noising", T=p.T)
    a = derive(mt, s, p, [1.0], steps=8, n_samples=20).solution.rho
    b = derive(mn, s, p, [1.0], steps=8, n_samples=20).solution.rho
    assert np.all(np.isfinite(a))
    assert np.abs(a - b).max() < 1e-6 * a.max()


@pytest.mark.gpu
def test_from_torch_runs_on_the_modules_cuda_device():
    torch = pytest.importorskip("torch")
    p, s = _otflow_1d(n=100, nt=10)
    cf = pde.closed_form(p)
    lin = torch.nn.Linear(1, 1, bias=True).double().cuda()
    with torch.no_grad():  # the closed-form otflow velocity is affine in x at each t: v = a(t) x + c(t); use t = 0's
        a = -cf.velocity(np.array([[1.0]]), 0.0)[0, 0] + cf.velocity(np.array([[0.0]]), 0.0)[0, 0]
        lin.weight.fill_(-a)
        lin.bias.fill_(float(cf.velocity(np.array([[0.0]]), 0.0)[0, 0]))

    class V(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lin

        def forward(self, x, t):
            return self.lin(x)

    m = Model.from_torch(V(), kind="velocity")
    x = np.linspace(-2, 2, 9)[:, None]
    np.testing.assert_allclose(m.divergence(x, 0.3), np.full(9, -a), atol=1e-12)
    D = derive(m, s, p, [0.0, 1.0], steps=8, n_samples=100)
    assert np.all(np.isfinite(D.solution.rho))


def test_samples_only_model_file_is_measured_at_its_own_times(tmp_path, rng):
    from compare.comparison import run_compare

    p, s = _otflow_1d(n=60, nt=10)
    cf = pde.closed_form(p)
    t = np.array([0.3, 0.7, 0.75])  # 0.75 is not a level of nt = 10
    mf = ModelFile(t, {"name": "samples"}, samples=np.stack([cf.law(u).sample(200, rng) for u in t]))
    r = run_compare(mf, None, problem=p, truth=s)
    assert r.metrics["times"] == pytest.approx([0.3, 0.7])
    assert "w2_samples" in r.metrics["metrics"] and "l1" in r.metrics["skipped"]
    r = run_compare(mf, None, problem=p, truth=s, times=[0.0, 0.3])
    ws = r.metrics["metrics"]["w2_samples"]
    assert ws["values"][0] is None and "no samples at this time" in ws["reasons"]["0"]
    with pytest.raises(ValueError, match="not time levels of the truth"):
        run_compare(ModelFile(np.array([0.75]), {}, samples=np.zeros((1, 5, 1))), None, problem=p, truth=s)


def test_a_torch_potential_gives_density_potential_and_hjb_residual():
    torch = pytest.importorskip("torch")
    p, s = _otflow_1d(n=100, nt=10)
    cf = pde.closed_form(p)
    A, B, C, lam, T = (float(cf.A[0]), float(cf.B[0]), float(cf.C[0]), p.lam, p.T)

    class Phi(torch.nn.Module):  # the closed-form otflow potential (module docstring of pde.exact), Q = I in 1D
        def forward(self, x, t):
            z = x[:, 0]
            r = 1.0 / (1.0 + A * (T - t) / lam)
            return 1.0 + 0.5 * A * r * z**2 + B * r * z - B**2 * (T - t) * r / (2 * lam) + C

    m = Model.from_torch(Phi(), kind="potential", dtype=torch.float64)  # no parameters: say the dtype
    D = derive(m, s, p, [0.0, 0.5, 1.0], steps=16, n_samples=50)
    assert "b − ∇φ/λ" in D.derivation["flow_velocity"] and "Laplacian exact" in D.derivation["flow_velocity"]
    out = M.evaluate(s, D.solution, p, times=[0.0, 0.5, 1.0])
    assert max(out["metrics"]["l1"]["values"]) < 1e-6
    assert max(out["metrics"]["phi_l2"]["values"]) < 1e-12
    np.testing.assert_allclose(out["metrics"]["hjb_residual_l1"]["values"],
                               out["metrics"]["hjb_residual_truth_l1"]["values"], rtol=1e-9)
