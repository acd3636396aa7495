"""Neural generative flows as MFG solvers (PyTorch): OT-Flow, FFJORD, score models, neural WGF, direct lq,
flow matching (I-CFM, OT-CFM, SB-CFM, rectified flow) for bridges.

Public API::

    neural.MODELS                         # name -> model class
    neural.train(problem, model="otflow", steps=..., seed=..., device=None, dtype="float32",
                 out_dir=None, resume=True, progress=True, **hparams) -> TrainResult
    neural.evaluate_on_grid(result_or_model, problem=None, n=None, nt=None) -> pde.MFGSolution
    neural.load(checkpoint_path) -> TrainResult
    neural.trajectories(result, x0, nt) -> (nt+1, N, d)

See docs/neural.md.
"""

from .evaluate import evaluate_on_grid, trajectories
from .laws import LQExactPotential, TorchMixture, ou_mixture_score
from .models import (FFJORD, ICFM, MODELS, OTCFM, SBCFM, RectifiedFlow, HJBScoreModel, NeuralLQ, NeuralModel, NeuralWGF, OTFlow, ScoreModel, get_model,
                     lq_hjb_residual, score_hjb_residual)
from .nets import MLPField, PotentialNet
from .train import (CheckpointError, NonFiniteLossError, TrainResult, load, load_checkpoint, resolve_device,
                    resolve_dtype, train)

__all__ = [
    "MODELS", "train", "TrainResult", "evaluate_on_grid", "load", "load_checkpoint", "trajectories",
    "resolve_device", "resolve_dtype", "CheckpointError", "NonFiniteLossError", "get_model",
    "NeuralModel", "OTFlow", "FFJORD", "ScoreModel", "HJBScoreModel", "NeuralWGF", "PotentialNet", "MLPField",
    "ICFM", "OTCFM", "SBCFM", "RectifiedFlow", "TorchMixture", "ou_mixture_score", "score_hjb_residual", "NeuralLQ", "lq_hjb_residual", "LQExactPotential",
]
