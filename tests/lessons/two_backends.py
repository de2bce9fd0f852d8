"""Helpers shared by the lesson checks that run one formula on NumPy / autograd and on torch."""
import warnings

import autograd
import autograd.numpy as anp
import numpy as np
import torch

BACKENDS = ("numpy", "torch")


def rng(seed):
    return np.random.default_rng(seed)


def on(backend, a):
    """A NumPy array as the backend's array (torch: the same float64 / int64 values as a tensor)."""
    return torch.from_numpy(np.ascontiguousarray(a)) if backend == "torch" else a


def host(a):
    return a.detach().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def grads(backend, f, args, wrt):
    """The gradients of sum(f(*args)) with respect to args[i] for i in wrt, as NumPy arrays
    (an argument the output does not depend on gets zeros): by autograd or by torch's backward."""
    if backend == "numpy":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")          # autograd warns when an output ignores an input
            return [np.asarray(autograd.grad(lambda *a: anp.sum(f(*a)), i)(*args)) for i in wrt]
    ts = [torch.tensor(a, dtype=torch.float64, requires_grad=i in wrt) for i, a in enumerate(args)]
    gs = torch.autograd.grad(f(*ts).sum(), [ts[i] for i in wrt], allow_unused=True)
    return [np.zeros_like(np.asarray(args[i], dtype=np.float64)) if g is None else g.numpy() for i, g in zip(wrt, gs)]
