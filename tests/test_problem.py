"""Problem model, distributions, problem files and their error messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pde
from pde.io import ProblemFileError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))

LAWS = {
    "mixture-1d": pde.GaussianMixture([0.5, 0.5], [[-1.0], [1.5]], [[[0.3]], [[0.5]]]),
    "mixture-2d-full": pde.GaussianMixture([0.3, 0.7], [[-1.0, 0.5], [1.0, -0.5]],
                                           [[[0.3, 0.1], [0.1, 0.2]], [[0.4, -0.15], [-0.15, 0.5]]]),
    "8gaussians": pde.eight_gaussians(),
    "checkerboard": pde.Checkerboard(),
    "checkerboard-ou": pde.Checkerboard().ou_marginal(0.4, 1.0),
    "ring": pde.Ring(),
    "ring-ou": pde.Ring().ou_marginal(0.4, 1.0),
}


def _quad_box(law, box, n=800):
    """Midpoint rule of the pdf on a box (n nodes per dimension)."""
    axes = [lo + (np.arange(n) + 0.5) * (hi - lo) / n for lo, hi in box]
    vol = np.prod([(hi - lo) / n for lo, hi in box])
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    return law.pdf(pts).sum() * vol


@pytest.mark.parametrize("name", list(LAWS))
def test_densities_integrate_to_one(name):
    law = LAWS[name]
    box = [[-8, 8]] * law.dim
    n = 4000 if law.dim == 1 else 800
    # midpoint rule: O(h²) on smooth laws (h = 0.02: < 1e-6 relative); the unsmoothed
    # checkerboard has edges on cell faces here, so it is exact too.
    assert abs(_quad_box(law, box, n) - 1.0) < 1e-6


@pytest.mark.parametrize("name", list(LAWS))
def test_sampling_is_seeded_and_matches_moments(name):
    law = LAWS[name]
    a = law.sample(20000, np.random.default_rng(7))
    b = law.sample(20000, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (20000, law.dim)
    # CLT: the sample mean has std sqrt(var/N); 5 standard errors
    se = np.sqrt(np.diag(law.cov()) / a.shape[0])
    assert np.all(np.abs(a.mean(0) - law.mean()) < 5 * se)
    # covariance entries: 5 standard errors of the product (x_i - m_i)(x_j - m_j)
    c = a - law.mean()
    prod = c[:, :, None] * c[:, None, :]
    se_cov = prod.std(0) / np.sqrt(a.shape[0])
    assert np.all(np.abs(prod.mean(0) - law.cov()) < 5 * se_cov + 1e-12)


def test_sampling_requires_a_generator():
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        LAWS["mixture-1d"].sample(10, 3)


@pytest.mark.parametrize("name", ["mixture-1d", "mixture-2d-full", "checkerboard-ou", "ring", "ring-ou"])
def test_mass_outside_matches_quadrature(name):
    law = LAWS[name]
    box = [[-2.5, 2.8]] * law.dim
    inside = _quad_box(law, box, 4000 if law.dim == 1 else 1000)
    # midpoint rule with h ≈ 5e-3: O(h²) ≈ 1e-5 at worst on these smooth laws
    tol = 1e-5
    assert abs((1 - inside) - law.mass_outside(box)) < tol
    assert law.mass_outside([[-30, 30]] * law.dim) < 1e-12


def test_mixture_ou_marginal_is_exact_formula():
    law = LAWS["mixture-2d-full"]
    eta = law.ou_marginal(0.7, beta=2.0)
    a = np.exp(-0.7)
    np.testing.assert_allclose(eta.means, law.means * a, rtol=1e-15)
    np.testing.assert_allclose(eta.covs, law.covs * a * a + (1 - a * a) * np.eye(2), rtol=1e-14)


# ----------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs, match", [
    (dict(weights=[0.5, 0.4], means=[[0.0], [1.0]], covs=[[[1.0]], [[1.0]]]), r"weights sum to 0\.9.*expected 1"),
    (dict(weights=[1.0], means=[[0.0, 0.0]], covs=[[[1.0, 2.0], [2.0, 1.0]]]), "not positive definite"),
    (dict(weights=[1.0], means=[[0.0, 0.0]], covs=[[[1.0, 0.5], [0.2, 1.0]]]), "not symmetric"),
    (dict(weights=[-0.5, 1.5], means=[[0.0], [1.0]], covs=[[[1.0]], [[1.0]]]), "non-negative"),
    (dict(weights=[1.0], means=[[0.0], [1.0]], covs=[[[1.0]]]), "one mean per component"),
])
def test_bad_mixture(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pde.GaussianMixture(**kwargs)


def test_domain_that_cuts_off_mass_names_the_mass_and_a_box():
    with pytest.raises(ValueError, match=r"cuts off .* of the rho0's mass; expected at most 1e-06.*enlarge"):
        pde.otflow(pde.Gaussian([0.0], 1.0), domain=[[-3, 3]])


@pytest.mark.parametrize("kw, match", [
    (dict(nu=-0.1), r"nu=-0\.1; expected .* nu >= 0"),
    (dict(lam=0.0), r"lam=0\.0; expected a finite number > 0"),
    (dict(T=-1.0), r"T=-1\.0; expected a finite number > 0"),
    (dict(boundary="dirichlet"), r"boundary='dirichlet'; expected one of"),
])
def test_bad_scalars(kw, match):
    with pytest.raises(ValueError, match=match):
        pde.otflow(pde.Gaussian([0.0], 1.0), domain=[[-8, 8]], **kw)


def test_unknown_family_and_toy_list_valid_ones():
    with pytest.raises(ValueError, match=r"unknown family 'gan'; expected one of \['otflow', 'sgm'"):
        pde.make_problem("gan")
    with pytest.raises(ValueError, match=r"unknown toy 'moons'.*'checkerboard'"):
        pde.make_toy("moons")


def test_dimension_mismatch():
    with pytest.raises(ValueError, match="2-dimensional but the domain has 1"):
        pde.otflow(pde.eight_gaussians(), domain=[[-8, 8]])


# ----------------------------------------------------------------- files

@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_files_load(path):
    prob = pde.load_problem(path)
    assert prob.family in pde.FAMILIES
    assert max(prob.mass_outside.values()) <= 1e-6
    assert prob.describe()["family"] == prob.family


def test_one_example_per_family():
    fams = {pde.load_problem(p).family for p in EXAMPLES}
    assert fams == {"otflow", "sgm", "wgf", "lq", "bridge"}


def test_grid_overrides():
    p = pde.load_problem(ROOT / "examples" / "lq_mixture_1d.toml", overrides={"n": [64], "nt": 7})
    g = p.grid()
    assert g.n == (64,) and g.nt == 7


def _write(tmp_path, text):
    f = tmp_path / "p.toml"
    f.write_text(text)
    return f


BASE = """family = "otflow"
T = 1.0
domain = [[-6.0, 6.0]]
[data]
kind = "gaussian_mixture"
weights = [1.0]
means = [[0.0]]
covs = [[[1.0]]]
"""


@pytest.mark.parametrize("text, match", [
    ("family = \"otflow\"\nT = [", r"p\.toml: not valid TOML"),
    (BASE.replace("T = 1.0", "T = \"one\""), r"p\.toml: key 'T' = 'one'; expected a number"),
    (BASE.replace("T = 1.0", "T = 1.0\nlamda = 2.0"), r"p\.toml: unknown key\(s\) \['lamda'\]"),
    (BASE.replace("family = \"otflow\"", "family = \"vae\""), r"p\.toml: key 'family' = 'vae'; expected one of"),
    (BASE.replace("weights = [1.0]", "weights = [0.7]"), r"p\.toml: \[data\]: weights sum to 0\.7"),
    (BASE.replace("kind = \"gaussian_mixture\"", "kind = \"moons\""), r"p\.toml: \[data\]: unknown kind 'moons'"),
    (BASE.replace("domain = [[-6.0, 6.0]]", "domain = [[-2.0, 2.0]]"), r"p\.toml: the domain .* cuts off"),
    (BASE + "[grid]\nn = \"many\"\n", r"p\.toml: key 'grid\.n' = 'many'"),
    (BASE.replace("T = 1.0\n", ""), r"p\.toml: missing key 'T'"),
])
def test_malformed_problem_files_name_file_and_key(tmp_path, text, match):
    with pytest.raises(ProblemFileError, match=match):
        pde.load_problem(_write(tmp_path, text))


def test_missing_problem_file(tmp_path):
    with pytest.raises(ProblemFileError, match="no such problem file"):
        pde.load_problem(tmp_path / "nope.toml")


def test_import_pde_needs_neither_torch_nor_dolfinx():
    code = "import sys, pde; bad=[m for m in ('torch','dolfinx','numba','compare') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    pde.atomic_write(target, "old")
    with pytest.raises(RuntimeError):
        with pde.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_solution_file_round_trip_and_bad_files(tmp_path):
    g = pde.Grid([[-1, 1], [0, 2]], [4, 5], 3, 1.0)
    rho = np.random.default_rng(0).random((4, 4, 5))
    sol = pde.MFGSolution(g.t, g.axes, rho, -rho, meta={"method": "test", "grid": g.to_dict()},
                          extras={"score": np.zeros((4, 4, 5, 2))})
    back = pde.MFGSolution.load(sol.save(tmp_path / "s.npz"))
    np.testing.assert_array_equal(back.phi, -rho)
    assert back.extras["score"].shape == (4, 4, 5, 2) and back.grid() == g
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="cannot read solution file"):
        pde.MFGSolution.load(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not an mfglab solution file"):
        pde.MFGSolution.load(tmp_path / "other.npz")
    with pytest.raises(ValueError, match=r"rho has shape \(4, 4, 4\); expected \(4, 4, 5\)"):
        pde.MFGSolution(g.t, g.axes, rho[..., :4], rho[..., :4])


def test_grid_is_cell_centred():
    g = pde.Grid([[0.0, 1.0]], [4], 2, 1.0)
    np.testing.assert_allclose(g.axes[0], [0.125, 0.375, 0.625, 0.875])
    assert np.isclose(g.integrate(np.ones(4)), 1.0)
    with pytest.raises(ValueError, match="at least 3 nodes"):
        pde.Grid([[0.0, 1.0]], [2], 2, 1.0)


def test_smoothed_checkerboard_log_density_is_finite_far_from_the_board():
    """log p and the score are computed in log space: no underflow at |x| = 6 or 30."""
    law = pde.Checkerboard().ou_marginal(0.3)
    x = np.array([[6.0, 6.0], [30.0, -30.0], [-6.0, 0.5]])
    lp = law.logpdf(x)
    assert np.all(np.isfinite(lp))
    near = np.array([[2.5, 0.3]])
    np.testing.assert_allclose(law.logpdf(near), np.log(law.pdf(near)), rtol=1e-12)
    h = 1e-5  # central differences of log p against the analytic score, relative 1e-6
    for p in x:
        g = [(law.logpdf(p + e) - law.logpdf(p - e)) / (2 * h) for e in (np.array([h, 0]), np.array([0, h]))]
        np.testing.assert_allclose(law.score(p), np.ravel(g), rtol=1e-6)
