"""The heat semigroup P_s = exp(s ν Δ) of a box, one 1D matrix per axis.

P_s is the transition kernel of Brownian motion of diffusion ν (variance 2νs)
reflected at the walls of the box (Neumann) or wrapped (periodic); it is the
Gibbs kernel of the entropic JKO step (s = T) and moves the Schrödinger
potentials to the intermediate times. It is separable, so on a tensor grid it
is applied axis by axis: f ↦ M₁ f M₂ in 2D, with M_j an n_j × n_j matrix
(O(N·n) per application), or in the log domain by a log-sum-exp along each axis.

Two ways of applying it, both accurate in the relative sense even where the
kernel is tiny (a scaling iteration multiplies them by
potentials spanning hundreds of orders of magnitude, so an absolute error of
1e-16 · max, as a DCT or an eigen-expansion makes, is not good enough):

- ``gaussian``: the continuous kernel at the cell centres times h, by the
  method of images (y + 2mL and 2·lo − y + 2mL for reflecting walls,
  y + mL for periodic ones). By Poisson summation its discrete symbol is
  Σ_m exp(−νs (k + 2πm/h)²): it differs from exp(−νs k²) by aliasing terms of
  relative size 2·exp(−2π² σ²/h²), σ = √(2νs); at σ ≥ 1.5 h (:data:`GAUSS_MIN_CELLS`)
  that is below 1e-19, so the matrix is mass preserving and a semigroup to
  round-off, and spectrally accurate on smooth functions.
- ``local`` (time levels only, σ < 1.5 h, i.e. within 1.125 h²/ν of t = 0 or
  t = T, where no sampled kernel is accurate): along each axis, with
  u = log f and u', u'' by second-order differences,

      log P_s f = u + σ² u'² / (2(1 − σ² u'')) − ½ log(1 − σ² u''),

  the Gaussian integral of the local quadratic model of u: exact when u is
  quadratic along the line (Gaussian data), O(σ⁴ ∂⁴u) otherwise, and, like
  the images kernel, insensitive to how fast f grows (the scalings of a small-ν
  step grow like exp(x²/O(σ_T²))), which a lattice kernel exp(sνΔ_h) is not
  (its tails decay like r^k/k!, not like a Gaussian).
  It ignores the walls (the box must hold the mass, as the problem checks).

``apply_dct`` applies the same semigroup by a DCT-II pair with the continuous
symbol exp(−νs k²) on the cosine modes — O(N log N), exact on the modes the
grid carries, but with an error of 1e-16 · max|f| in absolute terms and
negative ringing when σ ≲ h: a scaling iteration may use it only when the
potentials' dynamic range is moderate (see ``docs/ot-entropic.md`` for the
measured comparison).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import fft, special

__all__ = ["GAUSS_MIN_CELLS", "HeatKernel", "log_heat_matrix", "local_log_apply_1d", "lse_apply_np"]

#: σ/h above which the sampled Gaussian (images) matrix is used; below it the local quadratic model
GAUSS_MIN_CELLS = 1.0


def _gaussian_log_matrix(x: np.ndarray, lo: float, hi: float, var: float, boundary: str) -> np.ndarray:
    """log of h · Σ_images N(x_i − y'; var), shape (n, n)."""
    n = x.size
    h = (hi - lo) / n
    L = hi - lo
    sd = math.sqrt(var)
    # images farther than 40 σ contribute below exp(−800)
    period = 2.0 * L if boundary == "reflecting" else L
    M = int(math.ceil(40.0 * sd / period)) + 1
    shifts = period * np.arange(-M, M + 1)
    d = x[:, None, None] - (x[None, :, None] + shifts[None, None, :])
    terms = [-(d * d) / (2.0 * var)]
    if boundary == "reflecting":
        dr = x[:, None, None] - (2.0 * lo - x[None, :, None] + shifts[None, None, :])
        terms.append(-(dr * dr) / (2.0 * var))
    e = np.concatenate(terms, axis=-1)
    return special.logsumexp(e, axis=-1) + math.log(h) - 0.5 * math.log(2.0 * math.pi * var)


def log_heat_matrix(x: np.ndarray, lo: float, hi: float, nu: float, s: float, boundary: str,
                    min_cells: float = GAUSS_MIN_CELLS):
    """log P_s on one axis and the kind used ("identity", "gaussian" or "local").

    For "local" the matrix is None (see :func:`local_log_apply_1d`); ``min_cells``
    lowers the σ/h above which the Gaussian matrix is used (the Sinkhorn kernel
    uses it down to the resolution limit of :mod:`pde.ot.entropic`).

    Args:
        x: (n,) cell centres of [lo, hi].
        nu: diffusion ν (variance 2νs after time s).
        s: time ≥ 0.
        boundary: "reflecting" or "periodic".
    """
    n = x.size
    h = (hi - lo) / n
    if s <= 0.0 or nu <= 0.0:
        with np.errstate(divide="ignore"):
            return np.log(np.eye(n)), "identity"
    var = 2.0 * nu * s
    if math.sqrt(var) >= min_cells * h:
        return _gaussian_log_matrix(x, lo, hi, var, boundary), "gaussian"
    return None, "local"


def local_log_apply_1d(u: np.ndarray, h: float, var: float) -> np.ndarray:
    """log P_s e^u along the last axis by the local quadratic model (module docstring), var = 2νs."""
    du = np.empty_like(u)
    d2 = np.empty_like(u)
    du[..., 1:-1] = (u[..., 2:] - u[..., :-2]) / (2 * h)
    d2[..., 1:-1] = (u[..., 2:] - 2 * u[..., 1:-1] + u[..., :-2]) / (h * h)
    du[..., 0] = (-3 * u[..., 0] + 4 * u[..., 1] - u[..., 2]) / (2 * h)
    du[..., -1] = (3 * u[..., -1] - 4 * u[..., -2] + u[..., -3]) / (2 * h)
    d2[..., 0], d2[..., -1] = d2[..., 1], d2[..., -2]
    with np.errstate(invalid="ignore"):
        den = 1.0 - var * d2
        out = u + var * du * du / (2.0 * den) - 0.5 * np.log(den)
    # −inf (zeros of f) and non-finite models keep u: a vanishing f stays zero
    return np.where(np.isfinite(out) & (den > 0), out, u)


def lse_apply_np(logM: np.ndarray, U: np.ndarray) -> np.ndarray:
    """NumPy twin of the log-sum-exp kernel: out[r, i] = log Σ_l exp(logM[i, l] + U[r, l])."""
    return special.logsumexp(logM[None, :, :] + U[:, None, :], axis=-1)


class HeatKernel:
    """P_s on a tensor grid, applied in the scaling or the log domain.

    Args:
        grid: a :class:`pde.grid.Grid` (its axes, domain and boundary are used).
        nu: diffusion ν.
        s: time of the semigroup.
        lse: "numba" (default) or "numpy": the log-sum-exp implementation.
    """

    def __init__(self, grid, nu: float, s: float, lse: str = "numba", min_cells: float = GAUSS_MIN_CELLS):
        self.grid, self.nu, self.s = grid, float(nu), float(s)
        self.logM, self.kinds = [], []
        cache = {}
        for x, (lo, hi) in zip(grid.axes, grid.domain):
            key = (x.size, lo, hi)
            if key not in cache:
                cache[key] = log_heat_matrix(x, lo, hi, nu, s, grid.boundary, min_cells)
            lm, kind = cache[key]
            self.logM.append(lm)
            self.kinds.append(kind)
        self.M = [None if lm is None else np.exp(lm) for lm in self.logM]
        if lse not in ("numba", "numpy"):
            raise ValueError(f"lse={lse!r}; expected 'numba' or 'numpy'")
        self._lse = lse

    # -- resolution ---------------------------------------------------------

    def cells_per_width(self) -> float:
        """σ/h with σ = √(2νs) and h the coarsest spacing."""
        return math.sqrt(2.0 * self.nu * self.s) / max(self.grid.h)

    # -- scaling domain -------------------------------------------------------

    def apply(self, f: np.ndarray) -> np.ndarray:
        """P_s f with the dense 1D matrices (P_s is symmetric: P_sᵀ = P_s)."""
        if "local" in self.kinds:
            with np.errstate(divide="ignore"):
                return np.exp(self.log_apply(np.log(f)))
        if f.ndim == 1:
            return self.M[0] @ f
        return self.M[0] @ f @ self.M[1].T

    def apply_dct(self, f: np.ndarray) -> np.ndarray:
        """P_s f by a DCT-II pair with the symbol exp(−νs k²), k = πj/L (reflecting walls only)."""
        if self.grid.boundary != "reflecting":
            raise ValueError("the DCT heat kernel is for reflecting walls; use the dense kernel on a periodic box")
        F = fft.dctn(f, type=2, norm="ortho")
        F *= self.dct_symbol()
        return fft.idctn(F, type=2, norm="ortho")

    def dct_symbol(self) -> np.ndarray:
        if not hasattr(self, "_sym"):
            facs = []
            for x, (lo, hi) in zip(self.grid.axes, self.grid.domain):
                k = math.pi * np.arange(x.size) / (hi - lo)
                facs.append(np.exp(-self.nu * self.s * k * k))
            self._sym = facs[0] if len(facs) == 1 else np.outer(facs[0], facs[1])
        return self._sym

    # -- log domain -----------------------------------------------------------

    def _lse_lines(self, logM, U, axis):
        if logM is None:
            return local_log_apply_1d(U, self.grid.h[axis], 2.0 * self.nu * self.s)
        if self._lse == "numpy":
            return lse_apply_np(logM, U)
        from ._lse import lse_rows

        out = np.empty((U.shape[0], logM.shape[0]))
        lse_rows(logM, np.ascontiguousarray(U), out, size=U.size * logM.shape[0])
        return out

    def log_apply(self, u: np.ndarray) -> np.ndarray:
        """log P_s e^u (log-sum-exp along each axis; −inf entries of u are zeros of e^u)."""
        if u.ndim == 1:
            return self._lse_lines(self.logM[0], u[None, :], 0)[0]
        w = self._lse_lines(self.logM[1], u, 1)  # along axis 1
        return self._lse_lines(self.logM[0], w.T, 0).T  # along axis 0
