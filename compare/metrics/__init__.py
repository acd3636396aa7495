"""Metrics between a ground-truth solution and a model on the same grid (a package).

Modules: ``divergences`` (L1, Hellinger, KL), ``wasserstein`` (grid W₂),
``samples`` (sample W₂, energy distance, path metrics), ``fields`` (potential,
score, kinetic energy, HJB residual), ``helmholtz`` (the non-gradient fraction
of a velocity) and ``evaluation`` (``evaluate``: the table of per-metric functions).

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

from ._common import DEFAULT_FLOOR, DEFAULT_KL_FLOOR, SCHEMA, select_times, series
from .divergences import hellinger, kl_divergence, l1_distance
from .evaluation import METRICS, evaluate
from .fields import _hjb_summary, _score_of, gradient, hjb_residual, kinetic_energy, potential_error, score_error
from .helmholtz import nongradient_fraction
from .samples import energy_distance, path_kinetic_energy, path_straightness, sample_density, w2_samples
from .wasserstein import w2_1d, w2_grid

__all__ = [
    "SCHEMA",
    "select_times",
    "series",
    "l1_distance",
    "hellinger",
    "kl_divergence",
    "w2_1d",
    "w2_grid",
    "w2_samples",
    "energy_distance",
    "sample_density",
    "path_kinetic_energy",
    "path_straightness",
    "potential_error",
    "score_error",
    "gradient",
    "kinetic_energy",
    "hjb_residual",
    "nongradient_fraction",
    "evaluate",
    "METRICS",
    "DEFAULT_FLOOR",
    "DEFAULT_KL_FLOOR",
]
