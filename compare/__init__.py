"""Verification of generative models against the lab's ground truth: cases, metrics, reports, any model.

``compare.Model`` (callables or a torch module) and ``compare.ModelFile`` (the model file) describe a
model trained anywhere; ``compare.comparison.run_compare`` (``mfglab compare``) measures it.
"""

from .model import Model, ModelFile, ModelFileError

__all__ = ["Model", "ModelFile", "ModelFileError"]
