"""lossdsl: a small language and compiler for machine-learning loss functions.

    import lossdsl
    L = lossdsl.compile("huber(y, p, 1.0) + 0.1*l1(w)", target="parallel")
    v, g = L.value_and_grad(("p", "w"), y=y, p=p, w=w)

The pipeline, one subpackage per layer (see docs/architecture.md): ``frontend`` (Lark
grammar → syntax tree → names, imports, inlining → expression graph, ``ir``) → ``passes``
(``shapes``: axes once inputs are bound; ``diff``: gradients, diagonal Hessians; rewrite
phases canonicalize / stabilize / expand; ``schedule``: fused loops) → ``backend`` (Numba CPU
and CUDA source, the ``jax.numpy`` printer) → ``cache`` (on-disk modules) → ``api`` (this
interface). Every primitive is one record in ``ops``; ``compiler`` puts the stages in order
and ``binding`` turns call-time inputs into kernel arguments. The integrations (``xgboost``,
``torch``, ...) and the command line sit beside the compiler at the top level.
"""

from . import numba_environment  # noqa: F401 -- before anything imports Numba
from ._version import __version__
from .api import CompiledLoss, Library, Loss, compile, load
from .decisions import decide
from .errors import (
    LossArityError,
    LossAttributeError,
    LossDomainError,
    LossError,
    LossNameError,
    LossShapeError,
    LossSyntaxError,
    NoFiniteOptimumError,
)
from .plotting import plot

__all__ = [
    "CompiledLoss",
    "Library",
    "Loss",
    "LossArityError",
    "LossAttributeError",
    "LossDomainError",
    "LossError",
    "LossNameError",
    "LossShapeError",
    "LossSyntaxError",
    "NoFiniteOptimumError",
    "compile",
    "decide",
    "load",
    "plot",
    "__version__",
]
