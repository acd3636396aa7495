"""The discrete MFG system: arrays of the scheme, unknown layout, residual, Jacobian.

A :class:`Discretization` holds everything the kernels need as plain arrays
(neighbours, drift parts, running cost, ρ₀, terminal and coupling data), so
that the same machinery serves a problem built from distributions and the
internal sub-problems built from grid arrays (the JKO steps of wgf).

Unknowns U (length ``2·nt·N + nt·d_m``; d_m = d when a mean-field moment
is needed, else 0), time-interleaved as in :mod:`pde.fd.kernels`:
φ^k ↦ [2kN, 2kN + N), ρ^{k+1} ↦ [2kN + N, 2(k+1)N), then the means
m^k = h^d Σ_j x_j ρ^k_j (k = 1..nt) of the non-local LQ coupling, kept as
unknowns so that the Jacobian stays sparse (a bordered matrix) instead of
carrying a dense N×N block per level.

Residual rows are scaled by Δt (HJB and FP alike, which keeps the FP block
the exact transpose of the HJB block); the moment rows are unscaled.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from . import kernels as K

__all__ = ["Discretization", "stencil", "NonFiniteError"]


class NonFiniteError(FloatingPointError):
    """NaN or Inf appeared; the message names the equation and time level."""


def stencil(grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Neighbour tables of a cell-centred tensor grid (C order, flattened).

    Returns ``nbp, nbm`` of shape (d, N) (int64) and ``ih`` (d,). Across a
    reflecting wall the neighbour is the node itself (zero one-sided
    difference = no flux through the face); on a periodic box it wraps.
    """
    shape = grid.shape
    N = int(np.prod(shape))
    idx = np.arange(N).reshape(shape)
    d = len(shape)
    nbp = np.empty((d, N), dtype=np.int64)
    nbm = np.empty((d, N), dtype=np.int64)
    for a in range(d):
        if grid.boundary == "periodic":
            p = np.roll(idx, -1, axis=a)
            m = np.roll(idx, 1, axis=a)
        else:
            sl_last = [slice(None)] * d
            sl_last[a] = slice(-1, None)
            sl_first = [slice(None)] * d
            sl_first[a] = slice(0, 1)
            p = np.roll(idx, -1, axis=a)
            p[tuple(sl_last)] = idx[tuple(sl_last)]
            m = np.roll(idx, 1, axis=a)
            m[tuple(sl_first)] = idx[tuple(sl_first)]
        nbp[a] = p.ravel()
        nbm[a] = m.ravel()
    ih = np.array([1.0 / h for h in grid.h])
    return nbp, nbm, ih


@dataclass
class Discretization:
    """Arrays of one discrete MFG (see module docstring).

    Attributes:
        grid: the :class:`~pde.grid.Grid`.
        nu, lam: diffusion and kinetic weight.
        b: (N, d) drift at the nodes.
        c: (nt, N) running cost c(x_i, t_k).
        rho0: (N,) initial density (normalised so that h^d Σ ρ₀ = 1).
        terminal: ("kl", log γ (N,)) | ("fixed", g (N,)) | ("local", g, dg) |
            ("lq", q_T).
        coupling: ("none",) | ("local", f, df) | ("lq", q).
    """

    grid: object
    nu: float
    lam: float
    b: np.ndarray
    c: np.ndarray
    rho0: np.ndarray
    terminal: tuple
    coupling: tuple = ("none",)
    kl_floor: float = 0.0
    homotopy: float = 1.0
    g_start: object = None
    log_variable: bool = False
    labels: dict = field(default_factory=dict)

    def __post_init__(self):
        g = self.grid
        self.N = g.size
        self.d = g.dim
        self.nt = g.nt
        self.dt = g.dt
        self.vol = g.cell_volume
        self.nbp, self.nbm, self.ih = stencil(g)
        self.pts = g.points().reshape(self.N, self.d)
        b = np.asarray(self.b, dtype=float).reshape(self.N, self.d)
        self.bp = np.ascontiguousarray(np.maximum(b, 0.0).T)
        self.bm = np.ascontiguousarray(np.maximum(-b, 0.0).T)
        self.t = g.t
        self.needs_moments = self.coupling[0] == "lq" or self.terminal[0] == "lq"
        self.dm = self.d if self.needs_moments else 0
        # ν = 0 approach: with a KL terminal the last density level is carried
        # as ψ = log ρ^{nt} (g = 1 + ψ - log γ is then linear, ρ_T = e^ψ > 0).
        self.log_terminal = self.terminal[0] == "kl" and self.log_variable
        self.kl_floor = float(self.kl_floor)
        self.n_unknowns = 2 * self.nt * self.N + self.nt * self.dm

    # -- layout ----------------------------------------------------------------

    def unpack(self, U):
        """U -> (phi (nt+1, N) with phi[nt] = g, rho (nt+1, N), m (nt+1, d) or None)."""
        N, nt = self.N, self.nt
        blk = U[: 2 * nt * N].reshape(nt, 2, N)
        phi = np.empty((nt + 1, N))
        rho = np.empty((nt + 1, N))
        phi[:nt] = blk[:, 0]
        rho[0] = self.rho0
        rho[1:] = blk[:, 1]
        if self.log_terminal:
            rho[nt] = np.exp(blk[nt - 1, 1])
        m = None
        if self.dm:
            m = np.empty((nt + 1, self.d))
            m[0] = self.vol * self.rho0 @ self.pts
            m[1:] = U[2 * nt * N:].reshape(nt, self.d)
        phi[nt] = self.terminal_value(rho[nt], None if m is None else m[nt])
        return phi, rho, m

    def pack(self, phi, rho):
        """(phi, rho) of shape (nt+1, N) -> U (φ^{nt} and ρ^0 are not unknowns)."""
        nt, N = self.nt, self.N
        U = np.empty(self.n_unknowns)
        blk = np.stack([phi[:nt], rho[1:]], axis=1)
        if self.log_terminal:
            with np.errstate(divide="ignore"):
                blk[nt - 1, 1] = np.log(rho[nt])
        U[: 2 * nt * N] = blk.ravel()
        if self.dm:
            U[2 * nt * N:] = (self.vol * rho[1:] @ self.pts).ravel()
        return U

    # -- data terms ----------------------------------------------------------------

    def terminal_value(self, rhoT, mT=None):
        kind = self.terminal[0]
        if kind == "kl":
            with np.errstate(divide="ignore", invalid="ignore"):
                g = 1.0 + np.log(rhoT + self.kl_floor) - self.terminal[1]
            if self.homotopy != 1.0:  # continuation in the terminal coupling
                g = self.homotopy * g + (1.0 - self.homotopy) * self.g_start
            return g
        if kind == "fixed":
            return self.terminal[1]
        if kind == "local":
            return np.asarray(self.terminal[1](self.pts, rhoT), dtype=float).reshape(self.N)
        if kind == "lq":
            return 0.5 * self.terminal[1] * ((self.pts - mT) ** 2).sum(-1)
        raise ValueError(f"unknown terminal kind {kind!r}")

    def terminal_derivative(self, rhoT):
        """∂g_i/∂ρ_i (local part) of shape (N,)."""
        kind = self.terminal[0]
        if kind == "kl":
            with np.errstate(divide="ignore"):
                return self.homotopy / (rhoT + self.kl_floor)
        if kind == "local":
            return np.asarray(self.terminal[2](self.pts, rhoT), dtype=float).reshape(self.N)
        return np.zeros(self.N)

    def source(self, rho, m=None):
        """src^k = c^k + f(x, ρ^{k+1}, t_{k+1}), shape (nt, N)."""
        kind = self.coupling[0]
        if kind == "none":
            return self.c
        src = self.c.copy()
        if kind == "local":
            for k in range(self.nt):
                src[k] += np.asarray(self.coupling[1](self.pts, rho[k + 1], self.t[k + 1]), dtype=float).reshape(self.N)
        elif kind == "lq":
            q = self.coupling[1]
            for k in range(self.nt):
                src[k] += 0.5 * q * ((self.pts - m[k + 1]) ** 2).sum(-1)
        return src

    # -- residual ----------------------------------------------------------------

    def residual(self, U, check=True):
        """Scaled residual F(U) (length n_unknowns) and the parts (res_h, res_f)."""
        phi, rho, m = self.unpack(U)
        if check and not np.all(np.isfinite(phi[self.nt])):
            bad = np.flatnonzero(~np.isfinite(phi[self.nt]))
            raise NonFiniteError(
                f"terminal condition g(x, rho_T) is not finite at {bad.size} node(s), first at x = {self.pts[bad[0]]} "
                f"(rho_T = {rho[self.nt, bad[0]]:.3g}); for a KL terminal rho_T must stay > 0")
        src = self.source(rho, m)
        if check and not np.all(np.isfinite(src)):
            k = int(np.flatnonzero(~np.all(np.isfinite(src), axis=1))[0])
            raise NonFiniteError(f"running cost + coupling f is not finite at time level {k} (t = {self.t[k]:.4g})")
        res_h = np.empty((self.nt, self.N))
        res_f = np.empty((self.nt, self.N))
        K.coupled_residual(phi, rho, src, self.nbp, self.nbm, self.ih, self.bp, self.bm, self.dt, self.nu, self.lam,
                           res_h, res_f, size=self.nt * self.N)
        if check:
            for name, arr, off in (("HJB", res_h, 0), ("FP", res_f, 1)):
                if not np.all(np.isfinite(arr)):
                    k = int(np.flatnonzero(~np.all(np.isfinite(arr), axis=1))[0])
                    raise NonFiniteError(f"{name} residual is NaN/Inf at time level {k + off} (t = {self.t[k + off]:.4g})")
        F = np.empty(self.n_unknowns)
        Fb = F[: 2 * self.nt * self.N].reshape(self.nt, 2, self.N)
        np.multiply(res_h, self.dt, out=Fb[:, 0])
        np.multiply(res_f, self.dt, out=Fb[:, 1])
        if self.dm:
            F[2 * self.nt * self.N:] = (m[1:] - self.vol * rho[1:] @ self.pts).ravel()
        return F

    # -- Jacobian ----------------------------------------------------------------

    def stencil_jacobian_coo(self, phi, rho):
        """Unscaled COO triplets of the stencil part (kernel output)."""
        E = K.jacobian_entries_per_node(self.d)
        n = self.nt * self.N * E
        rows = np.empty(n, dtype=np.int64)
        cols = np.empty(n, dtype=np.int64)
        vals = np.empty(n)
        K.coupled_jacobian(phi, rho, self.nbp, self.nbm, self.ih, self.bp, self.bm, self.dt, self.nu, self.lam,
                           rows, cols, vals, size=self.nt * self.N)
        return rows, cols, vals

    def jacobian(self, U):
        """∂F/∂U as scipy CSC (scaled like :meth:`residual`)."""
        phi, rho, m = self.unpack(U)
        nt, N, dt = self.nt, self.N, self.dt
        rows, cols, vals = self.stencil_jacobian_coo(phi, rho)
        R, C, V = [rows], [cols], [vals * dt]
        i = np.arange(N)
        last_h = 2 * (nt - 1) * N  # HJB_{nt-1} rows
        last_r = last_h + N  # ρ^{nt} columns
        # HJB_{nt-1} contains -φ^{nt}/Δt with φ^{nt} = g(ρ^{nt}): (scaled) -g'(ρ^{nt})
        gp = self.terminal_derivative(rho[nt])
        if self.log_terminal:
            # chain rule for ψ = log ρ^{nt}: columns of ρ^{nt} times ρ^{nt}
            Rn, Cn = np.concatenate(R), np.concatenate(C)
            Vn = np.concatenate(V)
            sel = (Cn >= last_r) & (Cn < last_r + N)
            Vn[sel] *= rho[nt][Cn[sel] - last_r]
            R, C, V = [Rn], [Cn], [Vn]
            gp = gp * rho[nt]  # = 1 for KL
        if np.any(gp):
            R.append(last_h + i)
            C.append(last_r + i)
            V.append(-gp)
        kind = self.coupling[0]
        if kind == "local":
            kk = np.arange(nt)[:, None]
            fp = np.stack([np.asarray(self.coupling[2](self.pts, rho[k + 1], self.t[k + 1]), dtype=float).reshape(N)
                           for k in range(nt)])
            R.append((2 * kk * N + i).ravel())
            C.append((2 * kk * N + N + i).ravel())
            V.append(-dt * fp.ravel())
        if self.dm:
            d = self.d
            mb = 2 * nt * N
            mcol = lambda k, a: mb + (k - 1) * d + a  # noqa: E731  (m^k_a)
            for k in range(1, nt + 1):
                for a in range(d):
                    # moment row: m^k_a - h^d Σ x_a ρ^k
                    R.append(np.full(N + 1, mcol(k, a)))
                    C.append(np.concatenate([[mcol(k, a)], 2 * (k - 1) * N + N + i]))
                    V.append(np.concatenate([[1.0], -self.vol * self.pts[:, a]]))
            if kind == "lq":
                q = self.coupling[1]
                for k in range(nt):
                    for a in range(d):
                        R.append(2 * k * N + i)
                        C.append(np.full(N, mcol(k + 1, a)))
                        V.append(dt * q * (self.pts[:, a] - m[k + 1, a]))
            if self.terminal[0] == "lq":
                qT = self.terminal[1]
                for a in range(d):
                    R.append(last_h + i)
                    C.append(np.full(N, mcol(nt, a)))
                    V.append(qT * (self.pts[:, a] - m[nt, a]))
        n = self.n_unknowns
        J = sp.csc_matrix((np.concatenate(V), (np.concatenate(R), np.concatenate(C))), shape=(n, n))
        J.eliminate_zeros()
        return J

    @property
    def terminal_coupled_1d(self) -> bool:
        """True when the banded terminal-Schur solver applies: 1D, reflecting walls, no ρ in the
        running cost (HJB meets ρ only through g(ρ^{nt})), no moment unknowns, ρ^{nt} not in log form."""
        return (self.d == 1 and self.grid.boundary == "reflecting" and self.coupling[0] == "none" and self.dm == 0
                and not self.log_terminal and self.N >= 2)

    def jacobian_bands(self, U):
        """The Jacobian of a :attr:`terminal_coupled_1d` system as level blocks.

        Returns (a_band, c_band, ident, gprime): tridiagonal ∂HJB_k/∂φ^k and
        ∂FP_k/∂φ^k as (nt, 3, N) bands (scaled like :meth:`residual`), the
        value of the identity blocks ∂HJB_k/∂φ^{k+1} = ∂FP_k/∂ρ^k, and g'(ρ^{nt})
        (the last HJB row has -g' on the columns of ρ^{nt}). The same matrix as
        :meth:`jacobian`, without assembling it.
        """
        if not self.terminal_coupled_1d:
            raise ValueError("jacobian_bands needs a 1D reflecting grid with the coupling only in the terminal cost")
        phi, rho, _ = self.unpack(U)
        a_band = np.empty((self.nt, 3, self.N))
        c_band = np.empty((self.nt, 3, self.N))
        K.jacobian_bands_1d(phi, rho, self.nbp, self.nbm, self.ih, self.bp, self.bm, self.dt, self.nu, self.lam,
                            a_band, c_band, size=self.nt * self.N)
        return a_band, c_band, K.identity_block_value(self.dt), self.terminal_derivative(rho[self.nt])

    # -- one time level ----------------------------------------------------------

    def level_matrix(self, phi_k, b_parts=None, nu=None):
        """(Ĥ(φ), Δ_hφ, M(φ) = -νΔ_h + L(φ) as CSR) on one level, shapes (N,), (N,), N×N."""
        bp, bm = (self.bp, self.bm) if b_parts is None else b_parts
        nu = self.nu if nu is None else nu
        E = 1 + 2 * self.d
        rows = np.empty(self.N * E, dtype=np.int64)
        cols = np.empty(self.N * E, dtype=np.int64)
        vals = np.empty(self.N * E)
        ham = np.empty(self.N)
        lap = np.empty(self.N)
        K.level_operator(np.ascontiguousarray(phi_k), self.nbp, self.nbm, self.ih, bp, bm, nu, self.lam,
                         ham, lap, rows, cols, vals)
        M = sp.csr_matrix((vals, (rows, cols)), shape=(self.N, self.N))
        return ham, lap, M
