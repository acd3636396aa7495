"""One model registry: training, the cases and the CLI read the same table, defaults included."""

from __future__ import annotations

from pathlib import Path

import pytest

import neural
from neural.models import REGISTRY, model_spec, register_model


def test_every_registered_model_carries_training_defaults():
    assert set(REGISTRY) == set(neural.MODELS) == {"otflow", "ffjord", "sgm", "hjb-sgm", "wgf", "lq", "cfm", "ot-cfm",
                                                  "sb-cfm", "rectified"}
    for name, spec in REGISTRY.items():
        assert spec.cls.name == name and spec.batch >= 1 and spec.lr > 0
    with pytest.raises(ValueError, match=r"unknown model 'nope'; expected one of \['cfm'"):
        model_spec("nope")


def test_a_model_registered_once_is_known_to_cases_and_the_cli():
    from compare import cases
    from compare.cli import build_parser

    class Toy(neural.OTFlow):
        name = "toy-flow"

    register_model(Toy, batch=7, lr=0.5)
    try:
        assert "toy-flow" in cases.MODELS
        args = build_parser().parse_args(["train", "p.toml", "--model", "toy-flow", "--out", "x"])
        assert args.model == "toy-flow"
        assert model_spec("toy-flow").batch == 7
    finally:
        REGISTRY.pop("toy-flow")
        neural.MODELS.pop("toy-flow")
    assert "toy-flow" not in cases.MODELS


def test_train_uses_the_registry_defaults():
    import pde

    prob = pde.load_problem(Path(__file__).resolve().parents[1] / "examples" / "lq_mixture_1d.toml")
    res = neural.train(prob, "lq", steps=1, progress=False, width=8, nsteps=4)
    assert res.train_config["batch"] == model_spec("lq").batch == 256
    assert res.train_config["lr"] == model_spec("lq").lr
