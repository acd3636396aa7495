"""Mesh generators (gmsh Python API) for the finite-element solver.

Each generator writes a gmsh ``.msh`` file (read back by DOLFINx through
:func:`pde.fe._dolfinx_adapter.read_mesh`) with one physical group for the
cells (tag 1) and one for the boundary (tag 2), and returns its path:

- :func:`interval` — [lo, hi], cells of size h (1D);
- :func:`rectangle` — an unstructured triangulation of the box [x0, x1] × [y0, y1];
- :func:`disc` — the disc of a centre and radius;
- :func:`obstacle` — the box minus a circular hole (reflecting walls all round).

Triangles come from gmsh's Frontal-Delaunay algorithm: a Delaunay mesh has
opposite-angle sums ≤ π on interior edges, so almost all off-diagonal entries
of the P1 stiffness matrix are ≤ 0 (an M-matrix), which the monotone FE
scheme relies on; the solver counts and reports the exceptions.

:func:`refinement` gives the sizes of a refinement sequence, :func:`build`
generates a named mesh for a problem domain (cached by name, domain and h).

Nothing here needs DOLFINx; gmsh is imported when a mesh is generated.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from pathlib import Path

__all__ = ["interval", "rectangle", "disc", "obstacle", "refinement", "build", "KINDS", "obstacle_geometry",
           "disc_geometry", "check_size"]

#: mesh names a problem file may use in ``[fe] mesh = ...`` ("box" is DOLFINx's structured mesh)
KINDS = ("box", "rectangle", "disc", "obstacle")


def check_size(h) -> float:
    """A mesh size must be a finite number > 0."""
    if isinstance(h, bool) or not isinstance(h, (int, float)) or not math.isfinite(h) or h <= 0:
        raise ValueError(f"mesh size h={h!r}; expected a finite number > 0")
    return float(h)


def refinement(h0: float, levels: int, factor: float = 2.0) -> list[float]:
    """Mesh sizes h0, h0/factor, ..., for a convergence study (``levels`` sizes)."""
    check_size(h0)
    if levels < 1:
        raise ValueError(f"levels={levels}; expected at least 1")
    if not factor > 1:
        raise ValueError(f"factor={factor}; expected > 1")
    return [h0 / factor**k for k in range(levels)]


class _Gmsh:
    """gmsh session that is always finalised and writes atomically."""

    def __init__(self, name: str, h: float):
        self.name, self.h = name, h

    def __enter__(self):
        try:
            import gmsh
        except ImportError as exc:  # pragma: no cover
            raise ImportError("mesh generation needs gmsh's Python API (apt python3-gmsh or pip/conda gmsh)") from exc
        self.gmsh = gmsh
        gmsh.initialize()
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.model.add(self.name)
        return gmsh

    def finish(self, dim: int, path: Path) -> Path:
        g = self.gmsh
        g.model.occ.synchronize()
        ents = g.model.getEntities(dim)
        g.model.addPhysicalGroup(dim, [e[1] for e in ents], 1)
        bnd = g.model.getBoundary(ents, oriented=False, combined=True)
        g.model.addPhysicalGroup(dim - 1, [abs(e[1]) for e in bnd], 2)
        g.option.setNumber("Mesh.MeshSizeMin", self.h)
        g.option.setNumber("Mesh.MeshSizeMax", self.h)
        g.option.setNumber("Mesh.Algorithm", 6)  # Frontal-Delaunay: well-shaped triangles
        g.model.mesh.generate(dim)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".msh", dir=path.parent)
        os.close(fd)
        try:
            g.write(tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    def __exit__(self, *exc):
        self.gmsh.finalize()
        return False


def interval(lo: float, hi: float, h: float, path) -> Path:
    """Mesh of [lo, hi] with cells of size ≈ h."""
    h = check_size(h)
    if not hi > lo:
        raise ValueError(f"interval [{lo}, {hi}] is empty; expected lo < hi")
    s = _Gmsh("interval", h)
    with s as g:
        p0 = g.model.occ.addPoint(lo, 0, 0)
        p1 = g.model.occ.addPoint(hi, 0, 0)
        g.model.occ.addLine(p0, p1)
        return s.finish(1, path)


def rectangle(domain, h: float, path) -> Path:
    """Unstructured triangle mesh of the box ``domain`` = ((x0, x1), (y0, y1))."""
    h = check_size(h)
    (x0, x1), (y0, y1) = domain
    s = _Gmsh("rectangle", h)
    with s as g:
        g.model.occ.addRectangle(x0, y0, 0, x1 - x0, y1 - y0)
        return s.finish(2, path)


def disc(center, radius: float, h: float, path) -> Path:
    """Triangle mesh of the disc |x - center| < radius."""
    h = check_size(h)
    if not radius > 0:
        raise ValueError(f"disc radius={radius}; expected > 0")
    s = _Gmsh("disc", h)
    with s as g:
        g.model.occ.addDisk(center[0], center[1], 0, radius, radius)
        return s.finish(2, path)


def obstacle(domain, center, radius: float, h: float, path) -> Path:
    """Triangle mesh of the box ``domain`` minus the disc |x - center| ≤ radius."""
    h = check_size(h)
    (x0, x1), (y0, y1) = domain
    cx, cy = center
    if not (radius > 0 and x0 < cx - radius and cx + radius < x1 and y0 < cy - radius and cy + radius < y1):
        raise ValueError(f"obstacle disc (centre {tuple(center)}, radius {radius}) must lie strictly inside the box {domain}")
    s = _Gmsh("obstacle", h)
    with s as g:
        box = g.model.occ.addRectangle(x0, y0, 0, x1 - x0, y1 - y0)
        hole = g.model.occ.addDisk(cx, cy, 0, radius, radius)
        g.model.occ.cut([(2, box)], [(2, hole)])
        return s.finish(2, path)


def disc_geometry(domain):
    """The named "disc" of a box: inscribed, centred (centre, radius)."""
    (x0, x1), (y0, y1) = domain
    return ((x0 + x1) / 2, (y0 + y1) / 2), min(x1 - x0, y1 - y0) / 2


def obstacle_geometry(domain):
    """The named "obstacle" of a box: a hole of radius min(width)/12 at the box centre."""
    (x0, x1), (y0, y1) = domain
    return ((x0 + x1) / 2, (y0 + y1) / 2), min(x1 - x0, y1 - y0) / 12


def build(kind: str, domain, h: float, folder=None) -> Path:
    """Generate (or reuse) the named mesh ``kind`` for a problem box ``domain``.

    ``kind`` is "rectangle", "disc" or "obstacle" (2D) or "interval" (1D);
    files are cached in ``folder`` (default: a ``mfglab-meshes`` folder in the
    temporary directory) under a name made of kind, domain and h.
    """
    h = check_size(h)
    dom = tuple(tuple(float(v) for v in d) for d in domain)
    tag = hashlib.sha1(repr((kind, dom, h)).encode()).hexdigest()[:12]
    folder = Path(folder) if folder is not None else Path(tempfile.gettempdir()) / "mfglab-meshes"
    path = folder / f"{kind}-h{h:.4g}-{tag}.msh"
    if path.exists():
        return path
    if len(dom) == 1:
        if kind not in ("interval", "rectangle", "box"):
            raise ValueError(f"mesh {kind!r} is 2D but the domain {dom} is 1D; expected 'box' or 'interval'")
        return interval(dom[0][0], dom[0][1], h, path)
    if kind == "rectangle":
        return rectangle(dom, h, path)
    if kind == "disc":
        c, r = disc_geometry(dom)
        return disc(c, r, h, path)
    if kind == "obstacle":
        c, r = obstacle_geometry(dom)
        return obstacle(dom, c, r, h, path)
    raise ValueError(f"unknown mesh {kind!r}; expected one of {list(KINDS)} or a path to a .msh/.xdmf file")
