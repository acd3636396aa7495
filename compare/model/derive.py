"""From what a model gives to what the metrics need, on the truth's grid, with how each came about.

:func:`derive` turns a :class:`compare.Model` (callables and/or a model
file) into the model's :class:`~pde.solution.MFGSolution` on the truth's
nodes and time levels, its samples and trajectories, and two dicts:
``derivation`` (quantity → how it was obtained) and ``not_derived``
(quantity → why not). In generative time t (DESIGN §2), with b the
problem's drift and ν its diffusion:

- flow velocity ``u`` (dx/dt of the model's ODE): given; or from a control
  v as ``u = b + v − ν s`` (ν > 0 needs a score s); or from a score as the
  probability-flow velocity ``u = b + ν s`` (the reverse of the noising
  flow ``dy/ds = −b − ν s``); or from a potential as ``u = b − ∇φ/λ`` (ν = 0);
- density ``ρ``: given (a file array or ``log_density``); else by backward
  characteristics of ``u`` from the exact ``ρ₀`` (RK4, see
  :mod:`compare.model.characteristics`); else not derived (a reverse-SDE
  sampler given only by samples: only the sample metrics apply);
- control ``v`` (pde convention, for the kinetic energy and the Helmholtz
  split): given; or ``u − b + ν s`` (s the model's score, or ∇log ρ of its
  density by central differences);
- potential ``φ``: given; for the sgm family also ``−log ρ_model`` (the
  identity φ = −log η + const of DESIGN §3);
- samples: given (a file or ``sample``); else paths of ``u`` by RK4 from
  samples of ``ρ₀`` (paired, so the path metrics apply).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pde.problem import MFGProblem
from pde.solution import MFGSolution

from .adapters import Model, _fd_div
from .characteristics import GridField, fd_divergence, flow_paths, log_density_by_characteristics

__all__ = ["derive", "Derived"]


@dataclass
class Derived:
    """The model on the truth's grid, its samples/paths, and how each quantity was obtained."""

    solution: MFGSolution
    samples: dict | None
    paths: tuple | None
    derivation: dict = field(default_factory=dict)
    not_derived: dict = field(default_factory=dict)


def _same_axes(a, b) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape and np.allclose(x, y, rtol=0, atol=1e-9 * max(1.0, np.abs(y).max()))
                                    for x, y in zip(a, b))


def _file_fields(model: Model, truth: MFGSolution, T: float) -> tuple[dict, dict, np.ndarray | None]:
    """Generative-time callables of the file's grid fields, arrays on the truth's grid, and the file's times."""
    mf = model.file
    if mf is None:
        return {}, {}, None
    t_gen = T - mf.t if mf.time == "noising" else mf.t.copy()
    tol = 1e-9 * max(1.0, T)
    if t_gen.min() < -tol or t_gen.max() > T + tol:
        raise ValueError(f"the model's times span [{t_gen.min():.6g}, {t_gen.max():.6g}] in generative time "
                         f"({mf.time} convention in the file); expected times within [0, T = {T:.6g}]")
    t_gen = np.clip(t_gen, 0.0, T)
    order = np.argsort(t_gen)
    t_gen = t_gen[order]
    d = truth.dim
    if mf.dim is not None and mf.dim != d:
        raise ValueError(f"the model is {mf.dim}-D but the truth is {d}-D; expected the same dimension")
    calls, arrays = {}, {}
    if mf.axes is not None:
        for j, (a, b) in enumerate(zip(mf.axes, truth.axes)):
            tol_x = 1e-9 * max(1.0, np.abs(b).max())
            if a[0] > b[0] + tol_x or a[-1] < b[-1] - tol_x:
                raise ValueError(f"the model's grid {'xy'[j]} ∈ [{a[0]:.6g}, {a[-1]:.6g}] does not cover the truth's "
                                 f"nodes [{b[0]:.6g}, {b[-1]:.6g}]; expected a grid over the whole box (nothing is "
                                 "extrapolated)")
        same = _same_axes(mf.axes, truth.axes) and t_gen.size == truth.t.size and np.allclose(t_gen, truth.t, atol=tol)
        sign = -1.0 if mf.time == "noising" else 1.0
        pts = truth.grid().points().reshape(-1, d)
        for name in mf.fields():
            vals = np.asarray(getattr(mf, name), dtype=float)[order]
            if name == "velocity":
                vals = sign * vals
            calls[name] = GridField(t_gen, mf.axes, vals)
            if name == "velocity":
                calls["velocity_div"] = GridField(t_gen, mf.axes, fd_divergence(vals, mf.axes))
            if name == "score":
                calls["score_div"] = GridField(t_gen, mf.axes, fd_divergence(vals, mf.axes))
            if same:
                arrays[name] = vals
            else:
                shape = (truth.t.size,) + truth.rho.shape[1:] + (vals.shape[-1:] if name in ("score", "velocity") else ())
                arrays[name] = np.stack([calls[name](pts, t) for t in truth.t]).reshape(shape)
        arrays["_same_grid"] = same
    return calls, arrays, t_gen


def derive(model: Model, truth: MFGSolution, problem: MFGProblem, times, *, steps: int = 32,
           n_samples: int = 2000, seed: int = 0) -> Derived:
    """The model on the truth's grid (see the module docstring).

    Args:
        model: the :class:`Model`.
        truth: the ground truth (its nodes and time levels are used).
        problem: the MFG (b, ν, λ, ρ₀, T).
        times: the measured times (samples are drawn there).
        steps: RK4 steps over [0, T] for characteristics and paths.
        n_samples: particles for the paths when the model gives no samples.
        seed: seeds those particles and a ``sample`` callable's generator.
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be a compare.Model (got {type(model).__name__})")
    T = float(problem.T)
    if model.T is not None and abs(model.T - T) > 1e-9 * max(1.0, T):
        raise ValueError(f"the model's horizon T = {model.T:.6g} differs from the problem's T = {T:.6g}")
    d = truth.dim
    nu, lam = float(problem.nu), float(problem.lam)
    pts = truth.grid().points().reshape(-1, d)
    shape = truth.rho.shape
    L = truth.t.size
    how, why = {}, {}
    calls, arrays, t_file = _file_fields(model, truth, T)
    vk = model.velocity_kind
    file_name = f"the model file's {{}} ({model.file.meta.get('time', 'generative')} time)" if model.file else None

    # -- generative-time callables of the given fields ------------------------
    vel = model.generative(model.velocity, T, negate=(vk == "flow"))
    vel_div, vel_div_how = (model.div_of(model.velocity, T, negate=(vk == "flow")) if model.velocity is not None
                            else (None, None))
    if vel is None and "velocity" in calls:
        vel, vel_div = calls["velocity"], calls["velocity_div"]
        vel_div_how = "second-order central differences on the model's grid, multilinear interpolation in (t, x)"
    score = model.generative(model.score, T)
    score_div, score_div_how = (None, None)
    if score is not None:
        score_div, score_div_how = (model.div_of(model.score, T) if model.velocity is None else
                                    (_fd_div(score, model.fd_step), f"central differences, step {model.fd_step:g}"))
    elif "score" in calls:
        score, score_div = calls["score"], calls["score_div"]
        score_div_how = "second-order central differences on the model's grid, multilinear interpolation in (t, x)"
    b = problem.b

    def div_b(x, t):
        return _fd_div(lambda y, s: problem.b(y), 1e-4)(x, t)

    # -- the flow velocity u and its divergence -------------------------------
    u = du = None
    u_how = None
    if vel is not None and vk == "flow":
        u, du, u_how = vel, vel_div, f"the model's velocity; divergence {vel_div_how}"
    elif vel is not None and vk == "control":
        if nu == 0.0:
            u = lambda x, t: b(x) + vel(x, t)  # noqa: E731
            du = lambda x, t: div_b(x, t) + vel_div(x, t)  # noqa: E731
            u_how = f"b + v (ν = 0) from the model's control v; divergence {vel_div_how}"
        elif score is not None:
            u = lambda x, t: b(x) + vel(x, t) - nu * score(x, t)  # noqa: E731
            du = lambda x, t: div_b(x, t) + vel_div(x, t) - nu * score_div(x, t)  # noqa: E731
            u_how = "b + v − ν s from the model's control and score"
        else:
            why["flow_velocity"] = "a control with ν > 0 gives the flow velocity only with a score (u = b + v − ν s)"
    elif score is not None:
        u = lambda x, t: b(x) + nu * score(x, t)  # noqa: E731
        du = lambda x, t: div_b(x, t) + nu * score_div(x, t)  # noqa: E731
        u_how = f"probability-flow velocity b + ν·s of the model's score; divergence {score_div_how}"
    elif model.potential is not None:
        if model.potential_grad is not None:
            gphi = model.generative(model.potential_grad, T)
        else:
            pot = model.generative(model.potential, T)
            gphi = lambda x, t: _grad_fd(pot, x, t, model.fd_step)  # noqa: E731
        lap = model.generative(model.potential_laplacian, T) if model.potential_laplacian else None
        lap_how = "exact" if lap is not None else f"central differences, step {model.fd_step:g}"
        if lap is None:
            lap = lambda x, t: _fd_div(gphi, model.fd_step)(x, t)  # noqa: E731
        if nu == 0.0:
            u = lambda x, t: b(x) - gphi(x, t) / lam  # noqa: E731
            du = lambda x, t: div_b(x, t) - lap(x, t) / lam  # noqa: E731
            u_how = f"b − ∇φ/λ (ν = 0) from the model's potential; Laplacian {lap_how}"
        else:
            why["flow_velocity"] = "a potential with ν > 0 gives the flow velocity only with a score"
    elif model.file is None or "velocity" not in calls:
        why["flow_velocity"] = "the model gives no velocity, score or potential"
    if u_how:
        how["flow_velocity"] = u_how

    # -- density ------------------------------------------------------------
    rho = np.full(shape, np.nan)
    if "rho" in arrays:
        rho = arrays["rho"]
        how["rho"] = file_name.format("rho") + ("" if arrays["_same_grid"] else
                                                ", multilinear interpolation onto the truth's nodes and levels")
    elif model.log_density is not None:
        ld = model.generative(model.log_density, T)
        rho = np.stack([np.exp(ld(pts, t)) for t in truth.t]).reshape(shape)
        how["rho"] = "exp of the model's log_density at the truth's nodes"
    elif u is not None:
        logr = log_density_by_characteristics(u, du, lambda x: np.asarray(problem.rho0.logpdf(x), float), pts,
                                              truth.t, T, steps)
        with np.errstate(over="ignore"):
            rho = np.exp(logr).reshape(shape)
        how["rho"] = (f"backward characteristics of the flow velocity to t = 0, ρ_t(x) = ρ₀(X₀)·exp(−∫∇·u dt), "
                      + f"RK4 with at least {steps} steps over [0, T] (on the truth's time levels), from the exact ρ₀"
                      + ("; grid fields outside their nodes take the nearest node's value" if model.file else ""))
    else:
        why["rho"] = ("no density, log-density or velocity: only sample metrics apply (for a reverse-SDE sampler "
                      "give its samples)")

    # -- potential ----------------------------------------------------------
    phi = np.full(shape, np.nan)
    if "phi" in arrays:
        phi = arrays["phi"]
        how["phi"] = file_name.format("phi")
    elif model.potential is not None:
        pf = model.generative(model.potential, T)
        phi = np.stack([pf(pts, t) for t in truth.t]).reshape(shape)
        how["phi"] = "the model's potential at the truth's nodes"
    elif problem.family == "sgm" and np.all(np.isfinite(rho)) and np.all(rho > 0):
        phi = -np.log(rho)
        how["phi"] = "−log ρ_model (the sgm identity φ = −log η + const)"
    else:
        why["phi"] = "the model gives no potential"

    # -- score and control on the grid -----------------------------------------
    extras = {}
    if "score" in arrays:
        extras["score"] = arrays["score"]
        how["score"] = file_name.format("score")
    elif model.score is not None:
        extras["score"] = np.stack([score(pts, t) for t in truth.t]).reshape(shape + (d,))
        how["score"] = "the model's score at the truth's nodes"
    if vk == "control" and "velocity" in arrays:
        extras["velocity"] = arrays["velocity"]
        how["control"] = file_name.format("velocity") + " (a control, DESIGN §2)"
    elif vk == "control" and vel is not None:
        extras["velocity"] = np.stack([vel(pts, t) for t in truth.t]).reshape(shape + (d,))
        how["control"] = "the model's control at the truth's nodes"
    elif u is not None and model.potential is None:
        U = np.stack([u(pts, t) - b(pts) for t in truth.t]).reshape(shape + (d,))
        if nu > 0:
            if "score" in extras:
                U = U + nu * extras["score"]
                how["control"] = "v = u − b + ν s (the model's score)"
            elif np.all(np.isfinite(rho)) and np.all(rho > 0):
                from ..metrics import gradient

                U = U + nu * gradient(np.log(rho), truth.axes, problem.boundary)
                how["control"] = "v = u − b + ν∇log ρ_model (central differences)"
            else:
                U = None
                why["control"] = "ν > 0 and the model has neither a score nor a positive density"
        else:
            how["control"] = "v = u − b (ν = 0)"
        if U is not None:
            extras["velocity"] = U

    # -- samples and paths ----------------------------------------------------
    samples = paths = None
    rng = np.random.default_rng(seed)
    times = np.asarray(times, dtype=float)
    mf = model.file
    if mf is not None and mf.samples is not None:
        S = mf.samples[np.argsort(T - mf.t if mf.time == "noising" else mf.t)]
        samples = {float(t): S[k] for k, t in enumerate(t_file)}
        how["samples"] = f"the model file's samples ({S.shape[1]} at {S.shape[0]} times)"
        if mf.meta.get("paired") and S.shape[0] >= 2:
            paths = (t_file, S)
            how["paths"] = "the model file's samples (paired: trajectories)"
    elif model.sample is not None:
        st = truth.t if model.paired else times
        S = np.asarray(model.sample(int(n_samples), np.array([model.own_time(s, T) for s in st]), rng), dtype=float)
        if S.ndim == 2:
            S = S[..., None]
        if S.shape[0] != len(st) or S.shape[-1] != d:
            raise ValueError(f"the model's sample() returned shape {S.shape}; expected ({len(st)}, {n_samples}, {d})")
        samples = {float(t): S[k] for k, t in enumerate(st)}
        how["samples"] = "the model's sample()"
        if model.paired:
            paths = (np.asarray(st, float), S)
            how["paths"] = "the model's sample() (paired: trajectories)"
    elif u is not None:
        x0 = problem.rho0.sample(int(n_samples), rng)
        P = flow_paths(u, x0, truth.t, T, steps)
        samples = {float(t): P[k] for k, t in enumerate(truth.t)}
        paths = (truth.t.copy(), P)
        how["samples"] = how["paths"] = (f"RK4 paths of the flow velocity ({steps} steps over [0, T]) from "
                                         f"{int(n_samples)} samples of the exact ρ₀ (seed {seed})")
    else:
        why["samples"] = "the model gives no samples and no velocity to move samples of ρ₀"

    meta = {"method": f"model:{model.name or 'user'}", "model": model.name, "source": model.source,
            "given": model.given(), "derivation": how, "not_derived": why, "time_convention": model.time,
            "file_meta": model.meta or None}
    sol = MFGSolution(truth.t, truth.axes, rho, phi, meta=meta, extras=extras, status="model")
    return Derived(sol, samples, paths, how, why)


def _grad_fd(f, x, t, h):
    x = np.asarray(x, dtype=float)
    out = np.empty_like(x)
    for j in range(x.shape[1]):
        e = np.zeros(x.shape[1])
        e[j] = h
        out[:, j] = (np.asarray(f(x + e, t)) - np.asarray(f(x - e, t))) / (2 * h)
    return out
