"""The model file: what any generative model (trained anywhere) gives, as one ``.npz``.

Arrays (every one optional except ``t`` and ``meta``; never pickled)::

    t         (K,)               times, in the convention meta["time"]
    meta      JSON string        see below
    samples   (K, N, d)          positions at each time (trajectories when meta["paired"])
    x, y      (nx,), (ny,)       the nodes of the grid the fields below live on (y in 2D)
    rho       (K, nx[, ny])      the model's density
    phi       (K, nx[, ny])      its potential in the pde convention (v = -∇φ/λ), up to a constant per time
    score     (K, nx[, ny], d)   ∇log ρ_t of its own marginals
    velocity  (K, nx[, ny], d)   meta["velocity"]: "flow" (dx/dt of its ODE, the default) or
                                 "control" (v of DESIGN §2: dX = (b + v)dt + √(2ν)dW)

``meta`` keys: ``format`` (``"mfglab.model/1"``), ``time`` (``"generative"``:
t ∈ [0, T] as in DESIGN §2, or ``"noising"``: s = T − t as in score models,
then ``T`` is required), ``paired`` (bool), ``velocity`` (see above),
``name``, ``source`` and anything else (kept in the report).
Written atomically (:func:`pde.io.atomic_path`); a file that cannot be
read (truncated, not a zip, a pickle inside) raises :class:`ModelFileError`
naming the path.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pde.io import read_npz, save_npz

__all__ = ["ModelFile", "ModelFileError", "FORMAT", "FIELDS", "TIME_CONVENTIONS"]

FORMAT = "mfglab.model/1"
FIELDS = ("rho", "phi", "score", "velocity")
TIME_CONVENTIONS = ("generative", "noising")
_KNOWN = {"t", "meta", "samples", "x", "y", *FIELDS}


class ModelFileError(ValueError):
    """A model file that cannot be read or is malformed (the message names the path)."""


@dataclass
class ModelFile:
    """The arrays of a model file and its metadata (see the module docstring)."""

    t: np.ndarray
    meta: dict = field(default_factory=dict)
    samples: np.ndarray | None = None
    axes: tuple | None = None
    rho: np.ndarray | None = None
    phi: np.ndarray | None = None
    score: np.ndarray | None = None
    velocity: np.ndarray | None = None

    def __post_init__(self):
        self.t = np.atleast_1d(np.asarray(self.t, dtype=float))
        self.meta = dict(self.meta)
        self.meta.setdefault("format", FORMAT)
        self.meta.setdefault("time", "generative")
        self.validate()

    @property
    def time(self) -> str:
        return self.meta["time"]

    @property
    def dim(self) -> int | None:
        if self.axes is not None:
            return len(self.axes)
        if self.samples is not None:
            return int(self.samples.shape[-1])
        return None

    def fields(self) -> list:
        return [k for k in FIELDS if getattr(self, k) is not None]

    def validate(self, where: str = "model") -> None:
        """Shapes and conventions; raises ModelFileError naming the bad value and what was expected."""
        K = self.t.size
        if self.t.ndim != 1 or K < 1:
            raise ModelFileError(f"{where}: t has shape {self.t.shape}; expected (K,) with K ≥ 1")
        if not np.all(np.isfinite(self.t)):
            raise ModelFileError(f"{where}: t holds non-finite times {self.t.tolist()}")
        if K > 1 and np.any(np.diff(self.t) == 0):
            raise ModelFileError(f"{where}: t has repeated times {self.t.tolist()}")
        if self.meta["time"] not in TIME_CONVENTIONS:
            raise ModelFileError(f"{where}: meta.time = {self.meta['time']!r}; expected one of {list(TIME_CONVENTIONS)}")
        if self.meta["time"] == "noising":
            T = self.meta.get("T")
            if not isinstance(T, (int, float)) or isinstance(T, bool) or not (math.isfinite(T) and T > 0):
                raise ModelFileError(f"{where}: meta.T = {T!r}; a 'noising' model file needs the horizon T > 0")
        vk = self.meta.get("velocity", "flow")
        if vk not in ("flow", "control"):
            raise ModelFileError(f"{where}: meta.velocity = {vk!r}; expected 'flow' or 'control'")
        if vk == "control" and self.meta["time"] == "noising":
            raise ModelFileError(f"{where}: a control velocity (DESIGN §2) is a generative-time field; "
                                 "give it with time = 'generative' or give the noising flow's dx/ds")
        if self.samples is not None:
            s = np.asarray(self.samples, dtype=float)
            if s.ndim == 2:
                s = s[..., None]
            if s.ndim != 3 or s.shape[0] != K or s.shape[2] not in (1, 2):
                raise ModelFileError(f"{where}: samples have shape {np.shape(self.samples)}; expected (K={K}, N, d) "
                                     "with d = 1 or 2")
            self.samples = s
        grid_fields = self.fields()
        if grid_fields and self.axes is None:
            raise ModelFileError(f"{where}: {grid_fields} are given without their grid; expected x (and y in 2D)")
        if self.axes is not None:
            self.axes = tuple(np.asarray(a, dtype=float) for a in self.axes)
            for j, a in enumerate(self.axes):
                if a.ndim != 1 or a.size < 2 or not np.all(np.diff(a) > 0):
                    raise ModelFileError(f"{where}: axis {'xy'[j]} has shape {a.shape}; expected ≥ 2 increasing nodes")
            d = len(self.axes)
            shape = (K,) + tuple(a.size for a in self.axes)
            for name in grid_fields:
                arr = np.asarray(getattr(self, name), dtype=float)
                want = shape if name in ("rho", "phi") else shape + (d,)
                if arr.shape != want:
                    raise ModelFileError(f"{where}: {name} has shape {arr.shape}; expected {want} "
                                         f"(K, *grid{', d' if name in ('score', 'velocity') else ''})")
                setattr(self, name, arr)
            if self.samples is not None and self.samples.shape[2] != d:
                raise ModelFileError(f"{where}: samples are {self.samples.shape[2]}-D but the grid is {d}-D")

    # -- file ----------------------------------------------------------------

    def save(self, path) -> Path:
        """Write the ``.npz`` atomically."""
        path = Path(path)
        if path.suffix != ".npz":
            raise ModelFileError(f"model file {path}: expected a name ending in .npz")
        arrays = {"t": self.t}
        if self.samples is not None:
            arrays["samples"] = self.samples
        if self.axes is not None:
            arrays["x"] = self.axes[0]
            if len(self.axes) == 2:
                arrays["y"] = self.axes[1]
        for name in self.fields():
            arrays[name] = getattr(self, name)
        return save_npz(path, arrays, self.meta)

    @classmethod
    def load(cls, path) -> "ModelFile":
        """Read a model file (no pickles); errors name the path."""
        path = Path(path)
        if not path.is_file():
            raise ModelFileError(f"{path}: no such model file")
        try:
            arrays = read_npz(path, "the model file")
        except ValueError as exc:
            raise ModelFileError(str(exc)) from None
        files = set(arrays)
        if "t" not in arrays or "meta" not in arrays:
            raise ModelFileError(f"{path}: not an mfglab model file (arrays {sorted(files)}; expected at least t and meta)")
        unknown = sorted(files - _KNOWN)
        if unknown:
            raise ModelFileError(f"{path}: unknown arrays {unknown}; expected among {sorted(_KNOWN)}")
        try:
            meta = json.loads(str(arrays["meta"]))
        except json.JSONDecodeError as exc:
            raise ModelFileError(f"{path}: meta is not JSON ({exc})") from None
        if not isinstance(meta, dict):
            raise ModelFileError(f"{path}: meta is a JSON {type(meta).__name__}; expected an object")
        fmt = meta.get("format", FORMAT)
        if fmt != FORMAT:
            raise ModelFileError(f"{path}: format {fmt!r}; expected {FORMAT!r}")
        axes = None
        if "x" in arrays:
            axes = (arrays["x"], arrays["y"]) if "y" in arrays else (arrays["x"],)
        try:
            return cls(arrays["t"], meta, samples=arrays.get("samples"), axes=axes,
                       **{k: arrays.get(k) for k in FIELDS})
        except ModelFileError as exc:
            raise ModelFileError(str(exc).replace("model:", f"{path}:", 1)) from None
