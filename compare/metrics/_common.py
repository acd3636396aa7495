"""Helpers shared by the metric modules: floors, unit-mass normalisation, time selection, series."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

SCHEMA = "mfglab.metrics/2"
#: region where potentials, scores and residuals are compared: ρ_truth > floor · max ρ_truth
DEFAULT_FLOOR = 1e-3
#: KL floor relative to the largest density value
DEFAULT_KL_FLOOR = 1e-10


def _vol(axes: Sequence[np.ndarray]) -> float:
    return float(np.prod([a[1] - a[0] for a in axes]))


def _unit(p: np.ndarray, vol: float, label: str) -> np.ndarray:
    """Clip negatives (round-off of a solver) and normalise to unit mass."""
    p = np.clip(np.asarray(p, dtype=float), 0.0, None)
    m = p.sum() * vol
    if not (m > 0 and np.isfinite(m)):
        raise ValueError(f"{label} has total mass {m}; expected a positive finite number")
    return p / m


def _mesh_points(axes) -> np.ndarray:
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


def _region(p: np.ndarray, floor: float) -> np.ndarray:
    return p > floor * np.max(p)


def _finite(v):
    """JSON-ready float: NaN/inf become None."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


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
        if not math.isfinite(float(s)):
            raise ValueError(f"time {s} is not a finite number; expected a time in [{t[0]}, {t[-1]}]")
        k = int(np.argmin(np.abs(t - s)))
        if abs(t[k] - s) > 0.5 * dt + 1e-12 * max(1.0, abs(t[-1])):
            raise ValueError(f"time {s} is outside the solution's time range [{t[0]}, {t[-1]}]")
        if k not in idx:
            idx.append(k)
    idx = np.asarray(sorted(idx))
    return idx, t[idx]


def series(times, values, description: str, reasons: dict | None = None) -> dict:
    """A metric's time series: ``{"t", "values", "description"[, "reasons"]}``.

    ``values`` may hold None (or NaN) at some times; each such time must then
    have an entry in ``reasons`` ({time as text: why}), so a missing value is
    never silent. A NaN without a given reason gets "not a finite number".
    """
    vals = [_finite(v) for v in values]
    why = {}
    for s, v, raw in zip(times, vals, values):
        key = f"{float(s):.6g}"
        if v is None:
            r = (reasons or {}).get(key)
            if r is None:
                r = "not a finite number" if raw is not None else "not computed"
            why[key] = r
    out = {"t": [float(s) for s in times], "values": vals, "description": description}
    if why:
        out["reasons"] = why
    return out


def time_key(s: float) -> str:
    """The text key of a time in a series' ``reasons``."""
    return f"{float(s):.6g}"
