"""A model evaluated on a grid (an MFGSolution, e.g. from ``neural.evaluate_on_grid``) as a model file.

``mfglab train`` and ``mfglab verify`` write ``DIR/model.npz`` with this, so
``mfglab compare CASE --model DIR/model.npz`` measures exactly what
``verify`` measured: the grid arrays are stored as they are (ρ, φ, the score
and the control velocity in the pde convention) and the trajectories as
paired samples at the grid's time levels.
"""

from __future__ import annotations

import numpy as np

from pde.solution import MFGSolution

from .file import ModelFile

__all__ = ["model_file_from_solution"]


def model_file_from_solution(sol: MFGSolution, paths: np.ndarray | None = None, meta: dict | None = None) -> ModelFile:
    """The model file of a model on a grid (generative time, ``velocity`` = the control of DESIGN §2).

    Args:
        sol: the model on the grid (NaN arrays, such as the potential of a
            free-form flow, are left out of the file).
        paths: trajectories (nt+1, N, d) at ``sol.t`` (stored as paired samples).
        meta: further metadata (name, source, seed, …).
    """
    m = {"time": "generative", "velocity": "control", "paired": paths is not None,
         "name": sol.meta.get("model") or sol.meta.get("method"), "source": sol.meta.get("method")}
    m.update(meta or {})
    fields = {}
    for name, arr in (("rho", sol.rho), ("phi", sol.phi), ("score", sol.extras.get("score")),
                      ("velocity", sol.extras.get("velocity"))):
        if arr is not None and not np.all(np.isnan(arr)):
            fields[name] = np.asarray(arr, dtype=float)
    if paths is not None:
        paths = np.asarray(paths, dtype=float)
        if paths.shape[0] != sol.t.size:
            raise ValueError(f"paths have {paths.shape[0]} time levels; expected {sol.t.size} (the grid's)")
    return ModelFile(sol.t, m, samples=paths, axes=sol.axes, **fields)
