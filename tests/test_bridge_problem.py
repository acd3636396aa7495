"""The bridge family: constructor, problem file and validation."""

from __future__ import annotations

import numpy as np
import pytest

import pde
from pde.problem import PlanningTerminal


def test_bridge_constructor_records_both_laws():
    a, b = pde.Gaussian([-1.0], [[0.3]]), pde.Gaussian([1.0], [[0.5]])
    p = pde.bridge(a, b, domain=[[-6, 6]], T=2.0, lam=0.5, nu=0.1, n=[80], nt=20)
    assert p.family == "bridge" and p.rho0 is a and p.target is b
    assert isinstance(p.terminal, PlanningTerminal) and p.terminal.target is b
    assert p.describe()["terminal"] == "planning" and p.describe()["target"]["means"] == [[1.0]]
    assert set(p.mass_outside) >= {"rho0", "target"}
    assert pde.make_problem("bridge", a, b, domain=[[-6, 6]]).family == "bridge"
    # the fingerprint sees the target
    q = pde.bridge(a, pde.Gaussian([1.1], [[0.5]]), domain=[[-6, 6]], T=2.0, lam=0.5, nu=0.1, n=[80], nt=20)
    assert p.fingerprint() != q.fingerprint()


def test_trivial_bridge_is_accepted():
    a = pde.Gaussian([0.0, 0.5], [[0.4, 0.1], [0.1, 0.3]])
    assert pde.bridge(a, a, domain=[[-6, 6]] * 2).target is a


def test_target_with_mass_outside_the_box_is_rejected():
    with pytest.raises(ValueError, match=r"cuts off .* of the target's mass.*enlarge the box"):
        pde.bridge(pde.Gaussian([0.0], [[0.3]]), pde.Gaussian([4.5], [[0.5]]), domain=[[-6, 6]])


@pytest.mark.parametrize("nu", [-0.1, float("nan")])
def test_negative_diffusion_is_rejected(nu):
    with pytest.raises(ValueError, match="nu="):
        pde.bridge(pde.Gaussian([0.0], [[0.3]]), pde.Gaussian([0.5], [[0.3]]), domain=[[-6, 6]], nu=nu)


def test_target_dimension_and_type_are_checked():
    with pytest.raises(ValueError, match="target is 2-dimensional"):
        pde.bridge(pde.Gaussian([0.0], [[0.3]]), pde.eight_gaussians(), domain=[[-6, 6]])
    with pytest.raises(TypeError, match="rho1 must be a Distribution"):
        pde.bridge(pde.Gaussian([0.0], [[0.3]]), np.zeros(3), domain=[[-6, 6]])


def test_bridge_problem_file_round_trip():
    p = pde.load_problem("examples/bridge_gaussian_2d.toml", overrides={"n": [40, 40], "nt": 7})
    assert p.family == "bridge" and p.dim == 2 and p.nu == 0.0 and p.n == (40, 40) and p.nt == 7
    np.testing.assert_array_equal(p.target.means, [[1.5, -0.5]])


_FILE = """family = "bridge"
T = 1.0
domain = [[-6.0, 6.0]]
{extra}
[data]
kind = "gaussian_mixture"
weights = [1.0]
means = [[-1.0]]
covs = [[[0.3]]]
{target}
"""
_TARGET = """[target]
kind = "gaussian_mixture"
weights = [1.0]
means = [[{m}]]
covs = [[[0.4]]]
"""


@pytest.mark.parametrize("extra,target,match", [
    ("", "", r"missing table \[target\]"),
    ("nu = -0.5", _TARGET.format(m=1.0), "nu=-0.5"),
    ("", _TARGET.format(m=5.5), "target's mass"),
    ("beta2 = 1.0", _TARGET.format(m=1.0), r"unknown key\(s\) \['beta2'\]"),
    ('nu = "0.1"', _TARGET.format(m=1.0), "key 'nu'"),
])
def test_bad_bridge_files_name_file_and_key(tmp_path, extra, target, match):
    path = tmp_path / "bad.toml"
    path.write_text(_FILE.format(extra=extra, target=target))
    with pytest.raises(pde.ProblemFileError, match=match) as info:
        pde.load_problem(path)
    assert "bad.toml" in str(info.value)


def test_target_table_is_not_accepted_by_other_families(tmp_path):
    path = tmp_path / "ot.toml"
    path.write_text(_FILE.format(extra="", target=_TARGET.format(m=1.0)).replace('"bridge"', '"otflow"'))
    with pytest.raises(pde.ProblemFileError, match=r"\['target'\] are not parameters of family 'otflow'"):
        pde.load_problem(path)


def test_planning_terminal_and_target_must_agree():
    a, b = pde.Gaussian([0.0], [[0.3]]), pde.Gaussian([0.5], [[0.3]])
    p = pde.bridge(a, b, domain=[[-6, 6]])
    with pytest.raises(ValueError, match="target = terminal.target"):
        p.replace(target=a)
    assert p.replace(nu=0.2).nu == 0.2


@pytest.mark.parametrize("name", ["bridge-gaussian-2d", "sb-gaussian-2d", "bridge-8gaussians-2d"])
def test_bridge_problem_round_trips_through_its_file_form(name):
    """problem_to_dict carries [target] (the form stored in checkpoints): the rebuilt problem is the same."""
    from compare.cases import get_case

    prob = get_case(name).problem()
    spec = pde.problem_to_dict(prob)
    assert spec is not None and spec["family"] == "bridge" and "target" in spec
    rebuilt = pde.problem_from_dict(spec)
    assert rebuilt.fingerprint() == prob.fingerprint()
    assert rebuilt.nu == prob.nu and rebuilt.target.to_dict() == prob.target.to_dict()
