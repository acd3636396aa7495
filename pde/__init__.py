"""mfglab ground truth: problems, grids, closed forms, FD and FE solvers.

``import pde`` needs only NumPy and SciPy: the Numba kernels (``pde.fd``)
and DOLFINx (``pde.fe``) load when a method that needs them is called.
"""

from .distributions import Checkerboard, Distribution, Gaussian, GaussianMixture, Ring, eight_gaussians, make_toy
from .exact import closed_form, solve_exact
from .grid import Grid
from .io import ProblemFileError, atomic_path, atomic_write, load_problem, problem_from_dict, problem_to_dict
from .problem import FAMILIES, MFGProblem, bridge, custom, lq, make_problem, otflow, sgm, wgf
from .solution import MFGSolution
from .solve import METHODS, register_method, solve

__all__ = [
    "Checkerboard", "Distribution", "Gaussian", "GaussianMixture", "Ring", "eight_gaussians", "make_toy",
    "closed_form", "solve_exact", "Grid", "ProblemFileError", "atomic_path", "atomic_write", "load_problem",
    "problem_from_dict", "problem_to_dict", "FAMILIES", "MFGProblem", "bridge", "custom", "lq", "make_problem", "otflow", "sgm", "wgf",
    "MFGSolution", "METHODS", "register_method", "solve",
]
__version__ = "0.1.0"
