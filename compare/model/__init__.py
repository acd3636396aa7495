"""Any generative model against the lab's truth: the model file, callable adapters, derivations.

- :class:`ModelFile` (``file.py``): the ``.npz`` model file (README "File formats").
- :class:`Model` (``adapters.py``): callables on NumPy arrays; :meth:`Model.from_torch`
  (``torch_adapter.py``) with exact divergences; :meth:`Model.from_file`.
- :func:`derive` (``derive.py``): the model's density, control, samples and paths on the
  truth's grid, with how each was obtained (``characteristics.py``: RK4 backward
  characteristics, paths, grid fields as callables).
"""

from .adapters import Model, ModelCallError
from .derive import Derived, derive
from .export import model_file_from_solution
from .file import FORMAT, ModelFile, ModelFileError

__all__ = ["Model", "ModelCallError", "ModelFile", "ModelFileError", "FORMAT", "derive", "Derived", "model_file_from_solution"]
