"""Sinkhorn scaling with the heat kernel of a box: entropic OT, balanced or semi-unbalanced.

Problem (masses on the cell-centred grid, vol = h^d, K = P_T the heat kernel of
diffusion ν over time T, so K(x, y) ∝ exp(−|x − y|²/(2τε)), τ = T/λ, ε = 2νλ)::

    min_π  ε KL(π ‖ ρ₀ ⊗ K) + KL(π₂ ‖ γ)      subject to π₁ = ρ₀      (semi-unbalanced)
    min_π  ε KL(π ‖ ρ₀ ⊗ K)                   subject to π₁ = ρ₀, π₂ = ρ₁   (balanced)

with KL(π‖R) the generalised divergence (Σ π log(π/R) − π + R). Stationarity
in π gives π = a(x) K(x, y) b(y) and, for the KL penalty on the second
marginal, b = (γ/π₂)^{1/ε} exactly (the constants of the Lagrangian go into
a, which the first marginal fixes). With π₁ = a·(K b), π₂ = b·(Kᵀ a) the
scalings are the fixed point of

    a ← ρ₀ / (K b),     b ← (γ / (Kᵀ a))^{1/(1+ε)}     (balanced: b ← ρ₁ / (Kᵀ a))

(substitute π₂ = b Kᵀa into b = (γ/π₂)^{1/ε}). The fixed point fixes the
scale of b (a ↦ a/c, b ↦ cb is not a symmetry once the exponent is ≠ 1).
Along that scale direction the plain iteration contracts only by 1/(1+ε);
since at the fixed point π₂ = γ b^{−ε} and ∫π₂ = ∫ρ₀ = 1, every b-update
is followed by the exact rescaling b ← b·(∫γ b^{−ε})^{1/ε} (a translation-
invariant step: it enforces a property of the solution, so the fixed point
is unchanged), leaving only the kernel's own contraction.

Dual potentials (for the certificates): f = ε log(a/ρ₀) + 1, g = ε log b − 1
(balanced: f = ε log(a/ρ₀), g = ε log b), with dual objective

    D = ∫ f ρ₀ − ∫ γ e^{−g−1} − ε(∫∫π − ∫∫ρ₀K)        (balanced: ∫ f ρ₀ + ∫ g ρ₁ − ε(…))

and D ≤ primal, with equality at the optimum; the gap is reported.

Engines: ``scaling`` keeps a, b as arrays and applies K with dense 1D
matrices (or a DCT, ``kernel="dct"``); ``log`` keeps log a, log b and applies
K along each axis by absorption (BLAS on rescaled numbers) or, where that
cannot keep them in range, by a log-sum-exp (never over- or underflows). ``auto`` starts in the scaling domain and moves
to the log domain, from the last finite iterate, as soon as a scaling or
K-product leaves [1e-280, 1e280].
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from .heat import HeatKernel

__all__ = ["sinkhorn_neumann", "SinkhornResult", "SinkhornConvergenceError"]

_SAFE = 1e280


class SinkhornConvergenceError(RuntimeError):
    """Sinkhorn did not reach the tolerance; ``history`` holds the marginal errors."""

    def __init__(self, msg, history):
        super().__init__(msg)
        self.history = history


@dataclass
class SinkhornResult:
    """Converged scalings (as logs) and certificates.

    Attributes:
        log_a, log_b: (*shape) log of the scalings (π = a K b).
        kernel: the :class:`~pde.ot.heat.HeatKernel` K = P_T used.
        info: iterations, history, errors, objectives, engine, timings.
    """

    log_a: np.ndarray
    log_b: np.ndarray
    kernel: HeatKernel
    info: dict = field(default_factory=dict)


def _in_range(*arrs) -> bool:
    for x in arrs:
        if not np.all(np.isfinite(x)):
            return False
        pos = x[x > 0]
        if pos.size and (pos.max() > _SAFE or pos.min() < 1.0 / _SAFE):
            return False
    return True


def _logs(x):
    with np.errstate(divide="ignore"):
        return np.log(x)


def sinkhorn_neumann(rho0, target, grid, T: float, nu: float, lam: float, balanced: bool = False, *,
                     tol: float = 1e-10, max_iter: int = 20000, kernel: str = "dense", domain: str = "auto",
                     translation_invariant: bool = True, log_b0=None, lse: str = "numba",
                     heat: HeatKernel | None = None, relax: float = 1.0, absorb: bool = True) -> SinkhornResult:
    """Entropic OT on a box with the heat kernel as Gibbs kernel (module docstring).

    Args:
        rho0: (*grid.shape) first marginal density (renormalised to discrete mass 1).
        target: (*grid.shape) γ (semi-unbalanced: the KL reference, used as given) or
            ρ₁ (balanced: renormalised to discrete mass 1).
        grid: the spatial :class:`~pde.grid.Grid` (its boundary is the kernel's).
        T, nu, lam: horizon, diffusion, kinetic weight; ε = 2νλ, kernel P_T of diffusion ν.
        balanced: fix both marginals (exponent 1) instead of the KL penalty.
        tol: stop when the second-marginal error ∫|π₂ − γ b^{−ε}| (balanced: ∫|π₂ − ρ₁|)
            after an a-update is ≤ tol (the first marginal is then exact).
        max_iter: iterations before :class:`SinkhornConvergenceError`.
        kernel: "dense" (1D matrices, BLAS) or "dct" (scaling domain only).
        domain: "auto", "scaling" or "log".
        translation_invariant: the exact rescaling of b after each update (unbalanced only).
        log_b0: optional warm start for log b.
        lse: "numba" or "numpy" log-sum-exp (log domain).
        heat: a prebuilt kernel P_T (must match grid, ν, T).
        relax: over-relaxation ω of the b-update (1: plain Sinkhorn).
        absorb: log domain by absorption first (see :class:`~pde.ot.heat.HeatKernel`).

    Returns:
        :class:`SinkhornResult`.

    Raises:
        SinkhornConvergenceError: max_iter reached (message with the error history and a suggestion).
        ValueError: bad arguments.
    """
    t0 = time.perf_counter()
    if kernel not in ("dense", "dct"):
        raise ValueError(f"kernel={kernel!r}; expected 'dense' or 'dct'")
    if domain not in ("auto", "scaling", "log"):
        raise ValueError(f"domain={domain!r}; expected 'auto', 'scaling' or 'log'")
    if not (nu > 0 and lam > 0 and T > 0):
        raise ValueError(f"nu={nu}, lam={lam}, T={T}; expected all > 0 for the entropic problem")
    shape = tuple(grid.shape)
    rho0 = np.asarray(rho0, dtype=float)
    target = np.asarray(target, dtype=float)
    for name, arr in (("rho0", rho0), ("target", target)):
        if arr.shape != shape:
            raise ValueError(f"{name} has shape {arr.shape}; expected the grid's {shape}")
        if not (np.all(np.isfinite(arr)) and arr.min() >= 0 and arr.sum() > 0):
            raise ValueError(f"{name} must be finite, >= 0 and not all zero (min {arr.min()!r}, sum {arr.sum()!r})")
    vol = grid.cell_volume
    m0 = vol * rho0.sum()
    rho0 = rho0 / m0
    renorm = None
    if balanced:
        m1 = vol * target.sum()
        target = target / m1
        renorm = {"rho0_mass": m0, "target_mass": m1}
    eps = 2.0 * nu * lam
    p = 1.0 if balanced else 1.0 / (1.0 + eps)
    K = heat if heat is not None else HeatKernel(grid, nu, T, lse=lse, min_cells=0.0, absorb=absorb)
    if kernel == "dct" and grid.boundary != "reflecting":
        raise ValueError("kernel='dct' needs reflecting walls")
    Kop = K.apply if kernel == "dense" else K.apply_dct
    lr0, lt = _logs(rho0), _logs(target)
    hist: list = []
    engine = "log" if domain == "log" else "scaling"
    switched_at = None
    G = np.zeros(shape) if log_b0 is None else np.array(log_b0, dtype=float)
    F = np.zeros(shape)
    lKb = lKa = None
    it = 0
    converged = False
    b = np.exp(G) if engine == "scaling" else None
    if engine == "scaling" and not _in_range(b):
        engine = "log" if domain == "auto" else engine
    while it < max_iter:
        it += 1
        if engine == "scaling":
            with np.errstate(all="ignore"):
                Kb = Kop(b)
                a = np.where(rho0 > 0, rho0 / Kb, 0.0)
                Ka = Kop(a)
                ok = _in_range(Kb, a, Ka) and np.all(Kb[rho0 > 0] > 0) and np.all(Ka[target > 0] > 0)
            if not ok:
                if domain == "scaling":
                    raise FloatingPointError(
                        f"the scaling-domain Sinkhorn left the floating-point range at iteration {it} "
                        f"(ε = {eps:.3g}); use domain='log' or 'auto'")
                engine, switched_at = "log", it  # G holds the last finite log b
                it -= 1
                continue
            pi2 = b * Ka
            tgt = target if balanced else target * b ** (-eps)
            err = float(vol * np.abs(pi2 - tgt).sum())
            hist.append(err)
            if err <= tol:
                converged = True
                F, lKb, lKa = _logs(a), _logs(Kb), _logs(Ka)
                break
            with np.errstate(all="ignore"):
                bn = (target / Ka) ** p
                if relax != 1.0:
                    bn = b ** (1.0 - relax) * bn ** relax
                if not balanced and translation_invariant:
                    bn = bn * (vol * (target * bn ** (-eps)).sum()) ** (1.0 / eps)
            if not _in_range(bn) or (np.any(bn[target > 0] <= 0)):
                if domain == "scaling":
                    raise FloatingPointError(f"the scaling-domain Sinkhorn left the floating-point range at "
                                             f"iteration {it} (ε = {eps:.3g}); use domain='log' or 'auto'")
                engine, switched_at = "log", it
                G = p * (lt - _logs(Ka))
                continue
            b = bn
            G = _logs(b)
        else:
            lKb = K.log_apply(G)
            F = np.where(rho0 > 0, lr0 - lKb, -np.inf)
            lKa = K.log_apply(F)
            lpi2 = G + lKa
            ltgt = lt if balanced else lt - eps * G
            with np.errstate(invalid="ignore"):
                err = float(vol * np.abs(np.exp(lpi2) - np.exp(ltgt)).sum())
            hist.append(err)
            if err <= tol:
                converged = True
                break
            G = (1.0 - relax) * G + relax * (p * (lt - lKa)) if relax != 1.0 else p * (lt - lKa)
            if not balanced and translation_invariant:
                z = lt - eps * G
                G = G + (math.log(vol) + _lse_all(z)) / eps
        if not np.isfinite(err):
            break
    if not converged:
        tail = ", ".join(f"{e:.3g}" for e in hist[-5:])
        raise SinkhornConvergenceError(
            f"Sinkhorn (ε = 2νλ = {eps:.4g}, {'balanced' if balanced else 'semi-unbalanced'}, {engine} domain) "
            f"did not reach tol={tol:g} in {it} iterations: second-marginal error {hist[-1] if hist else float('nan'):.3g} "
            f"(last: {tail}). Raise max_iter, loosen tol, or use a larger ν (iterations grow as ε and the "
            f"kernel width shrink); a finer grid does not help.", hist)
    wall = time.perf_counter() - t0
    info = _certificates(F, G, lKb, lKa, lr0, lt, rho0, target, K, vol, eps, balanced)
    info.update({
        "iterations": it, "history": hist, "engine": engine, "switched_to_log_at": switched_at,
        "kernel": kernel, "tol": tol, "epsilon": eps, "exponent": p, "balanced": balanced,
        "translation_invariant": bool(translation_invariant and not balanced), "wall_s": wall,
        "kernel_kinds": list(K.kinds), "kernel_cells_per_width": K.cells_per_width(), "renormalised": renorm,
    })
    return SinkhornResult(F, G, K, info)


def _lse_all(z):
    z = np.asarray(z).ravel()
    m = np.max(z)
    if not np.isfinite(m):
        return m
    return float(m + np.log(np.exp(z - m).sum()))


def _certificates(F, G, lKb, lKa, lr0, lt, rho0, target, K, vol, eps, balanced):
    """Marginal errors, primal and dual objectives and their gap (state right after an a-update)."""
    with np.errstate(all="ignore"):
        pi1 = np.exp(F + lKb)
        pi2 = np.exp(G + lKa)
        mass_pi = vol * pi1.sum()
        mass_R = vol * float((rho0 * np.exp(K.log_apply(np.zeros_like(G)))).sum())
        log_a_over_r0 = np.where(rho0 > 0, F - lr0, 0.0)
        klpi = float(vol * ((pi1 * log_a_over_r0).sum() + (np.where(pi2 > 0, pi2 * G, 0.0)).sum())) - mass_pi + mass_R
        f = eps * log_a_over_r0
        if balanced:
            primal = eps * klpi
            dual = float(vol * ((f * rho0).sum() + (eps * np.where(target > 0, G, 0.0) * target).sum())) \
                - eps * (mass_pi - mass_R)
            m2 = float(vol * np.abs(pi2 - target).sum())
            opt = m2
        else:
            kl2 = float(vol * np.where(pi2 > 0, pi2 * (np.log(pi2) - lt), 0.0).sum())
            primal = eps * klpi + kl2
            dual = float(vol * ((f + 1.0) * rho0).sum()) - float(vol * np.exp(lt - eps * G).sum()) \
                - eps * (mass_pi - mass_R)
            m2 = float(vol * np.abs(pi2 - np.exp(lt - eps * G)).sum())
            # first-order optimality of the step: log(π₂/γ) + ε log b = 0 where π₂ carries mass
            sup = pi2 > 1e-8 * pi2.max()
            opt = float(np.max(np.abs(np.log(pi2[sup]) - lt[sup] + eps * G[sup])))
    out = {
        "marginal_error_1": float(vol * np.abs(pi1 - rho0).sum()),
        "marginal_error_2": m2,
        "optimality_residual": opt,
        "primal": primal,
        "dual": dual,
        "gap": primal - dual,
        "coupling_mass": mass_pi,
        "kinetic": eps * klpi,
    }
    if not balanced:
        out["terminal_kl"] = primal - eps * klpi
    return out
