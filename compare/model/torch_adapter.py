"""Torch modules as :class:`compare.Model` callables, with exact derivatives by the forward Jacobian.

``module(x (N, d), t (N,))`` is called on the module's own device and
dtype, in batches; the Jacobian of each point's output with respect to its
input comes from ``torch.func.jacfwd`` under ``torch.func.vmap`` (d forward
passes per batch, no nested autograd), so divergences, gradients and
Laplacians are exact up to floating point.
"""

from __future__ import annotations

import numpy as np

__all__ = ["torch_model"]


def _device_dtype(module):
    import torch

    for p in list(module.parameters()) + list(module.buffers()):
        return p.device, p.dtype
    return torch.device("cpu"), torch.get_default_dtype()


def torch_model(cls, module, kind: str, batch: int = 8192, device=None, dtype=None, **kw):
    """Build a :class:`compare.Model` from a torch module (see :meth:`compare.Model.from_torch`).

    ``device``/``dtype`` default to those of the module's first parameter or
    buffer (torch's default dtype on the CPU for a module without any).
    """
    import torch
    from torch.func import jacfwd, vmap

    if kind not in ("velocity", "score", "potential"):
        raise ValueError(f"kind={kind!r}; expected 'velocity', 'score' or 'potential'")
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module (got {type(module).__name__})")
    dev0, dt0 = _device_dtype(module)
    device = torch.device(device) if device is not None else dev0
    dtype = dtype if dtype is not None else dt0
    module.eval()

    def single(x, t):
        out = module(x[None], t[None])
        return out.reshape(-1) if kind != "potential" else out.reshape(())

    def batched(fn, x, t, width):
        x = np.asarray(x, dtype=float)
        out = np.empty((x.shape[0],) + width)
        tv = np.broadcast_to(np.asarray(t, dtype=float), (x.shape[0],))
        for a in range(0, x.shape[0], batch):
            xb = torch.as_tensor(x[a:a + batch], dtype=dtype, device=device)
            tb = torch.tensor(tv[a:a + batch], dtype=dtype, device=device)
            with torch.no_grad():
                out[a:a + batch] = fn(xb, tb).detach().cpu().numpy().reshape((xb.shape[0],) + width)
        return out

    def single_aux(x, t):
        y = single(x, t)
        return y, y

    jac = vmap(jacfwd(single_aux, argnums=0, has_aux=True))
    last = {}  # the value computed with the last divergence, reused by the next value call at the same (x, t)

    def value(x, t):
        if last and last["x"] is x and np.array_equal(last["t"], t):
            return last["v"]
        d = np.shape(x)[1]
        return batched(lambda xb, tb: module(xb, tb), x, t, () if kind == "potential" else (d,))

    def divergence(x, t):
        d = np.shape(x)[1]
        vals = np.empty((np.shape(x)[0], d))
        pos = [0]

        def div_and_keep(xb, tb):
            J, y = jac(xb, tb)
            n = xb.shape[0]
            vals[pos[0]:pos[0] + n] = y.detach().cpu().numpy().reshape(n, d)
            pos[0] += n
            return torch.diagonal(J, dim1=-2, dim2=-1).sum(-1)

        out = batched(div_and_keep, x, t, ())
        last.update(x=x, t=np.array(t, copy=True), v=vals)
        return out

    divergence.how = "exact (torch forward Jacobian)"
    name = kw.pop("name", None) or type(module).__name__
    if kind == "potential":
        grad1 = jacfwd(single, argnums=0)
        hess = vmap(jacfwd(grad1, argnums=0))

        def grad(x, t):
            d = np.shape(x)[1]
            return batched(lambda xb, tb: vmap(grad1)(xb, tb), x, t, (d,))

        def lap(x, t):
            return batched(lambda xb, tb: torch.diagonal(hess(xb, tb), dim1=-2, dim2=-1).sum(-1), x, t, ())

        return cls(potential=value, potential_grad=grad, potential_laplacian=lap, name=name,
                   source=kw.pop("source", "torch module"), exact_divergence=True, **kw)
    return cls(**{kind: value}, divergence=divergence, name=name, source=kw.pop("source", "torch module"),
               exact_divergence=True, **kw)
