"""One comparison of any model with a truth: ``mfglab compare``.

:func:`run_compare` takes a model (a :class:`compare.Model`, a model file,
or ``module.py:factory``), a truth (a named case's route, solved and cached
as in ``verify``, or a solution file with its problem file), derives what
the model implies on the truth's grid (:func:`compare.model.derive`),
measures it (:func:`compare.metrics.evaluate`) and writes the same report
folder as ``verify``, with a section saying which metric came from what.

``module.py:factory`` imports the file and calls ``factory()`` (or
``factory(problem)`` when it takes an argument), which must return a
:class:`compare.Model`. This runs the user's code: it happens only when a
user names the module on the command line or in Python, never from a
problem or model file.
"""

from __future__ import annotations

import importlib.util
import inspect
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pde.problem import MFGProblem
from pde.solution import MFGSolution

from .metrics import evaluate, select_times
from .model import Model, ModelCallError, ModelFile, derive
from .report import Section, markdown_table, write_report

__all__ = ["run_compare", "load_model", "CompareResult", "derivation_section"]


@dataclass
class CompareResult:
    """Where the report went, what it measured, and how the model's quantities were obtained."""

    out_dir: Path | None
    metrics: dict
    derivation: dict
    not_derived: dict
    wall_time_s: float


def load_model(spec, problem: MFGProblem | None = None) -> Model:
    """A :class:`Model` from a Model, a :class:`ModelFile`, a ``.npz`` path or ``"module.py:factory"``.

    The last form imports and runs the named Python file (the user's choice).
    """
    if isinstance(spec, Model):
        return spec
    if isinstance(spec, ModelFile):
        return Model.from_file(spec)
    text = str(spec)
    if text.endswith(".npz"):
        return Model.from_file(Path(text))
    if ":" in text and text.rsplit(":", 1)[0].endswith(".py"):
        path, factory = text.rsplit(":", 1)
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"--model {text}: no such Python file {path}")
        if not factory.isidentifier():
            raise ValueError(f"--model {text}: {factory!r} is not a Python name; expected module.py:factory")
        mod_spec = importlib.util.spec_from_file_location(f"mfglab_user_model_{path.stem}", path)
        module = importlib.util.module_from_spec(mod_spec)
        try:
            mod_spec.loader.exec_module(module)
        except Exception as exc:  # the user's code: one line naming it, not a traceback
            raise ModelCallError(f"--model {text}: importing {path} raised {type(exc).__name__}: {exc}") from None
        fn = getattr(module, factory, None)
        if not callable(fn):
            raise ValueError(f"--model {text}: {path} has no callable {factory!r}")
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        try:
            out = fn(problem) if params else fn()
        except Exception as exc:
            raise ModelCallError(f"--model {text}: {factory}() raised {type(exc).__name__}: {exc}") from None
        if isinstance(out, ModelFile):
            out = Model.from_file(out)
        if not isinstance(out, Model):
            raise ValueError(f"--model {text}: {factory}() returned {type(out).__name__}; expected a compare.Model")
        out.source = out.source or text
        return out
    raise ValueError(f"--model {text}: expected a model file (.npz) or module.py:factory")


def _sample_times_on_levels(m: Model, truth: MFGSolution, T: float) -> list:
    """A samples-only model file is measured at its own times that are time levels of the truth."""
    tg = T - m.file.t if m.file.time == "noising" else m.file.t
    tol = 1e-9 * max(1.0, T)
    on = sorted(float(truth.t[np.argmin(np.abs(truth.t - s))]) for s in tg if np.min(np.abs(truth.t - s)) <= tol)
    if not on:
        dt = float(truth.t[1] - truth.t[0]) if truth.t.size > 1 else T
        raise ValueError(f"the model's sample times {sorted(map(float, tg))} are not time levels of the truth "
                         f"(every {dt:.6g} in [0, {T:.6g}]); give samples at those levels or pass times")
    return on


def derivation_section(model: Model, derived, skipped: dict) -> Section:
    """The report section stating what the model gave and which metric came from what."""
    rows = [[k, v] for k, v in derived.derivation.items()]
    rows += [[k, f"not derived: {v}"] for k, v in derived.not_derived.items()]
    md = [f"The model gave: {', '.join(f'`{g}`' for g in model.given()) or 'nothing'} "
          f"(time convention `{model.time}`).", "",
          markdown_table(["quantity", "how it was obtained"], rows), "",
          "Density metrics (L1, TV, Hellinger, KL, grid W₂, mass) use `rho`; sample metrics use `samples`; "
          "path metrics use `paths`; kinetic energy and the non-gradient fraction use `control` (or −∇φ/λ); "
          "the potential error and HJB residual use `phi`; the score error uses `score` (or ∇log ρ)."]
    if skipped:
        md += ["", "Not computed: " + "; ".join(f"`{k}` ({v})" for k, v in skipped.items()) + "."]
    return Section("Derivation", "\n".join(md), data={"given": model.given(), "derivation": derived.derivation,
                                                      "not_derived": derived.not_derived})


def run_compare(model, out_dir=None, *, case=None, problem: MFGProblem | None = None,
                truth: MFGSolution | None = None, truth_method: str | None = None, n=None, nt: int | None = None,
                times=None, steps: int = 32, n_samples: int = 2000, seed: int = 0, force: bool = False,
                work_dir=None, animation: bool = True, truth_error: bool = True, truth_cache=None) -> CompareResult:
    """Compare ``model`` with a truth and write a report folder (``out_dir``; None: no report).

    Args:
        model: a :class:`Model`, a :class:`ModelFile`, a ``.npz`` path or ``"module.py:factory"``.
        case: a case name (the truth is its route ``truth_method``, cached in ``work_dir``).
        problem, truth: instead of a case, the problem and its solution.
        n, nt: grid overrides of the case.
        times: measurement times (default 5 evenly spread, 0 and T included).
        steps: RK4 steps over [0, T] of the characteristics and paths.
        n_samples: particles moved by the model's velocity when it gives no samples.
        seed: seeds those particles and the truth samples of the sample metrics.
        force: replace an existing report folder.
        work_dir: truth cache (default ``OUT.work`` beside the report).
        animation: put the truth-vs-model animation in the report.
        truth_error: with a case, estimate the truth's own error (second route or coarser grid).
        truth_cache: folder of the truth cache (default ``work_dir/truth``), shareable between runs.
    """
    t0 = time.perf_counter()
    out = Path(out_dir).resolve() if out_dir is not None else None
    if out is not None and out.exists() and not force:
        raise FileExistsError(f"{out} exists; choose another folder or pass force=True (--force) to replace it")
    c = None
    truth_note = ""
    terr = None
    if case is not None:
        from .cache import cached_solve
        from .cases import get_case
        from .verify import default_work_dir

        c = get_case(case)
        method = truth_method or c.primary_truth
        if method not in c.truth:
            raise ValueError(f"case {c.name}: truth route {method!r}; expected one of {list(c.truth)}")
        problem = c.problem(n=n, nt=nt)
        work = Path(work_dir) if work_dir is not None else (default_work_dir(out) if out is not None else None)
        cache_dir = Path(truth_cache) if truth_cache is not None else (work / "truth" if work is not None else None)
        if cache_dir is None:
            import pde

            truth = pde.solve(problem, method, **c.options_for(method))
        else:
            truth = cached_solve(problem, method, cache_dir, **c.options_for(method)).solution
        truth_note = f"`{method}` on the grid {list(problem.n)} × nt = {problem.nt}"
    elif problem is None or truth is None:
        raise ValueError("give a case, or both the problem and its truth solution")
    else:
        if truth.dim != problem.dim:
            raise ValueError(f"the truth is {truth.dim}-D but the problem is {problem.dim}-D")
        if abs(float(truth.t[-1]) - problem.T) > 1e-9 * max(1.0, problem.T):
            raise ValueError(f"the truth ends at t = {truth.t[-1]:.6g} but the problem's T = {problem.T:.6g}")
        method = truth.meta.get("method", "?")
        truth_note = f"`{method}` solution file on the grid {[a.size for a in truth.axes]} × nt = {truth.t.size - 1}"
    m = load_model(model, problem)
    if times is None and m.file is not None and m.file.samples is not None and not m.file.fields():
        times = _sample_times_on_levels(m, truth, float(problem.T))
    _, tsel = select_times(truth.t, times)
    try:
        der = derive(m, truth, problem, tsel, steps=steps, n_samples=n_samples, seed=seed)
    except ValueError as exc:  # name the model (its file) in the one-line error
        label = str(model) if isinstance(model, (str, Path)) else (m.name or "model")
        raise ValueError(f"{label}: {exc}") from None
    if der.samples is not None:
        off = [t for t in der.samples if np.min(np.abs(tsel - t)) > 1e-9 * max(1.0, problem.T)]
        if off and not der.paths:
            der.not_derived["samples_not_measured"] = (f"the model's samples at t = {sorted(off)} are not at a "
                                                       f"measured time {[float(x) for x in tsel]}")
    res = evaluate(truth, der.solution, problem, times=tsel, samples=der.samples, paths=der.paths, seed=seed)
    if c is not None and truth_error and out is not None:
        from .trutherror import attach_truth_error, truth_error_estimate

        terr = truth_error_estimate(c, problem, method, truth, tsel, work_dir=work, cache_dir=cache_dir)
        attach_truth_error(res, terr)
    if out is not None:
        sec = derivation_section(m, der, res["skipped"])
        paths = der.paths[1] if der.paths is not None else None
        name = m.name or "model"
        notes = (f"Truth: {truth_note}. Model: `{name}`"
                 + (f" from {m.source}" if m.source else "") + f"; seed {seed}, {steps} RK4 steps over [0, T].")
        write_report(out, title=f"{c.name if c else (problem.name or problem.family)}: {name} vs {method} truth",
                     case=c, truth=truth, model=der.solution, metrics=res, trajectories=paths, force=force,
                     seed=seed, problem=problem, notes=notes, extra_sections=[sec], animation=animation,
                     extra_provenance={"model_source": m.source, "model_given": m.given()})
    return CompareResult(out, res, der.derivation, der.not_derived, time.perf_counter() - t0)
