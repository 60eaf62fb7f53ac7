"""The primitive registry: one :class:`Op` record per operation the compiler implements.

A record holds everything the compiler knows about one primitive, so that adding an operation
is one entry in one family module (``arith``, ``compare``, ``transcendental``, ``logistic``,
``special``, ``structural``) instead of a method in each of ten passes and printers:

* ``reference``  the NumPy implementation (float64 arrays in, float64 array out), the
  semantics every backend is compared with and what constant folding computes,
* ``partials``   the derivative rule, next to the value it differentiates (as JAX's
  ``lax.py`` or PyTensor's ``GammaLn`` keep them): ``partials(build, n, *args, wanted=...)``
  returns one derivative node per argument (or None where ``wanted`` is False); ``build(op,
  *args)`` is the compiler's canonicalising node constructor, passed in so that this package
  does not import the passes,
* ``kernel``     the Numba-Python expression: a format string over the arguments' names
  (``"math.exp({0})"``), a :class:`Helper` (a scalar function emitted into the module once
  and called), or a callable ``(printer, n, *args) -> str`` for the rare operation whose text
  depends on its node (``pow``'s constant exponents); ``cuda`` overrides it for CUDA kernels,
* ``latex``      a LaTeX function name (``r"\\psi"``), a template over the arguments' LaTeX
  (``r"\\sqrt{{{0}}}"``), or :data:`NOTATION`: operator notation that depends on the
  arguments' precedence, which :class:`lossdsl.latex.LatexPrinter` writes itself,
* ``torch``/``jax`` the spellings of the benchmark's PyTorch interpreter (a function of the
  ``torch`` module returning the callable) and of the ``jax.numpy`` printer (a format string
  over the arguments' names, or a callable ``(n, *args) -> str`` as for ``kernel``),
* ``lowered``    True where the lowering pass rewrites the operation into others before code
  generation (it then has no kernel of its own),
* traits: ``commutative`` (the simplifier may order its arguments), ``vectorisable`` (a CPU
  loop calling it can be SIMD-vectorised: its kernel text reaches only the vectorisable
  ``exp``/``log`` family of the CPU ``math``), ``differentiable`` (False with
  ``no_derivative`` saying why).

The special functions' algorithms are written once, as their helper's source; the NumPy
reference runs that same source with ``T = numpy.float64`` (:func:`reference_from_helper`),
so the interpreter and the kernels cannot disagree.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..ir.node import OPERATION_NAMES
from .scalar_math import PYTHON_MATH, UNCHECKED_MATH

KINDS = ("elementwise", "row", "reduce", "scan", "leaf", "gather", "count", "macro")

#: ``Op.latex`` for operators whose LaTeX depends on their arguments' precedence (infix
#: arithmetic, relations, cases): :class:`lossdsl.latex.LatexPrinter` has a method for each.
NOTATION = "notation"

# The ``math`` functions the CPU kernels get in SIMD-vectorisable form (backend/cpu/libm.py
# imports them from vector_math) or that LLVM vectorises itself (sqrt, floor).
VECTOR_MATH = frozenset({"exp", "expm1", "log", "log1p", "tanh", "sqrt", "floor"})

_HELPER_CALL = re.compile(r"\bh_(\w+)\(")
_MATH_CALL = re.compile(r"\bmath\.(\w+)\(")


@dataclass(frozen=True)
class Helper:
    """A scalar function emitted into generated modules when used: ``h_<name>``.

    ``source`` is Numba-Python over the dtype ``T`` and ``math`` (``"\\ndef h_<name>(...):
    ..."``); the helpers it calls (``h_other(``) are found in the text and emitted with it.
    """

    name: str
    source: str

    def __post_init__(self):
        if f"def h_{self.name}(" not in self.source:
            raise ValueError(f"helper {self.name!r} does not define h_{self.name}")

    @property
    def calls(self) -> tuple[str, ...]:
        """The other helpers its source calls."""
        return tuple(sorted({name for name in _HELPER_CALL.findall(self.source)
                             if name != self.name}))

    @property
    def math_calls(self) -> frozenset[str]:
        """The ``math`` functions its source calls."""
        return frozenset(_MATH_CALL.findall(self.source))


Kernel = str | Helper | Callable[..., str]


@dataclass(frozen=True)
class Op:
    """Everything the compiler knows about one primitive (see the module docstring)."""

    name: str
    arity: int
    kind: str = "elementwise"
    doc: str = ""
    reference: Callable[..., Any] | None = None
    partials: Callable[..., list] | None = None
    differentiable: bool = True
    no_derivative: str = ""
    kernel: Kernel | None = None
    cuda: Kernel | None = None
    #: rewritten into other primitives by the lowering pass before code generation: no kernel
    lowered: bool = False
    latex: str | None = None
    torch: Callable[[Any], Callable[..., Any]] | None = None
    jax: str | Callable[..., str] | None = None
    commutative: bool = False
    vectorisable: bool = True
    #: the name a loss text calls it by, or None for operators (``+``, ``<``) and internals
    callable_as: str | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: unknown kind {self.kind!r}")

    def kernel_for(self, target: str) -> Kernel | None:
        """The kernel template for ``target`` ("cpu" or "cuda")."""
        if target == "cuda" and self.cuda is not None:
            return self.cuda
        return self.kernel


_OPS: dict[str, Op] = {}
_HELPERS: dict[str, Helper] = {}


def register(*ops: Op) -> None:
    """Add operations to the registry (each name once)."""
    for op in ops:
        if op.name in _OPS:
            raise ValueError(f"operation {op.name!r} is registered twice")
        _OPS[op.name] = op
        OPERATION_NAMES.add(op.name)
        for kernel in (op.kernel, op.cuda):
            if isinstance(kernel, Helper):
                register_helper(kernel)


def register_helper(helper: Helper) -> Helper:
    """Add a helper (one that no operation prints directly, such as ``ndtr_tail``, or an
    operation's own); registering the same helper twice is harmless."""
    known = _HELPERS.get(helper.name)
    if known is not None and known != helper:
        raise ValueError(f"two different helpers are named {helper.name!r}")
    _HELPERS[helper.name] = helper
    return helper


def get(name: str) -> Op:
    """The record of operation ``name`` (KeyError if there is none)."""
    return _OPS[name]


def find(name: str) -> Op | None:
    """The record of operation ``name``, or None."""
    return _OPS.get(name)


def operations(kind: str | None = None) -> Iterator[Op]:
    """Every registered operation (of ``kind``), in registration order."""
    return (op for op in _OPS.values() if kind is None or op.kind == kind)


def helper(name: str) -> Helper:
    """The helper ``h_<name>``."""
    return _HELPERS[name]


def helpers() -> dict[str, Helper]:
    """Every registered helper by name."""
    return dict(_HELPERS)


def helper_closure(name: str) -> set[str]:
    """``name`` and every helper it calls, directly or not."""
    found, stack = set(), [name]
    while stack:
        current = stack.pop()
        if current not in found:
            found.add(current)
            stack.extend(_HELPERS[current].calls)
    return found


def helper_source(name: str) -> str:
    """The Numba-Python source of helper ``h_<name>``."""
    return _HELPERS[name].source


def kernel_math_calls(op: Op) -> frozenset[str]:
    """The ``math`` functions the kernel text of ``op`` reaches, its helpers' included."""
    kernel = op.kernel
    if isinstance(kernel, Helper):
        calls: set[str] = set()
        for name in helper_closure(kernel.name):
            calls |= _HELPERS[name].math_calls
        return frozenset(calls)
    if isinstance(kernel, str):
        return frozenset(_MATH_CALL.findall(kernel))
    return frozenset()


def vectorisable(op_name: str) -> bool:
    """Whether a CPU loop that computes ``op_name`` can still be SIMD-vectorised."""
    op = _OPS.get(op_name)
    return op is None or op.vectorisable


def _compiled_helper(helper_: Helper, T: type, math_module: Any) -> Callable[..., Any]:
    """``h_<name>`` of ``helper_`` (and the helpers it calls) as a Python function over ``T``
    and ``math_module``."""
    namespace: dict[str, Any] = {"T": T, "math": math_module}
    for name in sorted(helper_closure(helper_.name)):
        # the helper text is lossdsl's own source, not user text
        exec(compile(helper(name).source, f"<h_{name}>", "exec"), namespace)  # noqa: S102
    return namespace[f"h_{helper_.name}"]


def reference_from_helper(helper_: Helper) -> Callable[..., np.ndarray]:
    """The NumPy reference of a helper: its own source run element by element, so that
    reference and kernel are one algorithm.

    Each element runs first on Python floats and Python's ``math`` (fast); where that raises
    (``math.log(0.0)``, ``1.0 / 0.0``, ``math.floor(nan)``), it runs again on ``numpy.float64``
    with the IEEE ``math`` of :mod:`lossdsl.ops.scalar_math`, which gives the inf or NaN a
    kernel computes."""
    register_helper(helper_)
    fast = _compiled_helper(helper_, float, PYTHON_MATH)
    ieee = _compiled_helper(helper_, np.float64, UNCHECKED_MATH)

    def element(*xs: float) -> float:
        try:
            return fast(*xs)
        except (ArithmeticError, ValueError):
            return float(ieee(*map(np.float64, xs)))

    def apply(*xs):
        arrays = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in xs))
        # Python floats from tolist(): the fast path does no conversions
        columns = [array.ravel().tolist() for array in arrays]
        # the IEEE path runs under one errstate: UNCHECKED_MATH leaves warnings to it
        with np.errstate(all="ignore"):
            values = [element(*point) for point in zip(*columns)]
        return np.array(values, dtype=np.float64).reshape(arrays[0].shape)

    apply.__name__ = f"reference_{helper_.name}"
    apply.__doc__ = f"NumPy reference of ``{helper_.name}``, from its kernel helper's source."
    return apply
