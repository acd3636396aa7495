"""Mesh generators (meshes/): sizes, refinement, geometry, read-back by DOLFINx."""

from __future__ import annotations

import math

import numpy as np
import pytest

import meshes
from meshes.generate import obstacle_geometry

gmsh = pytest.importorskip("gmsh")


def test_refinement_sequence_and_size_checks():
    assert meshes.refinement(0.4, 3) == [0.4, 0.2, 0.1]
    for bad in (0, -1.0, math.nan, math.inf, True, "0.1"):
        with pytest.raises(ValueError, match="mesh size"):
            meshes.check_size(bad)
    with pytest.raises(ValueError, match="levels"):
        meshes.refinement(0.4, 0)


def test_obstacle_geometry_must_fit(tmp_path):
    with pytest.raises(ValueError, match="strictly inside"):
        meshes.obstacle(((-1, 1), (-1, 1)), (0.9, 0.0), 0.5, 0.2, tmp_path / "o.msh")
    with pytest.raises(ValueError, match="unknown mesh"):
        meshes.build("hexagon", ((-1, 1), (-1, 1)), 0.5, tmp_path)
    with pytest.raises(ValueError, match="1D"):
        meshes.build("disc", ((-1, 1),), 0.5, tmp_path)


@pytest.mark.dolfinx
@pytest.mark.parametrize("kind", ["rectangle", "disc", "obstacle"])
def test_generated_meshes_read_back_with_the_right_area(kind, tmp_path):
    from pde.fe import _dolfinx_adapter as A
    from pde.fe.operators import P1Operators

    dom = ((-6.0, 6.0), (-6.0, 6.0))
    areas, cells = [], []
    for h in meshes.refinement(1.0, 3):
        path = meshes.build(kind, dom, h, tmp_path)
        assert path.suffix == ".msh" and path.exists()
        assert meshes.build(kind, dom, h, tmp_path) == path  # cached by (kind, domain, h)
        msh = A.read_mesh(path, A.MPI.COMM_WORLD, gdim=2)
        ops = P1Operators(A.p1_space(msh), A.MPI.COMM_WORLD, 2)
        areas.append(ops.total_volume)
        cells.append(msh.topology.index_map(2).size_local)
    exact = {"rectangle": 144.0, "disc": math.pi * 36.0, "obstacle": 144.0 - math.pi * obstacle_geometry(dom)[1] ** 2}[kind]
    err = np.abs(np.array(areas) - exact)
    if kind == "rectangle":
        assert err.max() < 1e-10  # straight walls: the area is exact
    else:
        # polygonal approximation of a circle: area error O(h²)
        assert err[-1] < err[0] / 8 and err[-1] / exact < 2e-3, err
    ratio = np.array(cells[1:]) / np.array(cells[:-1])
    assert np.all((ratio > 3.0) & (ratio < 5.5))  # halving h quadruples the cells in 2D


@pytest.mark.dolfinx
def test_interval_mesh(tmp_path):
    from pde.fe import _dolfinx_adapter as A

    path = meshes.build("interval", ((-2.0, 3.0),), 0.25, tmp_path)
    msh = A.read_mesh(path, A.MPI.COMM_WORLD, gdim=1)
    assert msh.topology.index_map(1).size_local == 20
    x = msh.geometry.x[:, 0]
    assert x.min() == pytest.approx(-2.0) and x.max() == pytest.approx(3.0)
