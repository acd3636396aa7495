"""Flow-matching models on bridges: couplings, conditional paths, training, and kinetic energy against W₂².

The kinetic-energy check is the one of the bridge issue: OT-CFM on the Gaussian bridge reaches the
Benamou–Brenier kinetic energy (λ/2T)W₂² within 5 %, I-CFM's is measurably larger (one seed in the
default run, three in the slow one).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import neural
import pde
from compare.cases import get_case
from neural.models.flowmatch import entropic_pairing, exact_ot_pairing


def _bridge(nu=0.0):
    return get_case("sb-gaussian-2d" if nu else "bridge-gaussian-2d").problem()


def test_exact_pairing_minimises_the_batch_cost_by_brute_force():
    rng = np.random.default_rng(3)
    x0, x1 = rng.normal(size=(7, 2)), rng.normal(size=(7, 2)) + 1.0
    j = exact_ot_pairing(x0, x1)
    assert sorted(j) == list(range(7))  # a permutation
    cost = ((x0 - x1[j]) ** 2).sum()
    best = min(((x0 - x1[list(p)]) ** 2).sum() for p in itertools.permutations(range(7)))
    assert cost == pytest.approx(best, rel=1e-12)


def test_entropic_pairing_tends_to_the_exact_one_as_eps_falls():
    rng = np.random.default_rng(4)
    x0, x1 = rng.normal(size=(64, 2)), rng.normal(size=(64, 2))
    exact = exact_ot_pairing(x0, x1)
    # measured agreement with the exact permutation: 0.08 / 0.69 / 0.81 at eps = 1, 1e-2, 3e-3
    agree = [np.mean(entropic_pairing(x0, x1, 0.5, eps, np.random.default_rng(0)) == exact) for eps in (1.0, 1e-2, 3e-3)]
    assert agree[0] < 0.2 < agree[1] < agree[2] and agree[2] > 0.75, agree


def test_sb_conditional_velocity_is_the_time_derivative_of_its_path():
    """u = (x₁ − x₀)/T + (T − 2t)/(2t(T − t))(x_t − μ_t) equals d/dt of x_t = μ_t + σ_t z (central differences)."""
    problem = _bridge(nu=0.1)
    m = neural.get_model("sb-cfm")(problem).double()
    rng = np.random.default_rng(1)
    b = {k: torch.as_tensor(v) for k, v in m.draw(16, rng, 0).items()}
    T, nu = problem.T, problem.nu

    def path(s):
        return b["x0"] + s[:, None] * (b["x1"] - b["x0"]) + torch.sqrt(2 * nu * T * s * (1 - s))[:, None] * b["z"]

    s, ds = b["s"], 1e-6
    fd = (path(s + ds) - path(s - ds)) / (2 * ds * T)
    with torch.no_grad():
        # the loss with the network replaced by the finite difference is 0 when the target is the derivative
        m.velocity = lambda x, t: fd
        loss, _ = m.loss(b)
    assert float(loss) < 1e-12 * float((fd ** 2).sum(1).mean())


def _ke(result, problem, n=4000):
    return result.model.kinetic_energy(problem.rho0.sample(n, np.random.default_rng(100)))


def _w2_ke(problem):
    cf = pde.exact.closed_form(problem)
    return problem.lam / (2 * problem.T) * cf.w2sq()


def _kinetic_check(seeds):
    torch.set_num_threads(1)
    problem = _bridge()
    w2 = _w2_ke(problem)
    ot = [_ke(neural.train(problem, "ot-cfm", steps=1000, seed=s, progress=False), problem) / w2 - 1 for s in seeds]
    ind = [_ke(neural.train(problem, "cfm", steps=1000, seed=s, progress=False), problem) / w2 - 1 for s in seeds]
    return np.array(ot), np.array(ind)


def test_ot_cfm_kinetic_energy_is_w2_and_independent_coupling_is_larger():
    # measured (seed 0, 1000 steps, batch 256): OT-CFM -1.0 %, I-CFM +3.2 % relative to (λ/2T)W₂² = 5.0755
    ot, ind = _kinetic_check([0])
    assert abs(ot[0]) < 0.05
    assert ind[0] - ot[0] > 0.02


@pytest.mark.slow
def test_kinetic_energy_over_three_seeds():
    ot, ind = _kinetic_check([0, 1, 2])
    assert np.all(np.abs(ot) < 0.05), ot
    # the gap of the means exceeds twice the spread of the seeds
    assert ind.mean() - ot.mean() > 2 * max(ot.std(), ind.std()), (ot, ind)


@pytest.mark.parametrize("model,extra", [("ot-cfm", {}), ("rectified", {"base_steps": 10})])
def test_interrupted_training_resumes_to_the_same_weights(tmp_path, monkeypatch, model, extra):
    """Interrupted at step 12 (after rectified's reflow began at 10), resumed: bit-identical on CPU."""
    problem = _bridge()
    kw = dict(steps=20, seed=5, progress=False, batch=64, ckpt_every=4, width=16, depth=2, **extra)
    full = neural.train(problem, model, out_dir=tmp_path / "a", **kw)
    cls = neural.MODELS[model]
    orig = cls.draw

    def draw(self, n, rng, step):
        if step == 12:
            raise KeyboardInterrupt
        return orig(self, n, rng, step)

    monkeypatch.setattr(cls, "draw", draw)
    with pytest.raises(KeyboardInterrupt):
        neural.train(problem, model, out_dir=tmp_path / "b", **kw)
    monkeypatch.setattr(cls, "draw", orig)
    resumed = neural.train(problem, model, out_dir=tmp_path / "b", **kw)
    np.testing.assert_array_equal(resumed.losses, full.losses)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    if model == "rectified":
        assert int(resumed.model.reflowed) == 1


def test_rectified_reflow_starts_from_the_first_field():
    problem = _bridge()
    r = neural.train(problem, "rectified", steps=11, seed=0, progress=False, base_steps=10, lr=1e-12)
    m = r.model
    x = torch.zeros(5, 2)
    # one reflow step at a negligible learning rate: the second field is still the first's copy
    assert torch.allclose(m.reflow(x, 0.5), m.net(x, 0.5), atol=1e-6)


def test_bad_input():
    with pytest.raises(ValueError, match=r"sb-cfm needs a bridge with diffusion nu > 0 \(got nu=0.0\).*ot-cfm"):
        neural.get_model("sb-cfm")(_bridge())
    with pytest.raises(ValueError, match=r"needs a problem of family bridge"):
        neural.get_model("cfm")(get_case("otflow-gaussian-2d").problem())
    with pytest.raises(ValueError, match=r"base_steps=0; expected a positive integer"):
        neural.get_model("rectified")(_bridge(), base_steps=0)
    with pytest.raises(ValueError, match=r"batches of 3 and 4 points"):
        exact_ot_pairing(np.zeros((3, 2)), np.zeros((4, 2)))
