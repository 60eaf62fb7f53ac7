"""The primitive registry: one :class:`Op` record per operation the compiler implements.

Importing the package registers every family (``arith``, ``compare``, ``transcendental``,
``logistic``, ``special``, ``structural``, ``scans``); the passes and printers read the
records through the functions below (see :mod:`lossdsl.ops.registry`), and
:mod:`lossdsl.ops.primitives` keeps the name tables the frontend and the simplifier use.
"""

# the structural records first: they register "const", which the other families' partial
# rules build at import time
from . import structural  # noqa: F401

# isort: split
from . import arith, compare, logistic, scans, special, transcendental  # noqa: F401
from .registry import (
    NOTATION,
    VECTOR_MATH,
    Helper,
    Op,
    find,
    get,
    helper,
    helper_closure,
    helper_source,
    helpers,
    kernel_math_calls,
    operations,
    reference_from_helper,
    register,
    register_helper,
    vectorisable,
)

__all__ = [
    "NOTATION", "VECTOR_MATH", "Helper", "Op", "find", "get", "helper", "helper_closure",
    "helper_source", "helpers", "kernel_math_calls", "operations", "reference_from_helper",
    "register", "register_helper", "vectorisable",
]
