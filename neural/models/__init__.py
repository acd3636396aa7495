"""The neural generative flows of the lab, each an optimal-control solver of an MFG.

- :mod:`.base`: :class:`NeuralModel`, the interface every model offers;
- :mod:`.flows`: OT-Flow and FFJORD (otflow problems);
- :mod:`.score`: the score models, plain and HJB-regularised (sgm);
- :mod:`.wgf`: the JKO chain of OT-Flow blocks (wgf);
- :mod:`.flowmatch`: flow matching (I-CFM, OT-CFM, SB-CFM, rectified flow; bridge problems);
- :mod:`.lq`: the direct method for the linear-quadratic game (lq);
- :mod:`.residuals`: the HJB residuals used as losses;
- :mod:`.registry`: the one name → model table, with each model's training defaults.
"""

from .base import NeuralModel
from .flows import FFJORD, OTFlow, potential_flow, potential_flow_reference
from .flowmatch import ICFM, OTCFM, SBCFM, RectifiedFlow
from .lq import NeuralLQ
from .registry import MODELS, REGISTRY, ModelSpec, get_model, model_names, model_spec, register_model
from .residuals import lq_hjb_residual, score_hjb_residual
from .score import HJBScoreModel, ScoreModel
from .wgf import NeuralWGF

# training defaults: batch size and Adam learning rate
register_model(OTFlow, batch=1024, lr=2e-2)
register_model(FFJORD, batch=1024, lr=5e-3)
register_model(ScoreModel, batch=1024, lr=2e-3)
register_model(HJBScoreModel, batch=1024, lr=2e-3)
register_model(NeuralWGF, batch=1024, lr=2e-2)
register_model(NeuralLQ, batch=256, lr=1e-2)
register_model(ICFM, batch=256, lr=2e-3)
register_model(OTCFM, batch=256, lr=2e-3)
register_model(SBCFM, batch=256, lr=2e-3)
register_model(RectifiedFlow, batch=256, lr=2e-3)

__all__ = ["NeuralModel", "OTFlow", "FFJORD", "ScoreModel", "HJBScoreModel", "NeuralWGF", "NeuralLQ", "ICFM", "OTCFM", "SBCFM", "RectifiedFlow", "MODELS",
           "REGISTRY", "ModelSpec", "register_model", "model_spec", "model_names", "score_hjb_residual",
           "lq_hjb_residual", "get_model", "potential_flow", "potential_flow_reference"]
