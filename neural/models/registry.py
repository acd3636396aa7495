"""The one registry of neural models: name → class, with the training defaults each model carries.

Training (:func:`neural.train`), the verification cases (:mod:`compare.cases`)
and the CLI (``mfglab train --model``) all read this table, so a model
registered once is known everywhere. An unknown name lists the valid ones.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ModelSpec", "REGISTRY", "MODELS", "register_model", "get_model", "model_spec", "model_names"]


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its class and its default batch size and Adam learning rate."""

    name: str
    cls: type
    batch: int
    lr: float


#: name -> :class:`ModelSpec`
REGISTRY: dict[str, ModelSpec] = {}
#: name -> model class (the view most callers need)
MODELS: dict[str, type] = {}


def register_model(cls: type, *, batch: int, lr: float, name: str | None = None) -> type:
    """Register ``cls`` under ``name`` (default ``cls.name``) with its training defaults."""
    name = name or cls.name
    if not (isinstance(batch, int) and batch >= 1 and lr > 0):
        raise ValueError(f"model {name!r}: batch={batch!r}, lr={lr!r}; expected batch >= 1 and lr > 0")
    REGISTRY[name] = ModelSpec(name, cls, int(batch), float(lr))
    MODELS[name] = cls
    return cls


def model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` registered under ``name``; an unknown name lists the valid ones."""
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(REGISTRY)}")
    return REGISTRY[name]


def get_model(name: str) -> type:
    """The model class registered under ``name``; an unknown name lists the valid ones."""
    return model_spec(name).cls


def model_names() -> tuple:
    """The registered names, in registration order."""
    return tuple(REGISTRY)
