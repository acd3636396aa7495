"""Named verification cases: a problem, its ground-truth routes and a default model.

Each :class:`Case` names

- the MFG problem (built in Python; where an ``examples/*.toml`` file holds
  the same problem the test-suite checks the two agree),
- its truth routes among ``"exact"`` (closed form), ``"fd"``, ``"fe"``,
  ``"ot"`` (the static optimal-transport route), the primary first,
- the default neural model (``"otflow"``, ``"ffjord"``, ``"sgm"``,
  ``"hjb-sgm"``, ``"wgf"``, ``"lq"``) and a training budget (steps) sized for a
  ≤ 5-minute CPU demo,
- a default grid small enough for a 2-core CPU (override with
  ``case.problem(n=..., nt=...)``).

``get_case(name)`` raises with the list of valid names for an unknown one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

import pde
from pde.problem import MFGProblem

__all__ = ["Case", "CASES", "DEFAULT_CASE", "TRUTH_ROUTES", "MODELS", "get_case", "list_cases", "format_cases",
           "EXAMPLES_DIR", "UnknownCase"]

TRUTH_ROUTES = ("exact", "fd", "fe", "ot")


def model_names() -> tuple:
    """The neural models' names, read from neural's one registry (:mod:`neural.models.registry`).

    Imported on use, not with this module, so that ``mfglab solve`` and ``mfglab cases`` need no torch;
    ``MODELS`` is the same tuple as a module attribute.
    """
    from neural.models import model_names as registered

    return registered()


def __getattr__(name: str):
    if name == "MODELS":
        return model_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"

#: grids small enough for the 2-core CPU (the FD truth and the evaluation both run on it)
GRID_1D = dict(n=(200,), nt=80)
GRID_2D = dict(n=(48, 48), nt=24)


@dataclass(frozen=True)
class Case:
    """A named verification case.

    Attributes:
        name: registry key (kebab-case).
        description: one line.
        build: ``() -> MFGProblem`` with the default grid.
        truth: routes among :data:`TRUTH_ROUTES`, the primary first.
        model: default neural model (one of :data:`MODELS`).
        budget: default training steps for the CPU demo.
        example: the ``examples/*.toml`` file holding the same problem, if any.
        truth_options: route -> options passed to :func:`pde.solve` for that route (part of the cache key).
    """

    name: str
    description: str
    build: Callable[[], MFGProblem]
    truth: tuple
    model: str
    budget: int
    example: str | None = None
    truth_options: dict = field(default_factory=dict)

    def __post_init__(self):
        bad = [r for r in self.truth if r not in TRUTH_ROUTES]
        if not self.truth or bad:
            raise ValueError(f"case {self.name}: truth routes {list(self.truth)}; expected a non-empty list among "
                             f"{list(TRUTH_ROUTES)}")
        # the model name is checked against neural's registry in get_case (which imports torch)
        if int(self.budget) < 1:
            raise ValueError(f"case {self.name}: budget {self.budget}; expected a positive number of steps")

    def options_for(self, route: str) -> dict:
        """The :func:`pde.solve` options of ``route`` for this case (empty when none are set)."""
        return dict(self.truth_options.get(route, {}))

    @property
    def primary_truth(self) -> str:
        return self.truth[0]

    def problem(self, n=None, nt=None) -> MFGProblem:
        """The case's problem, optionally on another grid."""
        prob = self.build()
        if n is not None or nt is not None:
            prob = prob.with_grid(n=n, nt=nt)
        return prob

    def to_dict(self) -> dict:
        prob = self.build()
        return {
            "name": self.name,
            "description": self.description,
            "family": prob.family,
            "dim": prob.dim,
            "truth": list(self.truth),
            "model": self.model,
            "budget": int(self.budget),
            "grid": {"n": list(prob.n), "nt": prob.nt},
            "example": self.example,
        }


# --------------------------------------------------------------------------
# problem builders
# --------------------------------------------------------------------------

BOX1 = [[-6.0, 6.0]]
BOX2 = [[-6.0, 6.0], [-6.0, 6.0]]
MIX1D = pde.GaussianMixture([0.5, 0.5], [[-1.0], [1.5]], [[[0.3]], [[0.5]]])


def _otflow_gaussian_1d() -> MFGProblem:
    return pde.otflow(pde.Gaussian([1.5], [[0.25]]), domain=BOX1, T=1.0, lam=1.0, nu=0.0,
                      reference=pde.Gaussian([0.0], [[1.0]]), name="otflow-gaussian-1d", **GRID_1D)


def _otflow_gaussian_2d() -> MFGProblem:
    return pde.otflow(pde.Gaussian([1.0, -0.5], [[0.5, 0.0], [0.0, 0.3]]), domain=BOX2, T=1.0, lam=1.0,
                      name="otflow-gaussian-2d", **GRID_2D)


def _otflow_mixture_2d() -> MFGProblem:
    data = pde.GaussianMixture([0.4, 0.6], [[-1.5, 0.5], [1.2, -0.8]],
                               [[[0.3, 0.1], [0.1, 0.25]], [[0.35, -0.1], [-0.1, 0.3]]])
    # 80²: the ot truth's L1 error is below 1e-3 at every time level (measured against ot at 320²: <= 6.3e-4, docs/ot.md);
    # nt only picks time levels (ot is exact in time). FD, the second route, needs h <= std/2 of the narrowest
    # component (0.415/2), i.e. n >= 58; its L1 error at 58²×16 is ~5e-2 (docs/fd.md).
    return pde.otflow(data, domain=BOX2, T=1.0, lam=1.0, name="otflow-mixture-2d", n=(80, 80), nt=8)


def _sgm_mixture_1d() -> MFGProblem:
    return pde.sgm(MIX1D, domain=BOX1, T=1.0, beta=1.0, name="sgm-mixture-1d", **GRID_1D)


def _sgm_checkerboard_2d() -> MFGProblem:
    return pde.sgm(pde.Checkerboard(), domain=BOX2, T=1.0, beta=1.0, name="sgm-checkerboard-2d", **GRID_2D)


def _sgm_8gaussians_2d() -> MFGProblem:
    return pde.sgm(pde.eight_gaussians(), domain=BOX2, T=1.0, beta=1.0, name="sgm-8gaussians-2d", **GRID_2D)


# the bridge cases: rho0 -> rho1 with a hard terminal constraint (flow matching, Schrödinger bridges)
BRIDGE_RHO0 = pde.Gaussian([-1.5, 0.5], [[0.5, 0.2], [0.2, 0.4]])
BRIDGE_RHO1 = pde.Gaussian([1.5, -0.5], [[0.3, -0.1], [-0.1, 0.6]])


def _bridge_gaussian_2d() -> MFGProblem:
    return pde.bridge(BRIDGE_RHO0, BRIDGE_RHO1, domain=BOX2, T=1.0, lam=1.0, nu=0.0, name="bridge-gaussian-2d",
                      n=(64, 64), nt=8)


def _sb_gaussian_2d() -> MFGProblem:
    # nu = 0.1: the heat kernel's width sqrt(2 nu T) = 0.45 spans 2.4 cells of the 64² grid (the ot route's rule)
    return pde.bridge(BRIDGE_RHO0, BRIDGE_RHO1, domain=BOX2, T=1.0, lam=1.0, nu=0.1, name="sb-gaussian-2d",
                      n=(64, 64), nt=8)


def _bridge_8gaussians_2d() -> MFGProblem:
    # the ring is wider (std 0.6, radius 2) than the FFJORD toy's (0.35, 2.83): between narrower components the
    # target density is ~e^-30 and the ot route's Monge-Ampere polish stalls at marginal errors of 5e-2 to 0.5
    return pde.bridge(pde.Gaussian([0.0, 0.0], np.eye(2)), pde.eight_gaussians(radius=2.0, std=0.6),
                      domain=[[-5.5, 5.5], [-5.5, 5.5]], T=1.0, lam=1.0, nu=0.0, name="bridge-8gaussians-2d",
                      n=(96, 96), nt=4)


def _wgf_gaussian_2d() -> MFGProblem:
    return pde.wgf(pde.Gaussian([1.5, -1.0], [[0.5, 0.2], [0.2, 0.3]]), domain=BOX2, T=1.0, tau=0.1,
                   reference=pde.Gaussian([0.0, 0.0], np.eye(2)), name="wgf-gaussian-2d", **GRID_2D)


def _lq_mixture_1d() -> MFGProblem:
    return pde.lq(MIX1D, domain=BOX1, T=1.0, q=1.0, qT=1.0, nu=0.1, lam=1.0, name="lq-mixture-1d", **GRID_1D)


def _lq_gaussian_2d() -> MFGProblem:
    # q ≠ qT so the Riccati η(t) is not constant (a non-trivial time dependence)
    return pde.lq(pde.Gaussian([0.5, -0.5], [[0.6, 0.2], [0.2, 0.4]]), domain=BOX2, T=1.0, q=1.0, qT=2.0,
                  nu=0.1, lam=1.0, name="lq-gaussian-2d", **GRID_2D)


def _obstacle_sgm_2d() -> MFGProblem:
    # the eight Gaussians leave the centre empty, where the obstacle mesh puts its hole (radius 1). The FE
    # solve starts from ρ₀ = η_T, the noised data, which fills the centre as T grows: the hole holds
    # 0.113 of η_T's mass at T = 1 (the FE mass check refuses it), 6e-5 at T = 0.1.
    # The OU closed form ignores the obstacle, so only the FE route is a truth here.
    prob = pde.sgm(pde.eight_gaussians(), domain=BOX2, T=0.1, beta=1.0, name="obstacle-sgm-2d", **GRID_2D)
    return prob.replace(params={**prob.params, "fe": {"mesh": "obstacle", "h": 0.25}})


_CASES = [
    Case("otflow-gaussian-1d", "normalizing flow with kinetic cost, 1D Gaussian data to N(0,1) (McCann closed form)",
         _otflow_gaussian_1d, ("exact", "fd"), "otflow", 600, "otflow_gaussian_1d.toml"),
    Case("otflow-gaussian-2d", "normalizing flow with kinetic cost, anisotropic 2D Gaussian to N(0,I) (closed form)",
         _otflow_gaussian_2d, ("ot", "exact", "fd"), "otflow", 1500),
    Case("otflow-mixture-2d", "normalizing flow with kinetic cost, two-component 2D mixture to N(0,I) (no closed form)",
         _otflow_mixture_2d, ("ot", "fd"), "otflow", 2000),
    Case("sgm-mixture-1d", "score-based model (OU, beta=1) on a 1D two-component mixture (exact OU marginals)",
         _sgm_mixture_1d, ("exact", "fd"), "sgm", 1500, "sgm_mixture_1d.toml"),
    # no FD route: the terminal cost g = -log π is +inf off the board, which the HJB cannot take
    Case("sgm-checkerboard-2d", "score-based model on the 2D checkerboard (exact OU marginals via erf)",
         _sgm_checkerboard_2d, ("exact",), "sgm", 3000, "sgm_checkerboard_2d.toml"),
    Case("sgm-8gaussians-2d", "score-based model with the HJB regulariser on the eight-Gaussians toy",
         _sgm_8gaussians_2d, ("exact", "fd"), "hjb-sgm", 3000),
    Case("wgf-gaussian-2d", "Wasserstein gradient flow of the KL divergence to N(0,I) from a correlated 2D Gaussian",
         # ot (the JKO chain, tau = 0.1) is 3.1e-2 from the gradient flow at T (FD: 5.6e-2 at 64²×24): it ranks
         # above FD but not above the closed form, whose gradient flow it approximates to O(tau)
         _wgf_gaussian_2d, ("exact", "ot", "fd"), "wgf", 1500, "wgf_gaussian_2d.toml"),
    Case("lq-mixture-1d", "linear-quadratic MFG with mean coupling, 1D mixture, nu=0.1 (Riccati closed form)",
         _lq_mixture_1d, ("exact", "fd"), "lq", 800, "lq_mixture_1d.toml"),
    Case("lq-gaussian-2d", "linear-quadratic MFG with mean coupling, correlated 2D Gaussian, q != qT (Riccati)",
         _lq_gaussian_2d, ("exact", "fd"), "lq", 1000),
    Case("bridge-gaussian-2d", "flow matching between two correlated 2D Gaussians, nu = 0 (Benamou-Brenier closed form)",
         _bridge_gaussian_2d, ("exact", "ot"), "ot-cfm", 1000, "bridge_gaussian_2d.toml"),
    Case("sb-gaussian-2d", "Schrödinger-bridge flow matching between two 2D Gaussians, nu = 0.1 (closed form)",
         _sb_gaussian_2d, ("exact", "ot"), "sb-cfm", 1000),
    # the ot polish stalls at marginal errors 6.7e-4 (96²) and 1.0e-3 (48², the grid of the truth-error estimate)
    # on this target, above the route's default accept_tol = 3e-4: accepted here and reported as such (status
    # "accepted-on-stall"); the push of rho0 at t = T is 4.8e-3 from rho1 at 96² (8.8e-4 at 192²)
    Case("bridge-8gaussians-2d", "flow matching from N(0, I) to eight Gaussians on a ring, nu = 0 (ot truth)",
         _bridge_8gaussians_2d, ("ot",), "ot-cfm", 2000, truth_options={"ot": {"accept_tol": 1.5e-3}}),
    Case("obstacle-sgm-2d", "score-based model on eight Gaussians around an obstacle (finite elements only)",
         _obstacle_sgm_2d, ("fe",), "sgm", 3000),
]

CASES: dict[str, Case] = {c.name: c for c in _CASES}
DEFAULT_CASE = "otflow-gaussian-1d"


class UnknownCase(ValueError):
    """A case name that is not registered (the message lists the valid ones)."""


def list_cases() -> list[Case]:
    """All registered cases, in registry order."""
    return list(CASES.values())


def get_case(name: str) -> Case:
    """The case called ``name``; an unknown name lists the valid ones."""
    if isinstance(name, Case):
        return name
    if name not in CASES:
        raise UnknownCase(f"unknown case {name!r}; expected one of: {', '.join(CASES)}")
    case = CASES[name]
    if case.model not in model_names():
        raise ValueError(f"case {case.name}: model {case.model!r}; expected one of {list(model_names())}")
    return case


def format_cases() -> str:
    """One line per case (for ``mfglab cases``)."""
    width = max(len(c.name) for c in CASES.values())
    lines = []
    for c in CASES.values():
        lines.append(f"{c.name:<{width}}  truth={'/'.join(c.truth):<9} model={c.model:<7} {c.description}")
    return "\n".join(lines)


def cases_markdown() -> str:
    """The case table of ``docs/compare.md``, generated from the registry (a test keeps the two equal)."""
    rows = ["| name | family | d | truth | model | budget | grid | description |",
            "|---|---|---|---|---|---|---|---|"]
    for c in CASES.values():
        p = c.problem()
        grid = "×".join(str(k) for k in p.n) + f", nt={p.nt}" + (f", T={p.T:g}" if p.T != 1.0 else "")
        desc = c.description
        if "fe" in p.params:
            desc += "; `params.fe = " + ", ".join(f"{k}: {v!r}" for k, v in p.params["fe"].items()) + "`"
        rows.append(f"| `{c.name}` | {p.family} | {p.dim} | {', '.join(c.truth)} | {c.model} | {c.budget} | "
                    f"{grid} | {desc} |")
    return "\n".join(rows)
