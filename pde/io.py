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

A key the file's family does not use (``nu`` or ``lam`` for sgm and wgf,
``beta`` outside sgm, ``q``/``qT`` outside lq, ``tau`` outside wgf,
``reference`` outside otflow and wgf) is an error naming the key, the
family and the keys it takes: a value that would be dropped is never
accepted silently. Text from a file is never evaluated.
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

__all__ = ["load_problem", "problem_from_dict", "problem_to_dict", "atomic_write", "atomic_path", "default_mode", "json_default", "save_npz", "read_npz",
           "FILE_FAMILIES"]

FILE_FAMILIES = ("otflow", "sgm", "wgf", "lq", "bridge")

_COMMON = {"family", "T", "domain", "boundary", "name", "data", "grid", "fe"}
#: the parameters each family reads (wgf fixes nu = lam = 1; sgm sets nu, lam from beta)
_FAMILY_KEYS = {
    "otflow": {"nu", "lam", "reference"},
    "sgm": {"beta"},
    "wgf": {"tau", "reference"},
    "lq": {"nu", "lam", "q", "qT"},
    "bridge": {"nu", "lam", "target"},
}
_PARAMETERS = set().union(*_FAMILY_KEYS.values())


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
    allowed = _COMMON | _FAMILY_KEYS[family]
    ignored = sorted((set(spec) - allowed) & _PARAMETERS)
    if ignored:
        raise ProblemFileError(
            f"{where}: key(s) {ignored} are not parameters of family {family!r}, which would ignore them; "
            f"its parameters are {sorted(_FAMILY_KEYS[family])} (valid keys: {sorted(allowed)})")
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
    reference = law("reference") if "reference" in spec else None
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


def problem_to_dict(problem: MFGProblem) -> dict | None:
    """The problem-file dict that rebuilds ``problem`` (:func:`problem_from_dict` inverts it).

    None for custom problems and for laws without a file form; the result is
    checked by rebuilding the problem and comparing fingerprints.
    """
    if problem.family not in FILE_FAMILIES:
        return None
    try:
        spec = {"family": problem.family, "name": problem.name, "T": problem.T,
                "domain": [list(d) for d in problem.domain], "boundary": problem.boundary,
                "data": problem.data.to_dict(), "grid": {"n": list(problem.n), "nt": problem.nt}}
        if problem.family in ("otflow", "wgf"):
            spec["reference"] = problem.reference.to_dict()
        if problem.family == "otflow":
            spec.update(nu=problem.nu, lam=problem.lam)
        elif problem.family == "sgm":
            spec["beta"] = float(problem.params["beta"])
        elif problem.family == "wgf":
            spec["tau"] = float(problem.params["tau"])
        elif problem.family == "bridge":
            spec.update(nu=problem.nu, lam=problem.lam, target=problem.target.to_dict())
        elif problem.family == "lq":
            spec.update(nu=problem.nu, lam=problem.lam, q=problem.params["q"], qT=problem.params["qT"])
        if "fe" in problem.params:
            spec["fe"] = dict(problem.params["fe"])
        rebuilt = problem_from_dict(spec, where="problem_to_dict")
    except (NotImplementedError, ValueError, TypeError, AttributeError):
        return None
    return spec if rebuilt.fingerprint() == problem.fingerprint() else None


def load_problem(path, overrides: Mapping | None = None) -> MFGProblem:
    """Read a TOML problem file (see the module docstring for the format)."""
    path = Path(path)
    if not path.exists():
        raise ProblemFileError(f"{path}: no such problem file")
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise ProblemFileError(f"{path}: cannot read the problem file ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProblemFileError(f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                               "expected a UTF-8 TOML problem file") from None
    try:
        spec = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProblemFileError(f"{path}: not valid TOML: {exc}") from None
    return problem_from_dict(spec, where=str(path), overrides=overrides)


# --------------------------------------------------------------------------
# JSON of metadata
# --------------------------------------------------------------------------


def json_default(o):
    """``json.dumps(default=...)`` for the project's metadata: NumPy arrays and scalars, paths, mappings.

    A non-finite NumPy float becomes None (null), as strict JSON requires; NumPy bools become bools;
    anything else unknown is written as its repr.
    """
    import math

    import numpy as np

    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.floating):
        v = float(o)
        return v if math.isfinite(v) else None
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, Mapping):
        return dict(o)
    return repr(o)


# --------------------------------------------------------------------------
# atomic writes
# --------------------------------------------------------------------------


def save_npz(path, arrays: Mapping, meta: Mapping) -> Path:
    """Write ``arrays`` and ``meta`` (as a JSON string array ``meta``) to ``path`` atomically.

    Compressed, never pickled; nothing half-written is left at ``path`` (:func:`atomic_path`).
    """
    import json

    import numpy as np

    out = dict(arrays)
    out["meta"] = np.array(json.dumps(dict(meta), default=json_default, sort_keys=True))
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **out)
    return Path(path)


def read_npz(path, what: str) -> dict:
    """Every array of an ``.npz`` file, read without pickles (``meta`` stays the JSON string array).

    Raises ValueError naming ``path`` and ``what`` ("solution file", "model file") when the file is
    truncated, not an ``.npz``, or holds pickled objects.
    """
    import zipfile
    import zlib

    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k]) for k in z.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise ValueError(f"{path}: cannot read {what}, truncated or not an .npz ({type(exc).__name__}: {exc})") from None
    return arrays


def default_mode(directory: bool = False) -> int:
    """The permissions a new file (0o666) or folder (0o777) gets under this process's umask.

    ``tempfile.mkstemp``/``mkdtemp`` create 0600/0700 entries; outputs renamed into place from
    them are given these instead, so that a report is as readable as any other file written here.
    """
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


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
    os.chmod(tmp, default_mode())  # mkstemp makes 0600; the file gets the permissions open() would give it
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
