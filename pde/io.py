"""Problem files (TOML) and atomic file writes.

A problem file holds one problem (see README, "Problem file")::

    family = "otflow"            # otflow | sgm | wgf | lq | bridge
    T = 1.0
    domain = [[-6.0, 6.0]]       # one [lo, hi] per dimension
    boundary = "reflecting"      # or "periodic"
    nu = 0.0
    lam = 1.0
    beta = 1.0                   # sgm
    q = 1.0                      # lq
    qT = 1.0                     # lq
    tau = 0.1                    # wgf: JKO step (default T/10)
    name = "my-case"             # optional label
    [data]  ...                  # a law (gaussian_mixture or a 2D toy)
    [reference] ...              # γ for otflow, π for wgf; default N(0, I)
    [target] ...                 # bridge: ρ₁, the prescribed law at t = T
    [grid]
    n = [400]
    nt = 200
    [fe]                         # optional: finite-element options
    mesh = "box"                 # box | disc | obstacle | path to a mesh file
    h = 0.1

Keys a family does not use are accepted only where they are harmless
defaults; unknown keys are an error naming the key and the file.
Text from a file is never evaluated.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .distributions import from_dict
from .problem import MFGProblem, bridge, lq, otflow, sgm, wgf

__all__ = ["load_problem", "problem_from_dict", "atomic_write", "atomic_path", "FILE_FAMILIES"]

FILE_FAMILIES = ("otflow", "sgm", "wgf", "lq", "bridge")

_COMMON = {"family", "T", "domain", "boundary", "name", "data", "grid", "fe"}
_FAMILY_KEYS = {
    "otflow": {"nu", "lam", "reference"},
    "sgm": {"beta"},
    "wgf": {"tau", "reference", "lam", "nu"},
    "lq": {"nu", "lam", "q", "qT"},
    "bridge": {"nu", "lam", "target"},
}
# keys of the documented core that a family ignores (accepted so one template
# serves all families; they are recorded as ignored in the metadata)
_CORE = {"nu", "lam", "beta", "q", "qT", "reference"}


class ProblemFileError(ValueError):
    """A problem file that cannot be read; the message names file and key."""


def _type_check(where: str, key: str, value: Any, kinds, what: str):
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise ProblemFileError(f"{where}: key {key!r} = {value!r}; expected {what}")
    return value


def problem_from_dict(spec: Mapping, where: str = "<dict>", overrides: Mapping | None = None) -> MFGProblem:
    """Build an :class:`MFGProblem` from a parsed problem file.

    Args:
        spec: the TOML content as a dict.
        where: a label for error messages (the file name).
        overrides: grid overrides ``{"n": [..], "nt": ..}`` (e.g. from the CLI).
    """
    spec = dict(spec)
    family = spec.get("family")
    if family is None:
        raise ProblemFileError(f"{where}: missing key 'family' (expected one of {list(FILE_FAMILIES)})")
    if family not in FILE_FAMILIES:
        raise ProblemFileError(
            f"{where}: key 'family' = {family!r}; expected one of {list(FILE_FAMILIES)} "
            "('custom' problems are built in Python, never from text)"
        )
    allowed = _COMMON | _FAMILY_KEYS[family] | _CORE
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ProblemFileError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(allowed)}")
    for key in ("T", "domain", "data"):
        if key not in spec:
            raise ProblemFileError(f"{where}: missing key {key!r}")
    num = (int, float)
    T = _type_check(where, "T", spec["T"], num, "a number > 0")
    domain = spec["domain"]
    if not (isinstance(domain, list) and domain and all(isinstance(r, list) and len(r) == 2 for r in domain)):
        raise ProblemFileError(f"{where}: key 'domain' = {domain!r}; expected a list of [lo, hi] pairs, e.g. [[-6.0, 6.0]]")
    boundary = spec.get("boundary", "reflecting")
    _type_check(where, "boundary", boundary, str, "'reflecting' or 'periodic'")

    def law(key: str):
        table = spec[key]
        if not isinstance(table, dict):
            raise ProblemFileError(f"{where}: [{key}] must be a table with a 'kind' key")
        try:
            return from_dict(table, where=f"{where}: [{key}]")
        except (ValueError, TypeError) as exc:
            raise ProblemFileError(str(exc)) from None

    data = law("data")
    reference = law("reference") if "reference" in spec and family in ("otflow", "wgf") else None
    if family == "bridge" and "target" not in spec:
        raise ProblemFileError(f"{where}: missing table [target] (the bridge's law ρ₁ at t = T)")
    target = law("target") if family == "bridge" else None
    grid = spec.get("grid", {})
    if not isinstance(grid, dict):
        raise ProblemFileError(f"{where}: [grid] must be a table with keys n, nt")
    bad = sorted(set(grid) - {"n", "nt"})
    if bad:
        raise ProblemFileError(f"{where}: unknown key(s) {bad} in [grid]; expected n, nt")
    grid = {**grid, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    n = grid.get("n")
    if n is not None:
        if isinstance(n, int) and not isinstance(n, bool):
            n = [n] * len(domain)
        if not (isinstance(n, list) and all(isinstance(k, int) and not isinstance(k, bool) for k in n)):
            raise ProblemFileError(f"{where}: key 'grid.n' = {n!r}; expected a list of integers, one per dimension")
    nt = grid.get("nt", 100)
    _type_check(where, "grid.nt", nt, int, "an integer >= 1")
    kw = dict(domain=domain, T=T, boundary=boundary, n=n, nt=nt, name=spec.get("name", ""))
    for key in ("nu", "lam", "beta", "q", "qT", "tau"):
        if key in spec:
            _type_check(where, key, spec[key], num, "a number")
    try:
        if family == "otflow":
            prob = otflow(data, nu=spec.get("nu", 0.0), lam=spec.get("lam", 1.0), reference=reference, **kw)
        elif family == "sgm":
            prob = sgm(data, beta=spec.get("beta", 1.0), **kw)
        elif family == "wgf":
            prob = wgf(data, tau=spec.get("tau"), reference=reference, **kw)
        elif family == "bridge":
            prob = bridge(data, target, nu=spec.get("nu", 0.0), lam=spec.get("lam", 1.0), **kw)
        else:
            prob = lq(data, q=spec.get("q", 1.0), qT=spec.get("qT", 1.0), nu=spec.get("nu", 0.0),
                      lam=spec.get("lam", 1.0), **kw)
    except (ValueError, TypeError) as exc:
        raise ProblemFileError(f"{where}: {exc}") from None
    fe = spec.get("fe")
    if fe is not None:
        if not isinstance(fe, dict):
            raise ProblemFileError(f"{where}: [fe] must be a table (keys mesh, h)")
        bad = sorted(set(fe) - {"mesh", "h"})
        if bad:
            raise ProblemFileError(f"{where}: unknown key(s) {bad} in [fe]; expected mesh, h")
        if "h" in fe:
            h = fe["h"]
            if isinstance(h, bool) or not isinstance(h, num) or not h > 0:
                raise ProblemFileError(f"{where}: key 'fe.h' = {h!r}; expected a mesh size > 0")
        if "mesh" in fe and not isinstance(fe["mesh"], str):
            raise ProblemFileError(f"{where}: key 'fe.mesh' = {fe['mesh']!r}; expected a name or a file path")
        prob = prob.replace(params={**prob.params, "fe": dict(fe)})
    return prob


def load_problem(path, overrides: Mapping | None = None) -> MFGProblem:
    """Read a TOML problem file (see the module docstring for the format)."""
    path = Path(path)
    if not path.exists():
        raise ProblemFileError(f"{path}: no such problem file")
    try:
        with open(path, "rb") as fh:
            spec = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ProblemFileError(f"{path}: not valid TOML: {exc}") from None
    return problem_from_dict(spec, where=str(path), overrides=overrides)


# --------------------------------------------------------------------------
# atomic writes
# --------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place on success.

    Nothing half-written is ever left at ``path``: on an exception the
    temporary file is removed and ``path`` keeps its old content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix if suffix is not None else path.suffix or ".tmp",
                               dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write(path, data: bytes | str) -> Path:
    """Write bytes or text to ``path`` atomically."""
    with atomic_path(path) as tmp:
        mode = "wb" if isinstance(data, bytes) else "w"
        with open(tmp, mode) as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)
