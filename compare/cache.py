"""A cache of ground-truth solutions keyed by a hash of problem, grid, method and options.

``cached_solve(problem, method, cache_dir)`` returns the stored solution when
one with the same key exists (so an interrupted ``verify`` resumes without
solving again) and otherwise solves and stores it atomically
(:meth:`pde.solution.MFGSolution.save`). The key is

    sha256(problem.fingerprint(), method, grid (domain, n, nt, T, boundary), options)[:16]

and is also written into the solution's ``meta["cache_key"]``, which is
checked on load. ``custom`` problems hold Python callables with no stable
text, so they are solved without caching (the result says so).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import pde
from pde.problem import MFGProblem
from pde.solution import MFGSolution

__all__ = ["cache_key", "cached_solve", "CachedSolution"]


def cache_key(problem: MFGProblem, method: str, options: Mapping | None = None) -> str:
    """16 hex digits identifying (problem, grid, method, options)."""
    payload = {
        "problem": problem.fingerprint(),
        "method": method,
        "grid": problem.grid().to_dict(),
        "options": {k: repr(v) for k, v in sorted((options or {}).items())},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class CachedSolution:
    """The solution, where it is stored (None when not cached) and whether it came from the cache."""

    solution: MFGSolution
    path: Path | None
    hit: bool
    key: str | None


def cached_solve(problem: MFGProblem, method: str, cache_dir, solve: Callable = pde.solve, refresh: bool = False,
                 **options) -> CachedSolution:
    """Solve ``problem`` with ``method`` unless the cache already holds the result.

    Args:
        problem: the problem (its default grid is the grid solved on).
        method: a method of :func:`pde.solve`.
        cache_dir: folder of ``.npz`` solution files (created if missing).
        solve: ``solve(problem, method, **options)``.
        refresh: solve again and overwrite the stored file.
        **options: solver options (part of the key).
    """
    if problem.family == "custom":
        return CachedSolution(solve(problem, method, **options), None, False, None)
    key = cache_key(problem, method, options)
    label = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in (problem.name or problem.family))
    path = Path(cache_dir) / f"{label}-{method}-{key}.npz"
    if path.exists() and not refresh:
        try:
            sol = MFGSolution.load(path)
            if sol.meta.get("cache_key") == key:
                return CachedSolution(sol, path, True, key)
        except ValueError:
            pass  # unreadable or foreign file: solve again and replace it atomically
    sol = solve(problem, method, **options)
    sol.meta = {**sol.meta, "cache_key": key}
    sol.save(path)
    return CachedSolution(sol, path, False, key)
