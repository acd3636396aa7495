"""A cache of ground-truth solutions keyed by a hash of problem, grid, method and options.

``cached_solve(problem, method, cache_dir)`` returns the stored solution when
one with the same key exists (so an interrupted ``verify`` resumes without
solving again) and otherwise solves and stores it atomically
(:meth:`pde.solution.MFGSolution.save`). The key is

    sha256(problem.fingerprint(), method, grid (domain, n, nt, T, boundary), options)[:16]

and is also written into the solution's ``meta["cache_key"]``, which is
checked on load. ``custom`` problems hold Python callables with no stable
text, so they are solved without caching (the result says so).

Concurrent writers (the rows of ``mfglab sweep`` run by several processes or
MPI ranks on one cache folder): each entry is guarded by an exclusive
``flock`` on ``ENTRY.npz.lock``. The first process to take it solves and
stores the entry (atomically: a temporary file renamed into place); the
others wait on the lock, then find the entry and load it, so no two processes
write one entry and no reader ever sees a partial file. The lock is released
by the kernel if its holder dies (kill -9), and the next one solves.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import pde
from pde.problem import MFGProblem
from pde.solution import MFGSolution

__all__ = ["cache_key", "cached_solve", "CachedSolution", "entry_lock"]


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
    hit = None if refresh else _load(path, key)  # the common case: no lock needed to read a complete entry
    if hit is not None:
        return CachedSolution(hit, path, True, key)
    with entry_lock(path):
        hit = None if refresh else _load(path, key)  # another process may have stored it while we waited
        if hit is not None:
            return CachedSolution(hit, path, True, key)
        sol = solve(problem, method, **options)
        sol.meta = {**sol.meta, "cache_key": key}
        sol.save(path)
    return CachedSolution(sol, path, False, key)


def _load(path: Path, key: str) -> MFGSolution | None:
    if not path.exists():
        return None
    try:
        sol = MFGSolution.load(path)
    except ValueError:
        return None  # unreadable or foreign file: solve again and replace it atomically
    return sol if sol.meta.get("cache_key") == key else None


@contextlib.contextmanager
def entry_lock(path):
    """An exclusive inter-process lock on the cache entry ``path`` (``flock`` on ``path.lock``).

    Where ``fcntl`` is missing (Windows) it is a no-op: the entry is still written atomically,
    but two processes may then solve it both.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    lock = Path(str(path) + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
