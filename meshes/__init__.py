"""Mesh generation for the finite-element solver (see :mod:`meshes.generate`)."""

from .generate import KINDS, build, check_size, disc, interval, obstacle, rectangle, refinement

__all__ = ["KINDS", "build", "check_size", "disc", "interval", "obstacle", "rectangle", "refinement"]
