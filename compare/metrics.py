"""Metrics between a ground-truth solution and a model on the same grid.

Both solutions are :class:`pde.solution.MFGSolution` objects on one
cell-centred grid (nodes ``x_i = lo + (i + ½)h``, integral ``h^d Σ_i``).
Densities below are the grid arrays ``p = ρ_truth(·, t)``, ``q = ρ_model(·, t)``
at one time level; ``w`` is a weight proportional to ``p``.

Definitions (see docs/compare.md for the full list, the floors and the
JSON schema that :func:`evaluate` returns):

- L1 ``‖q - p‖₁ = h^d Σ|q_i - p_i|`` (raw arrays); total variation ``½ L1``.
- Hellinger ``H = sqrt(½ h^d Σ (√p̂ - √q̂)²) ∈ [0, 1]`` of the unit-mass
  normalisations ``p̂ = p/∫p``, ``q̂ = q/∫q``.
- KL ``KL_ε(p̂‖q̂) = h^d Σ_{p̂_i > ε} p̂_i log(p̂_i / max(q̂_i, ε))`` with the
  floor ``ε = kl_floor · max p̂`` (default ``kl_floor = 1e-10``) so a model
  that puts no mass where the truth has some gives a large finite number
  (cells where p̂ < ε are dropped; they could add at most ε|Ω|/e); both
  directions are reported.
- W2: in 1D exact between the piecewise-constant (histogram) densities via
  their piecewise-linear quantile functions, ``W₂² = ∫₀¹ |Q_p(u) - Q_q(u)|² du``;
  in 2D ``ot.emd2`` between the gridded densities as atoms on the nodes
  (coarsened by block sums when there are more than ``w2_max_nodes`` nodes,
  with the coarsening's W2 bound reported); from samples (when a model
  gives samples) ``ot.emd2`` between the empirical measures, reported with
  the sample-noise floor = W2 between two independent truth sample sets
  of the same size.
- potential error modulo a constant on ``R_t = {p > floor·max p}``:
  ``e₂ = min_c ‖φ_m - φ_t - c‖_{L²(w)} = weighted std of φ_m - φ_t`` and
  ``e_∞ = max_{R_t} |φ_m - φ_t - c*|`` with ``c*`` the weighted mean.
- score error ``‖s_m - s_t‖_{L²(w)}`` on ``R_t`` (and relative to ``‖s_t‖_{L²(w)}``).
- kinetic energy ``K(t) = ∫ |∇φ|² ρ /(2λ) dx`` (= ``∫ (λ/2)|v|² ρ`` with
  ``v = -∇φ/λ``), its time integral, and (ν = 0, b = 0) the Benamou–Brenier
  lower bound ``λ W₂²(ρ₀, ρ_T)/(2T)``, attained by the optimal flow.
- HJB residual ``R = -∂tφ - νΔφ - b·∇φ + |∇φ|²/(2λ) - f(x, ρ_t) - c``
  with second-order central differences in x and t, on interior nodes of
  ``R_t``: its ``w``-weighted L1 and its max.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from pde.problem import LocalCoupling, LQCoupling, MFGProblem, NoCoupling
from pde.solution import MFGSolution

__all__ = [
    "SCHEMA",
    "select_times",
    "l1_distance",
    "hellinger",
    "kl_divergence",
    "w2_1d",
    "w2_grid",
    "w2_samples",
    "sample_density",
    "potential_error",
    "score_error",
    "gradient",
    "kinetic_energy",
    "hjb_residual",
    "evaluate",
    "DEFAULT_FLOOR",
    "DEFAULT_KL_FLOOR",
]

SCHEMA = "mfglab.metrics/1"
#: region where potentials, scores and residuals are compared: ρ_truth > floor · max ρ_truth
DEFAULT_FLOOR = 1e-3
#: KL floor relative to the largest density value
DEFAULT_KL_FLOOR = 1e-10


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _vol(axes: Sequence[np.ndarray]) -> float:
    return float(np.prod([a[1] - a[0] for a in axes]))


def _unit(p: np.ndarray, vol: float, label: str) -> np.ndarray:
    """Clip negatives (round-off of a solver) and normalise to unit mass."""
    p = np.clip(np.asarray(p, dtype=float), 0.0, None)
    m = p.sum() * vol
    if not (m > 0 and np.isfinite(m)):
        raise ValueError(f"{label} has total mass {m}; expected a positive finite number")
    return p / m


def select_times(t: np.ndarray, times=None, n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Time levels at which to measure.

    Args:
        t: (nt+1,) time levels of the truth.
        times: requested times, or None for ``n`` evenly spread in [0, T]
            (0 and T included), each snapped to the nearest level.
        n: number of default times.

    Returns:
        (indices, times) of the chosen levels, without duplicates.
    """
    t = np.asarray(t, dtype=float)
    if times is None:
        times = np.linspace(t[0], t[-1], max(int(n), 2))
    times = np.atleast_1d(np.asarray(times, dtype=float))
    dt = float(np.min(np.diff(t))) if t.size > 1 else 1.0
    idx = []
    for s in times:
        k = int(np.argmin(np.abs(t - s)))
        if abs(t[k] - s) > 0.5 * dt + 1e-12 * max(1.0, abs(t[-1])):
            raise ValueError(f"time {s} is outside the solution's time range [{t[0]}, {t[-1]}]")
        if k not in idx:
            idx.append(k)
    idx = np.asarray(sorted(idx))
    return idx, t[idx]


def _mesh_points(axes) -> np.ndarray:
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


# --------------------------------------------------------------------------
# divergences between gridded densities
# --------------------------------------------------------------------------


def l1_distance(p: np.ndarray, q: np.ndarray, cell_volume: float) -> float:
    """‖q - p‖₁ = h^d Σ|q_i - p_i| (no normalisation; TV = L1/2)."""
    return float(np.abs(np.asarray(q, float) - np.asarray(p, float)).sum() * cell_volume)


def hellinger(p: np.ndarray, q: np.ndarray, cell_volume: float) -> float:
    """H(p̂, q̂) = sqrt(½ h^d Σ (√p̂ - √q̂)²) of the unit-mass normalisations, in [0, 1]."""
    p, q = _unit(p, cell_volume, "p"), _unit(q, cell_volume, "q")
    h2 = 0.5 * ((np.sqrt(p) - np.sqrt(q)) ** 2).sum() * cell_volume
    return float(math.sqrt(max(h2, 0.0)))


def kl_divergence(p: np.ndarray, q: np.ndarray, cell_volume: float, floor: float = DEFAULT_KL_FLOOR) -> float:
    """KL_ε(p̂‖q̂) = h^d Σ_{p̂>ε} p̂ log(p̂ / max(q̂, ε)), ε = floor · max p̂.

    p̂, q̂ are the unit-mass normalisations (negatives clipped to 0); the
    floor keeps the value finite where the second argument vanishes.
    """
    p, q = _unit(p, cell_volume, "p"), _unit(q, cell_volume, "q")
    eps = floor * p.max()
    # cells where p̂ itself is below the floor are dropped: together they add at most ε|Ω|/e
    m = p > eps
    return float((p[m] * (np.log(p[m]) - np.log(np.maximum(q[m], eps)))).sum() * cell_volume)


# --------------------------------------------------------------------------
# Wasserstein-2
# --------------------------------------------------------------------------


def w2_1d(p: np.ndarray, q: np.ndarray, x: np.ndarray, kind: str = "histogram") -> float:
    """W₂ between two gridded 1D densities on the cell-centred nodes ``x``.

    ``kind="histogram"``: each density is constant on its cells
    ``[x_i - h/2, x_i + h/2]``; the CDFs are piecewise linear and so are the
    quantile functions. On each interval between the merged CDF knots both
    quantiles are affine, so the two-point Gauss–Legendre rule integrates
    ``|Q_p - Q_q|²`` exactly: the result is exact for the histograms.

    ``kind="atoms"``: point masses ``p_i h`` at the nodes (step quantiles;
    this equals the discrete OT value ``ot.emd2`` on the same atoms).

    Returns W₂ (not squared). Both densities are normalised to unit mass.
    """
    x = np.asarray(x, dtype=float)
    h = float(x[1] - x[0])
    a = _unit(p, h, "p") * h
    b = _unit(q, h, "q") * h
    # cell masses below 1e-290 (subnormal tails of a flow's density) would make CDF steps whose
    # inverse slopes overflow in np.interp; they move W2 by less than 1e-290·box², so drop them
    a[a < 1e-290] = 0.0
    b[b < 1e-290] = 0.0
    Fa = np.concatenate([[0.0], np.cumsum(a)])
    Fb = np.concatenate([[0.0], np.cumsum(b)])
    Fa /= Fa[-1]
    Fb /= Fb[-1]
    knots = np.unique(np.concatenate([Fa, Fb]))
    du = np.diff(knots)
    keep = du > 0
    lo, du = knots[:-1][keep], du[keep]
    if kind == "histogram":
        edges = np.concatenate([[x[0] - h / 2], x + h / 2])
        g = 0.5 / math.sqrt(3.0)
        tot = 0.0
        for off in (0.5 - g, 0.5 + g):
            u = lo + off * du
            tot += 0.5 * (du * (np.interp(u, Fa, edges) - np.interp(u, Fb, edges)) ** 2).sum()
        return float(math.sqrt(max(tot, 0.0)))
    if kind == "atoms":
        u = lo + 0.5 * du
        ia = np.clip(np.searchsorted(Fa, u, side="left") - 1, 0, x.size - 1)
        ib = np.clip(np.searchsorted(Fb, u, side="left") - 1, 0, x.size - 1)
        return float(math.sqrt(max((du * (x[ia] - x[ib]) ** 2).sum(), 0.0)))
    raise ValueError(f"kind={kind!r}; expected 'histogram' or 'atoms'")


def _coarsen(p: np.ndarray, axes, k: int):
    """Block sums of the masses over k×k blocks (zero-padded); block centroids of the nodes."""
    shape = p.shape
    pad = [(0, (-s) % k) for s in shape]
    mass = np.pad(p, pad)
    new_axes = []
    for ax, (lo_pad, hi_pad) in zip(axes, pad):
        h = ax[1] - ax[0]
        full = np.concatenate([ax, ax[-1] + h * np.arange(1, hi_pad + 1)])
        new_axes.append(full.reshape(-1, k).mean(axis=1))
    if p.ndim == 2:
        mass = mass.reshape(mass.shape[0] // k, k, mass.shape[1] // k, k).sum(axis=(1, 3))
    else:
        mass = mass.reshape(-1, k).sum(axis=1)
    # A node padded in but carrying no mass does not move the centroid of real mass
    # much; we still report the worst-case displacement bound below.
    return mass, tuple(new_axes)


def w2_grid(p: np.ndarray, q: np.ndarray, axes, max_nodes: int = 2500, prune: float = 1e-12) -> tuple[float, dict]:
    """W₂ between gridded densities as discrete measures on the nodes (``ot.emd2``).

    Masses ``p_i h^d`` sit at the nodes. When the grid has more than
    ``max_nodes`` nodes, blocks of k^d nodes are merged (masses summed, atom
    at the block centre) with the smallest k that fits; merging moves each
    atom by at most ``sqrt(d)(k-1)h/2``, so the triangle inequality bounds
    the change of W₂ by ``sqrt(d)(k-1)h`` (reported as ``coarsening_bound``).
    Atoms with mass below ``prune`` (relative) are dropped and the rest
    renormalised; the dropped mass is reported.

    Returns:
        (W₂, info) with info keys ``nodes``, ``coarsen``, ``coarsening_bound``,
        ``dropped_mass``, ``method``.
    """
    import ot

    axes = tuple(np.asarray(a, dtype=float) for a in axes)
    vol = _vol(axes)
    a = _unit(p, vol, "p") * vol
    b = _unit(q, vol, "q") * vol
    d = len(axes)
    n_total = a.size
    k = 1
    while math.ceil(n_total / k**d) > max_nodes and any(len(ax) // k > 1 for ax in axes):
        k += 1
    if k > 1:
        a, ax_a = _coarsen(a, axes, k)
        b, _ = _coarsen(b, axes, k)
        axes_c = ax_a
    else:
        axes_c = axes
    pts = _mesh_points(axes_c).reshape(-1, d)
    a, b = a.reshape(-1), b.reshape(-1)
    ma, mb = a > prune, b > prune
    dropped = float(max(a[~ma].sum(), b[~mb].sum()))
    wa, wb = a[ma] / a[ma].sum(), b[mb] / b[mb].sum()
    M = ot.dist(pts[ma], pts[mb], metric="sqeuclidean")
    w2sq = float(ot.emd2(wa, wb, M, numItermax=10_000_000))
    h = max(float(ax[1] - ax[0]) for ax in axes)
    info = {
        "method": "ot.emd2 on grid atoms",
        "nodes": [int(ma.sum()), int(mb.sum())],
        "coarsen": k,
        "coarsening_bound": float(math.sqrt(d) * (k - 1) * h),
        "dropped_mass": dropped,
    }
    return float(math.sqrt(max(w2sq, 0.0))), info


def w2_samples(X: np.ndarray, Y: np.ndarray) -> float:
    """W₂ between the empirical measures of two sample sets (N, d), (M, d).

    1D: exact through sorting (equal sizes) — otherwise ``ot.emd2``.
    """
    X = np.asarray(X, dtype=float)
    Y = np.asarray(Y, dtype=float)
    if X.ndim == 1:
        X = X[:, None]
    if Y.ndim == 1:
        Y = Y[:, None]
    if X.shape[1] != Y.shape[1]:
        raise ValueError(f"sample sets have dimensions {X.shape[1]} and {Y.shape[1]}; expected equal")
    if X.shape[1] == 1 and X.shape[0] == Y.shape[0]:
        return float(math.sqrt(np.mean((np.sort(X[:, 0]) - np.sort(Y[:, 0])) ** 2)))
    import ot

    M = ot.dist(X, Y, metric="sqeuclidean")
    wa = np.full(X.shape[0], 1.0 / X.shape[0])
    wb = np.full(Y.shape[0], 1.0 / Y.shape[0])
    return float(math.sqrt(max(ot.emd2(wa, wb, M, numItermax=10_000_000), 0.0)))


def sample_density(p: np.ndarray, axes, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``n`` points from a gridded density read as a histogram (cells uniform).

    Returns an array (n, d).
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (got {type(rng).__name__})")
    axes = tuple(np.asarray(a, dtype=float) for a in axes)
    w = np.clip(np.asarray(p, float), 0.0, None).reshape(-1)
    w = w / w.sum()
    idx = rng.choice(w.size, size=int(n), p=w)
    sub = np.unravel_index(idx, np.shape(p))
    out = np.empty((int(n), len(axes)))
    for j, ax in enumerate(axes):
        h = ax[1] - ax[0]
        out[:, j] = ax[sub[j]] + (rng.random(int(n)) - 0.5) * h
    return out


# --------------------------------------------------------------------------
# derivatives on the grid
# --------------------------------------------------------------------------


def gradient(f: np.ndarray, axes, boundary: str = "reflecting") -> np.ndarray:
    """∇f on the trailing len(axes) axes of ``f`` (…, *shape) → (…, *shape, d).

    Central differences (second order); periodic grids wrap, reflecting
    grids use second-order one-sided differences at the two end nodes.
    """
    d = len(axes)
    out = []
    for j, ax in enumerate(axes):
        axis = f.ndim - d + j
        h = float(ax[1] - ax[0])
        if boundary == "periodic":
            out.append((np.roll(f, -1, axis=axis) - np.roll(f, 1, axis=axis)) / (2 * h))
        else:
            out.append(np.gradient(f, h, axis=axis, edge_order=2))
    return np.stack(out, axis=-1)


def _laplacian_interior(f: np.ndarray, axes, boundary: str) -> tuple[np.ndarray, np.ndarray]:
    """3-point Laplacian on the trailing axes; returns (Δf, interior mask of the grid shape)."""
    d = len(axes)
    lap = np.zeros_like(f)
    shape = f.shape[f.ndim - d:]
    interior = np.ones(shape, dtype=bool)
    for j, ax in enumerate(axes):
        axis = f.ndim - d + j
        h = float(ax[1] - ax[0])
        lap += (np.roll(f, -1, axis=axis) - 2 * f + np.roll(f, 1, axis=axis)) / (h * h)
        if boundary != "periodic":
            sl = [slice(None)] * d
            sl[j] = 0
            interior[tuple(sl)] = False
            sl[j] = -1
            interior[tuple(sl)] = False
    return lap, interior


def _grad_interior(f: np.ndarray, axes, boundary: str) -> np.ndarray:
    """Central differences everywhere (the wrap at the ends is masked out by the caller)."""
    d = len(axes)
    out = []
    for j, ax in enumerate(axes):
        axis = f.ndim - d + j
        h = float(ax[1] - ax[0])
        out.append((np.roll(f, -1, axis=axis) - np.roll(f, 1, axis=axis)) / (2 * h))
    return np.stack(out, axis=-1)


# --------------------------------------------------------------------------
# potentials, scores, energy, HJB residual
# --------------------------------------------------------------------------


def _region(p: np.ndarray, floor: float) -> np.ndarray:
    return p > floor * np.max(p)


def potential_error(phi_model: np.ndarray, phi_truth: np.ndarray, rho_truth: np.ndarray,
                    floor: float = DEFAULT_FLOOR) -> tuple[float, float]:
    """Potential error modulo a constant at one time.

    On R = {ρ > floor·max ρ}, with weights w = ρ/Σ_R ρ and δ = φ_m - φ_t:
    ``e₂ = sqrt(Σ w (δ - δ̄)²)`` (δ̄ = Σ wδ, the minimiser over constants of
    the w-weighted L2 error) and ``e_∞ = max_R |δ - δ̄|``.
    """
    m = _region(rho_truth, floor) & np.isfinite(phi_truth)
    w = rho_truth[m] / rho_truth[m].sum()
    with np.errstate(invalid="ignore"):  # inf - inf outside the region is not used
        dlt = (phi_model - phi_truth)[m]
    if not np.all(np.isfinite(dlt)):
        return math.nan, math.nan  # the model's potential is not finite where the truth has mass
    mean = float((w * dlt).sum())
    dev = dlt - mean
    return float(math.sqrt(max((w * dev * dev).sum(), 0.0))), float(np.abs(dev).max())


def score_error(s_model: np.ndarray, s_truth: np.ndarray, rho_truth: np.ndarray,
                floor: float = DEFAULT_FLOOR) -> tuple[float, float]:
    """‖s_m - s_t‖_{L²(w)} and the same divided by ‖s_t‖_{L²(w)}, w = ρ_t on R.

    s arrays have shape (*grid, d).
    """
    m = _region(rho_truth, floor)
    w = rho_truth[m] / rho_truth[m].sum()
    err = math.sqrt(max((w * ((s_model[m] - s_truth[m]) ** 2).sum(-1)).sum(), 0.0))
    ref = math.sqrt(max((w * (s_truth[m] ** 2).sum(-1)).sum(), 0.0))
    return float(err), float(err / ref) if ref > 0 else math.nan


def kinetic_energy(sol: MFGSolution, lam: float, boundary: str = "reflecting",
                   rho: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """K(t) = ∫ (λ/2)|v|² ρ dx with v = -∇φ/λ (or ``extras['velocity']``).

    ``rho`` (nt+1, *grid) replaces the solution's own density (for a model
    evaluated without one). Returns (K at every time level (nt+1,),
    ∫₀ᵀ K dt by the trapezoid rule).
    """
    vol = sol.cell_volume
    rho = np.asarray(sol.rho if rho is None else rho, dtype=float)
    if not np.all(np.isfinite(rho)):
        raise ValueError("the density weighting the kinetic energy is not finite; pass rho=")
    rho = np.clip(rho, 0.0, None)
    if "velocity" in sol.extras:
        v = np.asarray(sol.extras["velocity"], dtype=float)
    else:
        with np.errstate(invalid="ignore"):  # inf - inf where a potential is infinite (ρ = 0 there)
            v = -gradient(sol.phi, sol.axes, boundary) / lam
    # where ρ = 0 the (possibly infinite) potential carries no energy
    with np.errstate(invalid="ignore"):
        dens = np.where(rho > 0, (v**2).sum(-1) * rho, 0.0)
    K = 0.5 * lam * dens.reshape(sol.t.size, -1).sum(-1) * vol
    total = float(np.sum(0.5 * (K[1:] + K[:-1]) * np.diff(sol.t))) if sol.t.size > 1 else 0.0
    return K, total


def _coupling(problem: MFGProblem, pts: np.ndarray, rho: np.ndarray, t: float, vol: float) -> np.ndarray:
    cpl = problem.coupling
    if isinstance(cpl, NoCoupling):
        return np.zeros(pts.shape[:-1])
    if isinstance(cpl, LQCoupling):
        r = np.clip(rho, 0.0, None)
        mbar = (r[..., None] * pts).reshape(-1, pts.shape[-1]).sum(0) / r.sum()
        return 0.5 * cpl.q * ((pts - mbar) ** 2).sum(-1)
    if isinstance(cpl, LocalCoupling):
        return np.asarray(cpl.f(pts, rho, t), dtype=float)
    raise ValueError(f"coupling {type(cpl).__name__} is not supported by the HJB residual; expected "
                     "NoCoupling, LQCoupling or LocalCoupling")


def hjb_residual(phi: np.ndarray, rho: np.ndarray, t: np.ndarray, axes, problem: MFGProblem) -> tuple[np.ndarray, np.ndarray]:
    """R = -∂tφ - νΔφ - b·∇φ + |∇φ|²/(2λ) - f(x, ρ_t) - c(x, t) on the grid.

    Second-order central differences in x (3-point Laplacian) and in t
    (``np.gradient``, second-order one-sided at t = 0 and T). ρ enters only
    through the coupling f.

    Args:
        phi, rho: (nt+1, *grid).
        t: (nt+1,) time levels.
        axes: node arrays.

    Returns:
        (R of shape (nt+1, *grid), interior mask of shape grid): on a
        reflecting grid the end nodes of each axis are excluded.
    """
    phi = np.asarray(phi, dtype=float)
    t = np.asarray(t, dtype=float)
    if t.size < 3:
        raise ValueError(f"the HJB residual needs at least 3 time levels (got {t.size})")
    pts = _mesh_points(axes)
    vol = _vol(axes)
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf where a truth potential is infinite
        dphidt = np.gradient(phi, t, axis=0, edge_order=2)
        grad = _grad_interior(phi, axes, problem.boundary)
        lap, interior = _laplacian_interior(phi, axes, problem.boundary)
        b = problem.b(pts)
        R = -dphidt - problem.nu * lap - (b * grad).sum(-1) + (grad**2).sum(-1) / (2 * problem.lam)
    for k, tk in enumerate(t):
        R[k] -= _coupling(problem, pts, rho[k], float(tk), vol) + problem.c(pts, float(tk))
    return R, interior


def _hjb_summary(R: np.ndarray, interior: np.ndarray, rho_truth: np.ndarray, floor: float) -> tuple[float, float]:
    # a truth potential may be infinite where ρ = 0 (data with gaps): residuals there are not finite
    m = _region(rho_truth, floor) & interior & np.isfinite(R)
    if not m.any():
        return math.nan, math.nan
    w = rho_truth[m] / rho_truth[m].sum()
    return float((w * np.abs(R[m])).sum()), float(np.abs(R[m]).max())


def _score_of(sol: MFGSolution, boundary: str, floor: float) -> tuple[np.ndarray, str]:
    """The solution's score field (nt+1, *grid, d) and where it came from."""
    if "score" in sol.extras:
        return np.asarray(sol.extras["score"], dtype=float), "extras['score']"
    rho = np.clip(sol.rho, 0.0, None)
    tiny = np.finfo(float).tiny
    logr = np.log(np.maximum(rho, tiny))
    return gradient(logr, sol.axes, boundary), "central differences of log rho"


# --------------------------------------------------------------------------
# the single entry
# --------------------------------------------------------------------------


def _check_same_grid(truth: MFGSolution, model: MFGSolution) -> None:
    if truth.dim != model.dim:
        raise ValueError(f"truth is {truth.dim}-D but the model is {model.dim}-D; expected the same grid")
    for j, (a, b) in enumerate(zip(truth.axes, model.axes)):
        if a.shape != b.shape or not np.allclose(a, b, rtol=0, atol=1e-9 * max(1.0, np.abs(a).max())):
            raise ValueError(f"axis {j}: truth has {a.size} nodes on [{a[0]:.6g}, {a[-1]:.6g}], the model "
                             f"{b.size} on [{b[0]:.6g}, {b[-1]:.6g}]; expected the same cell-centred nodes")


def _model_index(model: MFGSolution, tk: float) -> int:
    k = int(np.argmin(np.abs(model.t - tk)))
    if abs(model.t[k] - tk) > 1e-9 * max(1.0, abs(model.t[-1])):
        raise ValueError(f"the model has no time level at t={tk:.6g} (nearest {model.t[k]:.6g}); "
                         "evaluate the model on the truth's time levels")
    return k


def _finite(v):
    """JSON-ready float: NaN/inf become None."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _series(times, values, description: str) -> dict:
    return {"t": [float(s) for s in times], "values": [_finite(v) for v in values], "description": description}


def evaluate(truth: MFGSolution, model: MFGSolution, problem: MFGProblem, times=None, *,
             n_times: int = 5, floor: float = DEFAULT_FLOOR, kl_floor: float = DEFAULT_KL_FLOOR,
             w2_max_nodes: int = 2500, samples=None, max_samples: int = 2000, seed: int = 0) -> dict:
    """Measure ``model`` against ``truth`` at several times.

    Args:
        truth: the ground truth on the problem's grid.
        model: the model's ρ (and φ, or NaN where it has none) on the same
            nodes; it must have a level at each chosen time. Optional extras
            ``score`` (nt+1, *grid, d) and ``velocity`` (nt+1, *grid, d).
        problem: the MFG (ν, λ, b, c, f for the HJB residual and energy).
        times: times to measure at (snapped to the truth's levels); default
            ``n_times`` evenly spread in [0, T], 0 and T included.
        floor: relative density floor of the comparison region R_t.
        kl_floor: relative KL floor ε (see :func:`kl_divergence`).
        w2_max_nodes: largest number of grid atoms passed to ``ot.emd2`` (2D).
        samples: model samples at the chosen times: a mapping {t: (N, d)} or
            an array (len(times), N, d); then W2 from samples and its
            sample-noise floor are reported.
        max_samples: larger sample sets are subsampled (without replacement)
            to this size, since ``ot.emd2`` costs O(N³); the size used is reported.
        seed: seed of the truth samples used for the sample-based W2.

    Returns:
        A JSON-ready dict ``{"schema", "times", "metrics": {name: {"t",
        "values", "description"}}, "summary": {...}, "info": {...},
        "skipped": {name: reason}}`` (NaN is written as None).
    """
    if not isinstance(truth, MFGSolution) or not isinstance(model, MFGSolution):
        raise TypeError("truth and model must be MFGSolution objects")
    _check_same_grid(truth, model)
    idx, tsel = select_times(truth.t, times, n_times)
    midx = [_model_index(model, tk) for tk in tsel]
    vol = truth.cell_volume
    axes = truth.axes
    d = truth.dim
    bnd = problem.boundary
    metrics: dict = {}
    skipped: dict = {}
    info: dict = {"floor": floor, "kl_floor": kl_floor, "boundary": bnd, "grid": [a.size for a in axes]}

    P = [truth.rho[k] for k in idx]
    has_rho = bool(np.all(np.isfinite(model.rho[midx])))
    if not has_rho:
        # e.g. a model evaluated without its (costly) density: the density metrics are not defined
        for key in ("l1", "tv", "hellinger", "kl_truth_model", "kl_model_truth", "mass_model", "w2"):
            skipped[key] = "the model's density is not finite (not computed?)"
    else:
        Q = [model.rho[k] for k in midx]
        metrics["l1"] = _series(tsel, [l1_distance(p, q, vol) for p, q in zip(P, Q)], "‖ρ_model - ρ_truth‖_L1")
        metrics["tv"] = _series(tsel, [0.5 * v for v in metrics["l1"]["values"]], "total variation = L1/2")
        metrics["hellinger"] = _series(tsel, [hellinger(p, q, vol) for p, q in zip(P, Q)], "Hellinger distance in [0, 1]")
        metrics["kl_truth_model"] = _series(tsel, [kl_divergence(p, q, vol, kl_floor) for p, q in zip(P, Q)],
                                            "KL(ρ_truth ‖ ρ_model) with floor")
        metrics["kl_model_truth"] = _series(tsel, [kl_divergence(q, p, vol, kl_floor) for p, q in zip(P, Q)],
                                            "KL(ρ_model ‖ ρ_truth) with floor")
        metrics["mass_model"] = _series(tsel, [float(np.sum(q) * vol) for q in Q], "∫ρ_model")

        # W2 on the grid
        if d == 1:
            w2 = [w2_1d(p, q, axes[0], "histogram") for p, q in zip(P, Q)]
            info["w2"] = {"method": "exact quantile functions of the histogram densities",
                          # each histogram is within W2 ≤ h of the density it samples (mass moved inside cells)
                          "discretisation_bound": 2.0 * truth.h[0]}
        else:
            w2, infos = [], []
            for p, q in zip(P, Q):
                v, inf = w2_grid(p, q, axes, max_nodes=w2_max_nodes)
                w2.append(v)
                infos.append(inf)
            info["w2"] = {"method": infos[0]["method"], "coarsen": infos[0]["coarsen"],
                          "coarsening_bound": infos[0]["coarsening_bound"],
                          # atoms at the nodes: each measure is within sqrt(d)·h/2 of the density it samples
                          "discretisation_bound": float(math.sqrt(d) * max(truth.h)),
                          "nodes": [i["nodes"] for i in infos], "dropped_mass": max(i["dropped_mass"] for i in infos)}
        metrics["w2"] = _series(tsel, w2, "W2(ρ_truth, ρ_model) on the grid")

    # W2 from model samples, with the sample-noise floor
    if samples is not None:
        rng = np.random.default_rng(seed)
        if isinstance(samples, Mapping):
            smp = []
            for tk in tsel:
                key = min(samples, key=lambda s: abs(float(s) - tk))
                if abs(float(key) - tk) > 1e-9 * max(1.0, truth.t[-1]):
                    raise ValueError(f"samples have no entry at t={tk:.6g}; keys are {sorted(map(float, samples))}")
                smp.append(np.asarray(samples[key], dtype=float))
        else:
            arr = np.asarray(samples, dtype=float)
            if arr.ndim != 3 or arr.shape[0] != len(tsel) or arr.shape[2] != d:
                raise ValueError(f"samples have shape {arr.shape}; expected ({len(tsel)}, N, {d}) for times {list(tsel)}")
            smp = list(arr)
        ws, wf = [], []
        n_given = int(smp[0].shape[0])
        for p, X in zip(P, smp):
            X = X.reshape(X.shape[0], -1)
            if X.shape[1] != d:
                raise ValueError(f"samples have dimension {X.shape[1]}; expected {d}")
            if X.shape[0] > max_samples:
                X = X[rng.choice(X.shape[0], size=max_samples, replace=False)]
            N = X.shape[0]
            Y1 = sample_density(p, axes, N, rng)
            Y2 = sample_density(p, axes, N, rng)
            ws.append(w2_samples(X, Y1))
            wf.append(w2_samples(Y1, Y2))
        metrics["w2_samples"] = _series(tsel, ws, "W2(model samples, truth samples of the same size)")
        metrics["w2_sample_floor"] = _series(tsel, wf, "W2 between two independent truth sample sets (noise floor)")
        info["w2_samples"] = {"n": int(min(n_given, max_samples)), "n_given": n_given, "seed": int(seed),
                              "truth_sampler": "histogram of ρ_truth (cell by mass, uniform inside the cell)"}
    else:
        skipped["w2_samples"] = "no model samples given"

    # potential modulo a constant
    has_phi = not np.all(np.isnan(model.phi))
    truth_phi = not np.all(np.isnan(truth.phi))
    if has_phi and truth_phi:
        pe = [potential_error(model.phi[km], truth.phi[k], truth.rho[k], floor) for k, km in zip(idx, midx)]
        metrics["phi_l2"] = _series(tsel, [e[0] for e in pe], "min_c ‖φ_model - φ_truth - c‖_L2(ρ_truth) on R_t")
        metrics["phi_max"] = _series(tsel, [e[1] for e in pe], "max_R |φ_model - φ_truth - c*|")
    else:
        skipped["phi_l2"] = skipped["phi_max"] = "the model (or truth) has no potential (NaN)"

    # scores
    if "score" in truth.extras or "score" in model.extras:
        st, src_t = _score_of(truth, bnd, floor)
        sm, src_m = _score_of(model, bnd, floor)
        se = [score_error(sm[km], st[k], truth.rho[k], floor) for k, km in zip(idx, midx)]
        metrics["score_l2"] = _series(tsel, [e[0] for e in se], "‖s_model - s_truth‖_L2(ρ_truth) on R_t")
        metrics["score_l2_rel"] = _series(tsel, [e[1] for e in se], "score_l2 / ‖s_truth‖_L2(ρ_truth)")
        info["score"] = {"truth": src_t, "model": src_m}
    else:
        skipped["score_l2"] = skipped["score_l2_rel"] = "neither solution carries a score"

    # kinetic energy
    summary: dict = {}
    if has_phi or "velocity" in model.extras:
        if has_rho_all := bool(np.all(np.isfinite(model.rho))):
            Km, Kmt = kinetic_energy(model, problem.lam, bnd)
        else:
            if model.t.size != truth.t.size or not np.allclose(model.t, truth.t):
                raise ValueError("the model has no density and other time levels than the truth; "
                                 "its kinetic energy cannot be weighted")
            Km, Kmt = kinetic_energy(model, problem.lam, bnd, rho=truth.rho)
        info["kinetic_energy_model"] = ("weighted by the model's density" if has_rho_all else
                                        "weighted by the truth's density (the model has none)")
        metrics["kinetic_energy_model"] = _series(tsel, Km[midx], "∫(λ/2)|v|²ρ dx of the model")
        summary["kinetic_energy_model_total"] = _finite(Kmt)
    if truth_phi:
        Kt, Ktt = kinetic_energy(truth, problem.lam, bnd)
        metrics["kinetic_energy_truth"] = _series(tsel, Kt[idx], "∫(λ/2)|v|²ρ dx of the truth")
        summary["kinetic_energy_truth_total"] = _finite(Ktt)
    if problem.nu == 0.0 and problem.drift is None and has_rho:
        T = float(truth.t[-1] - truth.t[0])
        if d == 1:
            w_t = w2_1d(truth.rho[0], truth.rho[-1], axes[0])
            w_m = w2_1d(model.rho[0], model.rho[-1], axes[0])
        else:
            w_t = w2_grid(truth.rho[0], truth.rho[-1], axes, max_nodes=w2_max_nodes)[0]
            w_m = w2_grid(model.rho[0], model.rho[-1], axes, max_nodes=w2_max_nodes)[0]
        summary["kinetic_bound_truth"] = _finite(problem.lam * w_t**2 / (2 * T))
        summary["kinetic_bound_model"] = _finite(problem.lam * w_m**2 / (2 * T))
        if "kinetic_energy_model_total" in summary and summary["kinetic_bound_model"]:
            summary["kinetic_ratio_model"] = _finite(Kmt / summary["kinetic_bound_model"])
        info["kinetic_bound"] = "Benamou–Brenier: ∫₀ᵀ∫(λ/2)|v|²ρ ≥ λ W₂²(ρ₀, ρ_T)/(2T), equality for the optimal flow"
    else:
        skipped["kinetic_bound"] = ("the Benamou–Brenier bound applies to nu = 0 and b = 0" if has_rho
                                    else "the model's density is not finite")

    # HJB residual
    wgf_reason = ("wgf: φ = log(ρ_t/π) is the velocity potential of the gradient flow, which solves no HJB "
                  "of the MFG form over [0, T] (each JKO step does, on [0, τ])")
    if problem.family == "wgf":
        skipped["hjb_residual_l1"] = skipped["hjb_residual_max"] = skipped["hjb_residual_truth_l1"] = wgf_reason
    elif has_phi and model.t.size >= 3:
        # the coupling f(x, ρ) uses the model's own density (the truth's when the model has none)
        rho_c = model.rho if np.all(np.isfinite(model.rho)) else truth.rho
        R, interior = hjb_residual(model.phi, rho_c, model.t, axes, problem)
        hs = [_hjb_summary(R[km], interior, truth.rho[k], floor) for k, km in zip(idx, midx)]
        metrics["hjb_residual_l1"] = _series(tsel, [e[0] for e in hs], "ρ_truth-weighted L1 of the HJB residual on R_t")
        metrics["hjb_residual_max"] = _series(tsel, [e[1] for e in hs], "max of |HJB residual| on R_t")
    else:
        skipped["hjb_residual_l1"] = skipped["hjb_residual_max"] = "the model has no potential on all time levels"
    if truth_phi and truth.t.size >= 3 and problem.family != "wgf":
        R, interior = hjb_residual(truth.phi, truth.rho, truth.t, axes, problem)
        hs = [_hjb_summary(R[k], interior, truth.rho[k], floor) for k in idx]
        metrics["hjb_residual_truth_l1"] = _series(tsel, [e[0] for e in hs],
                                                   "the same residual of the truth (discretisation floor)")

    for name, m in metrics.items():
        vals = [v for v in m["values"] if v is not None]
        summary[name] = {"at_T": m["values"][-1], "max": _finite(max(vals)) if vals else None,
                         "mean": _finite(float(np.mean(vals))) if vals else None}
    return {
        "schema": SCHEMA,
        "times": [float(s) for s in tsel],
        "metrics": metrics,
        "summary": summary,
        "info": info,
        "skipped": skipped,
    }
