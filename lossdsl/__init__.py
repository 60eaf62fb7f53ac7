"""lossdsl: a small language and compiler for machine-learning loss functions.

    import lossdsl
    L = lossdsl.compile("huber(y, p, 1.0) + 0.1*l1(w)", target="parallel")
    v, g = L.value_and_grad(("p", "w"), y=y, p=p, w=w)

The pipeline, one module per stage: ``parse`` (Lark grammar → syntax tree) → ``resolve``
(names, imports, inlining → expression graph, ``ir``) → ``shapes`` (axes once inputs are
bound) → ``diff`` (gradients, diagonal Hessians) → ``simplify`` / ``stabilize`` (algebra,
stable forms) → ``schedule`` (fused passes) → ``codegen`` (Numba CPU / CUDA source) →
``cache`` (on-disk modules) → ``api`` (this interface).
"""

from .api import CompiledLoss, Library, Loss, compile, load
from .decisions import decide
from .errors import (
    LossArityError,
    LossDomainError,
    LossError,
    LossNameError,
    LossShapeError,
    LossSyntaxError,
)
from .plotting import plot

__version__ = "0.1.0"

__all__ = [
    "CompiledLoss",
    "Library",
    "Loss",
    "LossArityError",
    "LossDomainError",
    "LossError",
    "LossNameError",
    "LossShapeError",
    "LossSyntaxError",
    "compile",
    "decide",
    "load",
    "plot",
    "__version__",
]
