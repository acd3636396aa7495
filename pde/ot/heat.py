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
- ``refined`` (time levels only, σ < h, i.e. within h²/(2ν) of t = 0 or
  t = T, where the Gaussian sampled at the nodes is not accurate): u = log f
  is interpolated along the axis (6-point Lagrange) onto m-times finer cell
  centres (m odd, so that the coarse nodes are fine nodes, and σ ≥ h/m), and the sampled Gaussian of the fine spacing is applied from the
  fine nodes to the coarse ones. Interpolating the logarithm, not f, keeps it
  accurate on scalings that span hundreds of orders of magnitude, and the
  images keep the walls. (A local quadratic model of u, exact on Gaussians,
  was tried and rejected: the scalings of a small-ν step are not smooth in the
  far field, where u'' jumps over a few cells, and the model's error there
  reached e^{20}.)

In the log domain (:meth:`HeatKernel.log_apply`) each axis is first applied by
absorption (:func:`absorbed_lines`: row and column functions of the log values
moved into the kernel, one BLAS product of numbers in range, blocks of lines
halved until they fit) and otherwise by a log-sum-exp over the same matrix; when the kernel reaches no further than one image on
each side (40σ < L), the Numba kernel ``lse_gauss_lines`` works on the line
extended by its mirror images (periodic: copies), finds the exact max-plus
value of every output from the lower envelope of parabolas, and sums outward
from the maximiser only while a term above e^{−50} of it is still possible
(prefix/suffix maxima bound the rest): the same result as the dense
log-sum-exp (tested to 1e-13) with 2–6× fewer exponentials.

``apply_dct`` applies the same semigroup by a DCT-II pair with the continuous
symbol exp(−νs k²) on the cosine modes — O(N log N), exact on the modes the
grid carries, but with an error of 1e-16 · max|f| in absolute terms and
negative ringing when σ ≲ h: a scaling iteration may use it only when the
potentials' dynamic range is moderate (see ``docs/ot.md, "ν > 0"`` for the
measured comparison).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import fft, special

__all__ = ["GAUSS_MIN_CELLS", "MAX_REFINE", "HeatKernel", "gaussian_log_matrix", "absorbed_lines", "lse_apply_np"]

#: σ/h above which the sampled Gaussian (images) matrix is used directly; below it the refined one
GAUSS_MIN_CELLS = 1.0
#: largest |second difference| of log f (per cell²) that the refined kernel interpolates by polynomials
ROUGH = 2.0
#: nodes of the Lagrange stencil of the refined kernel's interpolation (6: O(h⁶) on smooth log f)
STENCIL = 6
#: largest spread of log values (after absorbing row and column functions) the absorbed application accepts
ABSORB_RANGE = 400.0
#: smallest block of lines the absorbed application splits down to before the log-sum-exp takes over
MIN_BLOCK = 4
#: largest refinement factor of the ``refined`` kernel (σ < h/MAX_REFINE: sampled at h/MAX_REFINE)
MAX_REFINE = 63


def gaussian_log_matrix(x: np.ndarray, y: np.ndarray, lo: float, hi: float, var: float, boundary: str,
                        hy: float) -> np.ndarray:
    """log of hy · Σ_images N(x_i − y'_l; var), shape (x.size, y.size).

    The images of y are y + 2mL and 2·lo − y + 2mL (reflecting) or y + mL
    (periodic); an image block farther from the box than 40 σ contributes
    below exp(−800) and is dropped.
    """
    L = hi - lo
    reach = 40.0 * math.sqrt(var)
    blocks = []  # (sign of y, offset): image = sign·y + offset, lying in [lo + off', hi + off']
    if boundary == "reflecting":
        M = int(math.ceil(reach / (2.0 * L))) + 1
        for m in range(-M, M + 1):
            blocks.append((1.0, 2.0 * m * L))
            blocks.append((-1.0, 2.0 * lo + 2.0 * m * L))
    else:
        M = int(math.ceil(reach / L)) + 1
        blocks = [(1.0, m * L) for m in range(-M, M + 1)]
    out = None
    for sign, off in blocks:
        ilo, ihi = sorted((sign * lo + off, sign * hi + off))
        if ilo - hi > reach or lo - ihi > reach:  # the whole image block is out of reach
            continue
        d = x[:, None] - (sign * y[None, :] + off)
        e = -(d * d) / (2.0 * var)
        out = e if out is None else np.logaddexp(out, e)
    return out + math.log(hy) - 0.5 * math.log(2.0 * math.pi * var)


class _Axis:
    """P_s along one axis: a (n, n) or, refined, a (n, m·n) log matrix and the fine nodes."""

    def __init__(self, x, lo, hi, nu, s, boundary, min_cells):
        n = x.size
        h = (hi - lo) / n
        self.x, self.fine, self.window, self.boundary = x, None, None, boundary
        if s <= 0.0 or nu <= 0.0:
            self.kind = "identity"
            with np.errstate(divide="ignore"):
                self.logM = np.log(np.eye(n))
        else:
            var = 2.0 * nu * s
            sig = math.sqrt(var)
            if sig >= min_cells * h:
                self.kind = "gaussian"
                self.logM = gaussian_log_matrix(x, x, lo, hi, var, boundary, h)
                # one image on each side is all there is: the log domain may use the windowed kernel
                self.window = (h * h / (2.0 * var), math.log(h) - 0.5 * math.log(2.0 * math.pi * var)) \
                    if 40.0 * sig < (hi - lo) else None
            else:
                m = min(MAX_REFINE, int(math.ceil(h / sig)) | 1)
                hf = h / m
                self.fine = lo + (np.arange(n * m) + 0.5) * hf
                self.kind = f"refined x{m}"
                self.logM = gaussian_log_matrix(x, self.fine, lo, hi, var, boundary, hf)
        self.M = np.exp(self.logM)

    def to_fine(self, U):
        """Interpolate log values (R, n) onto the fine nodes (R, m·n).

        Lagrange interpolation of log f on :data:`STENCIL` nodes (O(h⁶), local), where log f
        is resolved on the stencil (finite, all second differences ≤ :data:`ROUGH` in
        absolute value); elsewhere (f vanishes or jumps by orders of magnitude within a
        cell, e.g. data with exact zeros) linear interpolation of f itself between the
        two nearest nodes, done in log space: a convex combination, so no overshoot.
        """
        if not hasattr(self, "_stencil"):
            n, nf = self.x.size, self.fine.size
            h = self.x[1] - self.x[0]
            pos = (self.fine - self.x[0]) / h  # fine nodes in coarse index units
            left = np.clip(np.floor(pos).astype(int), 0, n - 2)  # interval [left, left + 1]
            k = min(STENCIL, n)
            start = np.clip(left - (k // 2 - 1), 0, n - k)
            nodes = start[:, None] + np.arange(k)[None, :]
            W = np.ones((nf, k))
            for q in range(k):
                for r in range(k):
                    if r != q:
                        W[:, q] *= (pos - nodes[:, r]) / (nodes[:, q] - nodes[:, r])
            wr = np.clip(pos - left, 0.0, 1.0)
            self._stencil = (nodes, W, left, wr)
        nodes, W, left, wr = self._stencil
        S = U[..., nodes]  # (R, nf, 4)
        with np.errstate(invalid="ignore"):
            cubic = (S * W).sum(-1)
            d2 = np.abs(S[..., :-2] - 2 * S[..., 1:-1] + S[..., 2:]).max(-1)
            smooth = np.isfinite(S).all(-1) & (d2 <= ROUGH)
        with np.errstate(divide="ignore"):
            linear = np.logaddexp(np.log1p(-wr) + U[..., left], np.log(wr) + U[..., left + 1])
        return np.where(smooth, cubic, linear)


def _absorbed_block(logM, U):
    """log Σ_l exp(logM[i, l] + U[r, l]) by absorption, or None when the block's values do not fit.

    U = s_r + f_l + R[r, l] with f the column means (over finite entries) and s_r the row
    maxima of U − f, so R ≤ 0; with M̃ = exp(logM + f − c), c_i = max_l (logM[i, l] + f_l),
    the result is s_r + c_i + log (e^R M̃ᵀ)[r, i], a BLAS product of numbers in range.
    Entries of M̃ below e^{−708} are lost; relative to the sum, which is at least e^{R[r, l*]}
    with l* the row maximiser of M̃, that is below n·e^{−708+ABSORB_RANGE}: the block is
    accepted only when min R ≥ −ABSORB_RANGE and every sum is > 1e-290.
    """
    fin = np.isfinite(U)
    cnt = fin.sum(0)
    with np.errstate(invalid="ignore"):
        f = np.where(cnt > 0, np.where(fin, U, 0.0).sum(0) / np.maximum(cnt, 1), 0.0)
        V = np.where(fin, U - f[None, :], -np.inf)
    s = V.max(1)
    live = np.isfinite(s)
    R = V[live] - s[live, None]
    if R.size and R[np.isfinite(R)].min() < -ABSORB_RANGE:
        return None
    lMt = logM + f[None, :]
    c = lMt.max(1)
    if not np.all(np.isfinite(c)):
        return None
    S = np.exp(R) @ np.exp(lMt - c[:, None]).T
    if not (np.all(np.isfinite(S)) and np.all(S > 1e-290)):
        return None
    out = np.full((U.shape[0], logM.shape[0]), -np.inf)
    out[live] = s[live, None] + c[None, :] + np.log(S)
    return out


def absorbed_lines(logM, U):
    """Absorbed log-domain application over blocks of lines, halving a block that does not fit.

    Returns (out, rest): out (R, m) filled except for the rows ``rest`` (blocks of at most
    :data:`MIN_BLOCK` lines that even halving could not bring within range).
    """
    out = np.empty((U.shape[0], logM.shape[0]))
    rest = []
    todo = [np.arange(U.shape[0])]
    while todo:
        rows = todo.pop()
        res = _absorbed_block(logM, U[rows])
        if res is not None:
            out[rows] = res
        elif rows.size <= MIN_BLOCK:
            rest.append(rows)
        else:
            todo += [rows[: rows.size // 2], rows[rows.size // 2:]]
    return out, (np.concatenate(rest) if rest else np.zeros(0, dtype=int))


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
        min_cells: σ/h below which the refined kernel is used.
        absorb: apply the log domain by absorption first (default), the log-sum-exp only where
            that cannot keep the numbers in range.
    """

    def __init__(self, grid, nu: float, s: float, lse: str = "numba", min_cells: float = GAUSS_MIN_CELLS,
                 absorb: bool = True):
        self.grid, self.nu, self.s = grid, float(nu), float(s)
        self.absorb = bool(absorb)
        cache = {}
        self.axes = []
        for x, (lo, hi) in zip(grid.axes, grid.domain):
            key = (x.size, lo, hi)
            if key not in cache:
                cache[key] = _Axis(x, lo, hi, nu, s, grid.boundary, min_cells)
            self.axes.append(cache[key])
        self.kinds = [ax.kind for ax in self.axes]
        if lse not in ("numba", "numpy"):
            raise ValueError(f"lse={lse!r}; expected 'numba' or 'numpy'")
        self._lse = lse

    # -- resolution ---------------------------------------------------------

    def cells_per_width(self) -> float:
        """σ/h with σ = √(2νs) and h the coarsest spacing."""
        return math.sqrt(2.0 * self.nu * self.s) / max(self.grid.h)

    # -- scaling domain -------------------------------------------------------

    def apply(self, f: np.ndarray) -> np.ndarray:
        """P_s f with the dense 1D matrices (P_s is symmetric: P_sᵀ = P_s); f > 0 where refined."""
        if any(ax.fine is not None for ax in self.axes):
            return self._apply_refined(f)
        if f.ndim == 1:
            return self.axes[0].M @ f
        return self.axes[0].M @ f @ self.axes[1].M.T

    def _apply_refined(self, f):
        if f.ndim == 1:
            return self._scaled_lines(self.axes[0], f[None, :])[0]
        w = self._scaled_lines(self.axes[1], f)
        return self._scaled_lines(self.axes[0], w.T).T

    @staticmethod
    def _scaled_lines(ax, lines):
        if ax.fine is not None:
            with np.errstate(divide="ignore"):
                lines = np.exp(ax.to_fine(np.log(lines)))
        return lines @ ax.M.T

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

    def _lines(self, ax: _Axis, U):
        """log P_s along one axis for lines U (R, n) of log values.

        First by absorption (:func:`absorbed_lines`, BLAS), and by a log-sum-exp for
        the blocks of lines whose log values it cannot bring within range.
        """
        if ax.fine is not None:
            U = ax.to_fine(U)
        if not self.absorb or U.shape[0] < MIN_BLOCK:  # one line (1D): the exponentials of M̃ cost more
            return self._lse_lines(ax, U)
        out, rest = absorbed_lines(ax.logM, U)
        if rest.size:
            out[rest] = self._lse_lines(ax, U[rest])
        return out

    def _lse_lines(self, ax: _Axis, U):
        if ax.window is not None and self._lse == "numba":
            from ._lse import lse_gauss_lines

            n = U.shape[1]
            ext = (U[:, ::-1], U, U[:, ::-1]) if ax.boundary == "reflecting" else (U, U, U)
            out = np.empty_like(U)
            lse_gauss_lines(np.concatenate(ext, axis=1), n, ax.window[0], ax.window[1], 50.0, out, size=U.size * 16)
            return out
        if self._lse == "numpy":
            return lse_apply_np(ax.logM, U)
        from ._lse import lse_rows

        out = np.empty((U.shape[0], ax.logM.shape[0]))
        lse_rows(ax.logM, np.ascontiguousarray(U), out, size=U.size * ax.logM.shape[0])
        return out

    def log_apply(self, u: np.ndarray) -> np.ndarray:
        """log P_s e^u (log-sum-exp along each axis; −inf entries of u are zeros of e^u)."""
        if u.ndim == 1:
            return self._lines(self.axes[0], u[None, :])[0]
        w = self._lines(self.axes[1], u)  # along axis 1
        return self._lines(self.axes[0], w.T).T  # along axis 0
