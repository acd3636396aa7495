"""The mean-field-game problem model (DESIGN §2–§3).

An :class:`MFGProblem` is immutable and validated at construction. It holds
the data of

    HJB  -∂tφ - νΔφ - b·∇φ + |∇φ|²/(2λ) = f(x, ρ_t) + c(x, t),   φ(·, T) = g(x, ρ_T)
    FP    ∂tρ - νΔρ + ∇·(ρ (b - ∇φ/λ)) = 0,                       ρ(·, 0) = ρ₀

with optimal velocity v* = -∇φ/λ, on a box with reflecting or periodic
walls. The Hamiltonian is H(x, p) = |p|²/(2λ) - c(x, t) for every family;
``custom`` problems choose c, b, f and g as Python callables (never text).

Family constructors: :func:`otflow`, :func:`sgm`, :func:`wgf`, :func:`lq`,
:func:`bridge`, :func:`custom`. Look one up by name with :func:`make_problem`.

Couplings and terminal costs are small typed records; the solvers dispatch
on their type and do the numerics:

- :class:`NoCoupling`, :class:`LQCoupling` (f = q/2 |x - m̄(ρ)|², non-local),
  :class:`LocalCoupling` (f(x, ρ, t) with ∂f/∂ρ, for custom and studies).
- :class:`KLTerminal` (G = KL(ρ‖γ), g = 1 + log ρ - log γ),
  :class:`FixedTerminal` (g(x) independent of ρ: the sgm cross-entropy),
  :class:`LQTerminal` (g = q_T/2 |x - m̄(ρ_T)|²),
  :class:`LocalTerminal` (g(x, ρ) with ∂g/∂ρ),
  :class:`PlanningTerminal` (the hard constraint ρ_T = ρ₁ of the bridge
  family: no terminal cost, φ(·, T) free up to a constant).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Callable, Mapping, Optional

import numpy as np

from .distributions import Distribution, Gaussian, GaussianMixture
from .grid import BOUNDARIES, Grid

__all__ = [
    "MFGProblem",
    "FAMILIES",
    "NoCoupling",
    "LQCoupling",
    "LocalCoupling",
    "KLTerminal",
    "FixedTerminal",
    "LQTerminal",
    "LocalTerminal",
    "PlanningTerminal",
    "LinearDrift",
    "CallableDrift",
    "otflow",
    "sgm",
    "wgf",
    "lq",
    "bridge",
    "custom",
    "make_problem",
    "MASS_TOL",
]

#: largest probability mass the box may cut off a law the problem relies on
MASS_TOL = 1e-6

#: fewest nodes per dimension a grid may have (as :class:`pde.grid.Grid` requires)
MIN_NODES = 3


# --------------------------------------------------------------------------
# components
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class NoCoupling:
    """F = 0."""

    kind = "none"


@dataclass(frozen=True)
class LQCoupling:
    """f(x, ρ) = q/2 |x - m̄(ρ)|², m̄(ρ) = ∫ x ρ dx (non-local, monotone)."""

    q: float
    kind = "lq"


@dataclass(frozen=True)
class LocalCoupling:
    """f(x, ρ, t) with its derivative ∂f/∂ρ; vectorised numpy callables.

    ``f(x, rho, t)`` and ``dfdrho(x, rho, t)`` take points x of shape
    (..., d) and ρ of shape (...) and return shape (...). Monotone
    (Lasry–Lions) when ∂f/∂ρ ≥ 0.
    """

    f: Callable
    dfdrho: Callable
    name: str = "local"
    kind = "local"


@dataclass(frozen=True)
class KLTerminal:
    """G(ρ) = KL(ρ‖γ); g = 1 + log ρ - log γ."""

    reference: Distribution
    kind = "kl"


@dataclass(frozen=True)
class FixedTerminal:
    """g(x) independent of ρ (G linear in ρ), e.g. the sgm g = -log π."""

    g: Callable
    name: str = "fixed"
    kind = "fixed"


@dataclass(frozen=True)
class LQTerminal:
    """g(x, ρ) = q_T/2 |x - m̄(ρ)|²."""

    qT: float
    kind = "lq"


@dataclass(frozen=True)
class LocalTerminal:
    """g(x, ρ) with ∂g/∂ρ; vectorised numpy callables."""

    g: Callable
    dgdrho: Callable
    name: str = "local"
    kind = "local"


@dataclass(frozen=True)
class PlanningTerminal:
    """The hard terminal constraint ρ_T = ρ₁ (mean-field planning, DESIGN §3.6).

    There is no terminal cost: φ(·, T) is an unknown, fixed only up to an
    additive constant, chosen so that the FP solution ends at ``target``.
    """

    target: Distribution
    kind = "planning"


@dataclass(frozen=True)
class LinearDrift:
    """b(x) = B x (the sgm drift is B = β/2 I)."""

    matrix: np.ndarray
    kind = "linear"

    def __call__(self, x):
        return np.einsum("ij,...j->...i", np.asarray(self.matrix, dtype=float), np.asarray(x, dtype=float))


@dataclass(frozen=True)
class CallableDrift:
    """b(x) given as a vectorised callable on points (..., d) -> (..., d)."""

    fn: Callable
    name: str = "drift"
    kind = "callable"

    def __call__(self, x):
        return self.fn(np.asarray(x, dtype=float))


# --------------------------------------------------------------------------
# the problem
# --------------------------------------------------------------------------


FAMILIES = ("otflow", "sgm", "wgf", "lq", "bridge", "custom")


@dataclass(frozen=True, eq=False)
class MFGProblem:
    """A validated mean-field game (see the module docstring for the PDEs).

    Build it with a family constructor rather than directly.

    Attributes:
        family: one of :data:`FAMILIES`.
        domain: ((lo, hi), ...) per dimension (d = 1, 2).
        T: horizon.
        nu: diffusion ν ≥ 0.
        lam: kinetic weight λ > 0.
        boundary: "reflecting" or "periodic".
        rho0: initial law ρ₀.
        coupling: running coupling f.
        terminal: terminal cost g.
        drift: fixed drift b (None for b = 0).
        running_cost: c(x, t): a constant or a callable (points, t) -> values.
        data: the data law (π): ρ₀ for otflow/wgf/lq, the data for sgm.
        reference: γ for otflow, π for wgf (None otherwise).
        target: ρ₁, the prescribed terminal law of the bridge family (None otherwise).
        params: family parameters (beta, q, qT, tau, ...).
        n, nt: default grid (nodes per dimension, time steps).
        name: a label for outputs.
    """

    family: str
    domain: tuple
    T: float
    nu: float
    lam: float
    boundary: str
    rho0: Distribution
    coupling: object = field(default_factory=NoCoupling)
    terminal: object = None
    drift: Optional[object] = None
    running_cost: object = 0.0
    data: Optional[Distribution] = None
    reference: Optional[Distribution] = None
    params: Mapping = field(default_factory=dict)
    n: tuple = (200,)
    nt: int = 100
    name: str = ""
    mass_outside: Mapping = field(default_factory=dict)
    target: Optional[Distribution] = None

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"unknown family {self.family!r}; expected one of {list(FAMILIES)}")
        dom = _check_domain(self.domain)
        d = len(dom)
        object.__setattr__(self, "domain", dom)
        _check_positive("T", self.T)
        _check_nonnegative("nu", self.nu, "a finite diffusion coefficient nu >= 0")
        _check_positive("lam", self.lam)
        if self.boundary not in BOUNDARIES:
            raise ValueError(f"boundary={self.boundary!r}; expected one of {list(BOUNDARIES)}")
        if not isinstance(self.rho0, Distribution):
            raise TypeError(f"rho0 must be a Distribution (got {type(self.rho0).__name__})")
        for label, law in self._laws():
            if law is not None and law.dim != d:
                raise ValueError(f"{label} is {law.dim}-dimensional but the domain has {d} dimension(s)")
        if self.terminal is None:
            raise ValueError("a terminal cost is required")
        if isinstance(self.terminal, PlanningTerminal) and self.target is not self.terminal.target:
            raise ValueError("a planning terminal needs target = terminal.target (build bridges with pde.bridge)")
        raw_n = list(self.n) if np.ndim(self.n) else [self.n] * d
        if not all(_is_integer(k) for k in raw_n) or isinstance(self.nt, (bool, np.bool_)) or not _is_integer(self.nt):
            raise ValueError(f"grid n={raw_n!r}, nt={self.nt!r}; expected integers")
        n = tuple(int(k) for k in raw_n)
        if len(n) != d:
            raise ValueError(f"grid n={list(n)} has {len(n)} entries; expected {d} (one per dimension)")
        if min(n) < MIN_NODES:
            raise ValueError(f"grid n={list(n)}: an axis with {min(n)} node(s); expected at least {MIN_NODES} nodes "
                             "per dimension (the schemes difference across neighbours)")
        if int(self.nt) < 1:
            raise ValueError(f"nt={self.nt}; expected at least one time step")
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "nt", int(self.nt))
        object.__setattr__(self, "T", float(self.T))
        object.__setattr__(self, "nu", float(self.nu))
        object.__setattr__(self, "lam", float(self.lam))
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))
        # The box must hold the laws the problem rests on.
        masses = {}
        for label, law in self._laws():
            if law is None:
                continue
            m = law.mass_outside(dom)
            masses[label] = m
            if m > MASS_TOL:
                need = law.support_box(MASS_TOL)
                lo = np.minimum(need[:, 0], [a for a, _ in dom])
                hi = np.maximum(need[:, 1], [b for _, b in dom])
                box = ", ".join(f"[{a:.3g}, {b:.3g}]" for a, b in zip(lo, hi))
                raise ValueError(
                    f"the domain {_fmt_domain(dom)} cuts off {m:.3g} of the {label}'s mass; expected at most "
                    f"{MASS_TOL:g} — enlarge the box (for example to {box})"
                )
        object.__setattr__(self, "mass_outside", MappingProxyType(masses))

    def _laws(self):
        """(label, law) of every law the problem rests on (None where a family has none)."""
        return (("rho0", self.rho0), ("data", self.data), ("reference", self.reference), ("target", self.target))

    # -- convenience -------------------------------------------------------

    @property
    def dim(self) -> int:
        return len(self.domain)

    def grid(self, n=None, nt=None) -> Grid:
        """The problem's grid, with optional overrides of n and nt."""
        return Grid(self.domain, self.n if n is None else n, self.nt if nt is None else nt, self.T, self.boundary)

    def with_grid(self, n=None, nt=None) -> "MFGProblem":
        """A copy with another default grid (validated like the original)."""
        d = self.dim
        n2 = self.n if n is None else (tuple(n) if np.ndim(n) else (int(n),) * d)
        return replace(self, n=n2, nt=self.nt if nt is None else int(nt))

    def replace(self, **changes) -> "MFGProblem":
        """A validated copy with some fields changed (dataclasses.replace)."""
        return replace(self, **changes)

    def c(self, x, t: float):
        """Running cost c(x, t) on points x (..., d)."""
        x = np.asarray(x, dtype=float)
        if callable(self.running_cost):
            return np.asarray(self.running_cost(x, t), dtype=float) * np.ones(x.shape[:-1])
        return np.full(x.shape[:-1], float(self.running_cost))

    def b(self, x):
        """Drift b(x) on points (..., d); zeros when there is none."""
        x = np.asarray(x, dtype=float)
        if self.drift is None:
            return np.zeros_like(x)
        return np.asarray(self.drift(x), dtype=float)

    def hamiltonian(self, x, p, t: float = 0.0):
        """H(x, p) = |p|²/(2λ) - c(x, t)."""
        p = np.asarray(p, dtype=float)
        return (p**2).sum(-1) / (2 * self.lam) - self.c(x, t)

    def describe(self) -> dict:
        """JSON-ready summary for solution metadata."""
        out = {
            "family": self.family,
            "name": self.name,
            "dim": self.dim,
            "domain": [list(d) for d in self.domain],
            "T": self.T,
            "nu": self.nu,
            "lam": self.lam,
            "boundary": self.boundary,
            "params": dict(self.params),
            "n": list(self.n),
            "nt": self.nt,
            "coupling": self.coupling.kind,
            "terminal": self.terminal.kind,
            "drift": None if self.drift is None else self.drift.kind,
            "running_cost": self.running_cost if not callable(self.running_cost) else "callable",
            "mass_outside_box": dict(self.mass_outside),
        }
        for label in ("rho0", "data", "reference", "target"):
            law = getattr(self, label)
            if law is not None:
                try:
                    out[label] = law.to_dict()
                except NotImplementedError:
                    out[label] = type(law).__name__
        return out

    def fingerprint(self) -> str:
        """A stable hash of what defines the problem (for caches)."""
        import hashlib
        import json

        if self.family == "custom":
            # callables have no stable text; fall back to their identity
            return hashlib.sha256(repr((self.describe(), id(self))).encode()).hexdigest()[:16]
        return hashlib.sha256(json.dumps(self.describe(), sort_keys=True, default=str).encode()).hexdigest()[:16]


def _is_integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _real(name: str, value, what: str) -> float:
    """``value`` as a float when it is a real number (NumPy scalars included, bools not)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        kind = type(value).__name__
        if type(value).__module__ == "numpy":
            kind = "numpy." + kind
        raise ValueError(f"{name}={value!r} ({kind}); expected {what}")
    return float(value)


def _check_positive(name: str, value) -> None:
    v = _real(name, value, "a finite number > 0")
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name}={v!r}; expected a finite number > 0")


def _check_nonnegative(name: str, value, what: str = "a finite number >= 0") -> None:
    v = _real(name, value, what)
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name}={v!r}; expected {what}")


def _check_domain(domain) -> tuple:
    try:
        dom = tuple((float(lo), float(hi)) for lo, hi in domain)
    except (TypeError, ValueError):
        raise ValueError(f"domain={domain!r}; expected one [lo, hi] pair per dimension, e.g. [[-6, 6]]") from None
    if len(dom) not in (1, 2):
        raise ValueError(f"domain has {len(dom)} dimensions; expected 1 or 2")
    for lo, hi in dom:
        if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
            raise ValueError(f"domain interval [{lo}, {hi}] is empty or not finite; expected lo < hi")
    return dom


def _fmt_domain(dom) -> str:
    return " × ".join(f"[{lo:g}, {hi:g}]" for lo, hi in dom)


def _standard_normal(d: int) -> GaussianMixture:
    return Gaussian(np.zeros(d), np.eye(d))


# --------------------------------------------------------------------------
# family constructors
# --------------------------------------------------------------------------


def otflow(data: Distribution, *, domain, T: float = 1.0, lam: float = 1.0, nu: float = 0.0,
           reference: Distribution | None = None, boundary: str = "reflecting", n=None, nt: int = 100,
           name: str = "") -> MFGProblem:
    """Normalizing flow with kinetic cost (OT-Flow / RNODE), DESIGN §3.1.

    ν = 0 (or small), b = 0, F = 0, ρ₀ = π (the data), G = KL(ρ‖γ) with
    γ = ``reference`` (default N(0, I)). The terminal law is the W2-proximal
    point of KL(·‖γ) from π with step τ = T/λ.
    """
    d = len(domain)
    ref = reference if reference is not None else _standard_normal(d)
    return MFGProblem("otflow", domain, T, nu, lam, boundary, rho0=data, coupling=NoCoupling(),
                      terminal=KLTerminal(ref), data=data, reference=ref, params={"tau": T / lam if lam > 0 else math.inf},
                      n=n if n is not None else (200,) * d, nt=nt, name=name or "otflow")


def sgm(data: Distribution, *, domain, T: float = 1.0, beta: float = 1.0, boundary: str = "reflecting", n=None,
        nt: int = 100, name: str = "") -> MFGProblem:
    """Score-based model with the OU/VP forward process, DESIGN §3.2.

    b(x) = β/2 x, ν = β/2, λ = 1/β, c = -βd/2 (kept, so that exactly
    φ(x, t) = -log η(x, T - t), with η the OU marginal of the data), F = 0,
    g = -log π, ρ₀ = η_T. The optimal velocity is v* = β ∇log η (the score,
    times β).
    """
    _check_positive("beta", beta)
    d = len(domain)
    rho0 = data.ou_marginal(T, beta)
    return MFGProblem("sgm", domain, T, beta / 2.0, 1.0 / beta, boundary, rho0=rho0, coupling=NoCoupling(),
                      terminal=FixedTerminal(lambda x, _p=data: -_p.logpdf(x), name="-log pi"),
                      drift=LinearDrift(0.5 * beta * np.eye(d)), running_cost=-beta * d / 2.0,
                      data=data, reference=None, params={"beta": float(beta)},
                      n=n if n is not None else (200,) * d, nt=nt, name=name or "sgm")


def wgf(data: Distribution, *, domain, T: float = 1.0, tau: float | None = None, reference: Distribution | None = None,
        boundary: str = "reflecting", n=None, nt: int = 100, name: str = "") -> MFGProblem:
    """Wasserstein gradient flow of KL(ρ‖π), DESIGN §3.3.

    PDE: ∂tρ = ∇·(ρ ∇log(ρ/π)) = Δρ - ∇·(ρ ∇log π), from ρ₀ = ``data``,
    with π = ``reference`` (default N(0, I)). In the §2 form this is the FP
    equation with ν = 1, b = ∇log π and no control; each JKO step of size
    ``tau`` (default T/10) is an otflow problem on [0, τ] with λ = 1 and
    reference π. ``lam`` is 1 (the JKO kinetic weight).
    """
    d = len(domain)
    ref = reference if reference is not None else _standard_normal(d)
    _check_positive("T", T)
    if tau is not None:
        _check_positive("tau", tau)
    tau = float(T / 10.0 if tau is None else tau)
    if tau > T:
        raise ValueError(f"tau={tau} exceeds T={T}; expected a JKO step 0 < tau <= T")
    steps = float(T) / tau
    if abs(steps - round(steps)) > 1e-9 * max(1.0, steps):
        raise ValueError(f"tau={tau:g} does not divide T={float(T):g} (T/tau = {steps:.6g}); expected a JKO step "
                         f"with T/tau an integer, e.g. tau={float(T) / max(1, round(steps)):g}")
    return MFGProblem("wgf", domain, T, 1.0, 1.0, boundary, rho0=data, coupling=NoCoupling(),
                      terminal=KLTerminal(ref), drift=CallableDrift(ref.score, name="grad log pi"),
                      data=data, reference=ref, params={"tau": tau},
                      n=n if n is not None else (200,) * d, nt=nt, name=name or "wgf")


def lq(data: Distribution, *, domain, T: float = 1.0, q: float = 1.0, qT: float = 1.0, nu: float = 0.0,
       lam: float = 1.0, boundary: str = "reflecting", n=None, nt: int = 100, name: str = "") -> MFGProblem:
    """Linear-quadratic MFG with the non-local mean coupling, DESIGN §3.4.

    f = q/2 |x - m̄(t)|², g = q_T/2 |x - m̄(T)|², m̄ = mean of ρ_t.
    """
    for label, v in (("q", q), ("qT", qT)):
        _check_nonnegative(label, v)
    d = len(domain)
    return MFGProblem("lq", domain, T, nu, lam, boundary, rho0=data, coupling=LQCoupling(float(q)),
                      terminal=LQTerminal(float(qT)), data=data, params={"q": float(q), "qT": float(qT)},
                      n=n if n is not None else (200,) * d, nt=nt, name=name or "lq")


def custom(rho0: Distribution, *, domain, T: float = 1.0, nu: float = 0.0, lam: float = 1.0,
           coupling=None, terminal=None, drift=None, running_cost=0.0, boundary: str = "reflecting",
           n=None, nt: int = 100, name: str = "") -> MFGProblem:
    """Any problem of the §2 form from Python callables.

    Args:
        coupling: :class:`LocalCoupling`, :class:`LQCoupling` or None (F = 0).
        terminal: :class:`LocalTerminal`, :class:`FixedTerminal`, :class:`KLTerminal`
            or :class:`LQTerminal`; a plain callable g(x) is taken as fixed.
        drift: a callable b(x) or a matrix B (b = Bx), or None.
        running_cost: a constant or a callable c(x, t).
    """
    d = len(domain)
    if terminal is None:
        terminal = FixedTerminal(lambda x: np.zeros(np.shape(x)[:-1]), name="zero")
    elif not hasattr(terminal, "kind"):
        if not callable(terminal):
            raise TypeError(f"terminal must be a terminal-cost record or a callable g(x) (got {type(terminal).__name__})")
        terminal = FixedTerminal(terminal, name=getattr(terminal, "__name__", "g"))
    if drift is not None and not hasattr(drift, "kind"):
        if callable(drift):
            drift = CallableDrift(drift, name=getattr(drift, "__name__", "b"))
        else:
            mat = np.atleast_2d(np.asarray(drift, dtype=float))
            if mat.shape != (d, d):
                raise ValueError(f"drift matrix has shape {mat.shape}; expected ({d}, {d})")
            drift = LinearDrift(mat)
    return MFGProblem("custom", domain, T, nu, lam, boundary, rho0=rho0, coupling=coupling or NoCoupling(),
                      terminal=terminal, drift=drift, running_cost=running_cost, data=rho0,
                      n=n if n is not None else (200,) * d, nt=nt, name=name or "custom")


def bridge(rho0: Distribution, rho1: Distribution, *, domain, T: float = 1.0, lam: float = 1.0, nu: float = 0.0,
           boundary: str = "reflecting", n=None, nt: int = 100, name: str = "") -> MFGProblem:
    """Bridge between two given laws (mean-field planning), DESIGN §3.6.

    J = ∫₀ᵀ∫ (λ/2)|v|² ρ dx dt subject to ∂tρ - νΔρ + ∇·(ρv) = 0,
    ρ(0) = ρ₀ = ``rho0`` and the hard constraint ρ(T) = ρ₁ = ``rho1``;
    b = 0, c = 0, F = 0. The optimality system is the HJB/FP pair of §2 with
    φ(·, T) free (fixed up to a constant) in place of a terminal condition,
    v* = -∇φ/λ. ν = 0: Benamou–Brenier dynamic OT, kinetic energy
    (λ/2T)·W₂²(ρ₀, ρ₁). ν > 0: the Schrödinger bridge for the Brownian
    reference of diffusion 2ν (λ scales φ and the cost, not the path).
    ρ₀ = ρ₁ is allowed (the trivial bridge).
    """
    if not isinstance(rho1, Distribution):
        raise TypeError(f"rho1 must be a Distribution (got {type(rho1).__name__})")
    d = len(domain)
    return MFGProblem("bridge", domain, T, nu, lam, boundary, rho0=rho0, coupling=NoCoupling(),
                      terminal=PlanningTerminal(rho1), data=rho0, target=rho1,
                      n=n if n is not None else (200,) * d, nt=nt, name=name or "bridge")


_CONSTRUCTORS = {"otflow": otflow, "sgm": sgm, "wgf": wgf, "lq": lq, "bridge": bridge, "custom": custom}


def make_problem(family: str, *args, **kwargs) -> MFGProblem:
    """Build a problem of a named family; an unknown name lists the valid ones."""
    if family not in _CONSTRUCTORS:
        raise ValueError(f"unknown family {family!r}; expected one of {list(_CONSTRUCTORS)}")
    return _CONSTRUCTORS[family](*args, **kwargs)
