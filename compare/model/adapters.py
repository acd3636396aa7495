"""``compare.Model``: any generative model as plain callables on NumPy arrays.

Every callable takes its own time convention (``time="generative"``:
t ∈ [0, T] as in DESIGN §2; ``time="noising"``: s = T − t, as score models
are usually written) and NumPy arrays:

- ``velocity(x (M, d), t) -> (M, d)``: the model's flow velocity dx/dt
  (``velocity_kind="flow"``, default; in noising time dx/ds of the noising
  flow) or its control v of DESIGN §2 (``velocity_kind="control"``,
  generative time only: dX = (b + v)dt + √(2ν)dW);
- ``score(x, t) -> (M, d)``: ∇log ρ_t of its own marginals;
- ``log_density(x, t) -> (M,)``;
- ``potential(x, t) -> (M,)``: φ in the pde convention (v = −∇φ/λ);
- ``sample(n, times, rng) -> (len(times), n, d)``: positions at the given
  times (pass ``paired=True`` when they are trajectories);
- ``divergence(x, t) -> (M,)``: optional exact ∇· of the velocity (or of the
  score when only a score is given); otherwise second-order central
  differences of the callable with step ``fd_step``.

``t`` is one float per call. :meth:`Model.from_torch` wraps a torch module
with its exact divergence; :meth:`Model.from_file` reads a model file.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .file import TIME_CONVENTIONS, ModelFile

__all__ = ["Model", "ModelCallError"]

_KINDS = ("velocity", "score", "log_density", "potential", "sample")


def _fd_div(f: Callable, h: float) -> Callable:
    """Central-difference divergence of ``f``, all 2d shifted copies of ``x`` in one call of ``f``
    (a callable's per-call cost, such as a network's, is paid once per divergence, not 2d times)."""
    def div(x, t):
        x = np.asarray(x, dtype=float)
        M, d = x.shape
        shifts = np.concatenate([s * h * np.eye(d)[j][None, :] + x for j in range(d) for s in (1.0, -1.0)])
        vals = np.asarray(f(shifts, t), dtype=float).reshape(d, 2, M, d)
        return sum((vals[j, 0, :, j] - vals[j, 1, :, j]) for j in range(d)) / (2 * h)
    return div


class ModelCallError(RuntimeError):
    """A model's callable raised or returned the wrong shape (the message names the callable)."""


def _checked(name: str, f: Callable | None, vector: bool) -> Callable | None:
    """``f`` with its failures named: an exception or an output of the wrong shape raises
    :class:`ModelCallError` saying which callable, at which inputs, and what was expected. A 1D
    vector field returned as (M,) is read as (M, 1) (it would otherwise broadcast to (M, M))."""
    if f is None:
        return None

    def g(x, t):
        x = np.asarray(x)
        try:
            out = np.asarray(f(x, t), dtype=float)
        except ModelCallError:
            raise
        except Exception as exc:  # the user's code: name it instead of a traceback
            raise ModelCallError(f"the model's {name}(x of shape {x.shape}, t = {float(t):.6g}) raised "
                                 f"{type(exc).__name__}: {exc}") from None
        M, d = x.shape
        if vector and out.shape == (M,) and d == 1:
            out = out[:, None]
        want = (M, d) if vector else (M,)
        if out.shape != want:
            raise ModelCallError(f"the model's {name}(x of shape {x.shape}, t = {float(t):.6g}) returned shape "
                                 f"{out.shape}; expected {want}")
        return out
    g.__dict__.update(getattr(f, "__dict__", {}))  # keep attributes such as a divergence's "how"
    return g


class Model:
    """A generative model given by callables (see the module docstring).

    Args:
        velocity, score, log_density, potential, sample: callables (any subset, at least one).
        time: ``"generative"`` or ``"noising"``.
        T: the horizon (needed for ``"noising"``; otherwise the problem's).
        velocity_kind: ``"flow"`` or ``"control"``.
        divergence: exact divergence of the velocity (or of the score).
        potential_grad, potential_laplacian: exact ∇φ (M, d) and Δφ (M,) of the potential.
        paired: ``sample`` returns trajectories (the same particles at every time).
        eps: noising times are clipped to ≥ eps (a score is often singular at s = 0).
        fd_step: finite-difference step of the divergence when none is given.
        name, source: shown in the report.
        file: the :class:`ModelFile` this model came from (grid arrays are used as given).
    """

    def __init__(self, velocity: Callable | None = None, score: Callable | None = None,
                 log_density: Callable | None = None, potential: Callable | None = None,
                 sample: Callable | None = None, *, time: str = "generative", T: float | None = None,
                 velocity_kind: str = "flow", divergence: Callable | None = None, paired: bool = False,
                 eps: float = 0.0, fd_step: float = 1e-4, name: str | None = None, source: str | None = None,
                 file: ModelFile | None = None, exact_divergence: bool | None = None,
                 potential_grad: Callable | None = None, potential_laplacian: Callable | None = None):
        if time not in TIME_CONVENTIONS:
            raise ValueError(f"time={time!r}; expected one of {list(TIME_CONVENTIONS)}")
        if velocity_kind not in ("flow", "control"):
            raise ValueError(f"velocity_kind={velocity_kind!r}; expected 'flow' or 'control'")
        if velocity_kind == "control" and time == "noising":
            raise ValueError("a control velocity (DESIGN §2) is a generative-time field; use time='generative'")
        if time == "noising" and T is None and file is None:
            raise ValueError("time='noising' needs the horizon T (s = T − t)")
        for k, f in (("velocity", velocity), ("score", score), ("log_density", log_density),
                     ("potential", potential), ("sample", sample), ("divergence", divergence)):
            if f is not None and not callable(f):
                raise TypeError(f"{k} must be callable (got {type(f).__name__})")
        if file is None and all(f is None for f in (velocity, score, log_density, potential, sample)):
            raise ValueError(f"a Model needs at least one of {list(_KINDS)}")
        if not (eps >= 0):
            raise ValueError(f"eps={eps}; expected ≥ 0")
        self.velocity, self.score = _checked("velocity", velocity, True), _checked("score", score, True)
        self.log_density = _checked("log_density", log_density, False)
        self.potential, self.sample = _checked("potential", potential, False), sample
        self.time, self.T, self.velocity_kind = time, (float(T) if T is not None else None), velocity_kind
        self.divergence, self.paired, self.eps, self.fd_step = _checked("divergence", divergence, False), bool(paired), float(eps), float(fd_step)
        self.name, self.source, self.file = name, source, file
        self.exact_divergence = bool(divergence is not None) if exact_divergence is None else bool(exact_divergence)
        # a potential's gradient (M, d) and Laplacian (M,), exact when given (from_torch), else differences
        self.potential_grad, self.potential_laplacian = potential_grad, potential_laplacian
        self.meta: dict = {}

    def given(self) -> list:
        """The names of what the model gives (callables and file arrays)."""
        out = [k for k in _KINDS if getattr(self, k) is not None]
        if self.file is not None:
            out += [f"file:{k}" for k in self.file.fields()] + (["file:samples"] if self.file.samples is not None else [])
        return out

    # -- conventions ---------------------------------------------------------

    def own_time(self, t: float, T: float) -> float:
        """The callables' time for the generative time ``t``."""
        if self.time == "generative":
            return float(t)
        return max(float(T - t), self.eps)

    def generative(self, f: Callable | None, T: float, negate: bool = False) -> Callable | None:
        """``f`` as a function of the generative time (negated for a noising-time velocity)."""
        if f is None:
            return None
        sign = -1.0 if (negate and self.time == "noising") else 1.0

        def g(x, t):
            return sign * np.asarray(f(np.asarray(x, dtype=float), self.own_time(t, T)), dtype=float)
        return g

    def div_of(self, f: Callable, T: float, negate: bool = False) -> tuple[Callable, str]:
        """(∇·f in generative time, how it is computed)."""
        if self.divergence is not None:
            how = "exact (given)" if not self.exact_divergence else "exact"
            if getattr(self.divergence, "how", None):
                how = self.divergence.how
            return self.generative(self.divergence, T, negate), how
        return _fd_div(self.generative(f, T, negate), self.fd_step), (
            f"second-order central differences of the callable, step {self.fd_step:g}")

    # -- constructors --------------------------------------------------------

    @classmethod
    def from_file(cls, path_or_file) -> "Model":
        """A model from a model file (:class:`ModelFile` or a path)."""
        mf = path_or_file if isinstance(path_or_file, ModelFile) else ModelFile.load(path_or_file)
        m = cls(time=mf.time, T=mf.meta.get("T"), velocity_kind=mf.meta.get("velocity", "flow"),
                paired=bool(mf.meta.get("paired", False)), name=mf.meta.get("name"), source=mf.meta.get("source"),
                file=mf, eps=float(mf.meta.get("eps", 0.0)))
        m.meta = dict(mf.meta)
        return m

    @classmethod
    def from_torch(cls, module, kind: str = "velocity", **kw) -> "Model":
        """Wrap a torch module ``module(x (N, d), t (N,)) -> (N, d)`` (or (N,) for a potential).

        The divergence (and for a potential the gradient and Laplacian) are
        exact, by the forward Jacobian (``torch.func.jacfwd`` under ``vmap``),
        batched, on the module's device and dtype. ``kind``: "velocity",
        "score" or "potential"; other keywords as for :class:`Model`.
        """
        from .torch_adapter import torch_model

        return torch_model(cls, module, kind, **kw)
