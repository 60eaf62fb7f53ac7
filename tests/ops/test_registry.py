"""The primitive registry (lossdsl.ops): every record complete, every derivative rule right.

``test_every_primitive_is_complete`` lists each primitive that lacks a piece (a NumPy
reference, a derivative rule or a reason it has none, a kernel template, LaTeX, the torch and
jax.numpy spellings, a doc line) and every helper no operation reaches; the derivative rules
are checked against central finite differences of the references. No kernel is compiled.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from lossdsl import ops
from lossdsl.backend.cpu import libm
from lossdsl.backend.jax import JaxPrinter
from lossdsl.ir.build import make
from lossdsl.ir.node import node
from lossdsl.latex import LatexPrinter
from lossdsl.ops.primitives import FUNCTIONS, OPERATIONS
from lossdsl.reference import ELEMENTWISE_NUMPY, Evaluator, evaluate

ELEMENTWISE = [op for op in ops.operations("elementwise")]


def _missing_pieces(op: ops.Op) -> list[str]:
    """What record ``op`` lacks, in words."""
    missing = []
    if not op.doc:
        missing.append("doc")
    if op.kind == "elementwise":
        if op.reference is None:
            missing.append("reference")
        if op.partials is None and (op.differentiable or not op.no_derivative):
            missing.append("partials (or differentiable=False with no_derivative)")
        if op.partials is not None and not op.differentiable:
            missing.append("differentiable=True (it has partials)")
        if op.kernel is None and not op.lowered:
            missing.append("kernel template (or lowered=True)")
        if op.torch is None:
            missing.append("torch spelling")
        if op.jax is None and not hasattr(JaxPrinter, f"print_{op.name}"):
            missing.append("jax spelling")
    elif op.kind != "macro" and not hasattr(Evaluator, f"eval_{op.name}"):
        missing.append(f"Evaluator.eval_{op.name}")
    if op.kind != "macro":
        if op.latex is None:
            missing.append("latex")
        elif op.latex == ops.NOTATION and not hasattr(LatexPrinter, f"print_{op.name}"):
            missing.append(f"LatexPrinter.print_{op.name} (latex=NOTATION)")
    if op.callable_as is not None and FUNCTIONS.get(op.callable_as) != (op.arity, op.arity):
        missing.append(f"FUNCTIONS[{op.callable_as!r}]")
    return missing


def test_every_primitive_is_complete():
    incomplete = {op.name: pieces for op in ops.operations() if (pieces := _missing_pieces(op))}
    assert not incomplete, "primitives missing a piece: " + "; ".join(
        f"{name}: {', '.join(pieces)}" for name, pieces in incomplete.items())


def test_every_helper_is_reachable_from_an_operation():
    reached: set[str] = set()
    for op in ops.operations():
        for kernel in (op.kernel, op.cuda):
            if isinstance(kernel, ops.Helper):
                reached |= ops.helper_closure(kernel.name)
    unreached = sorted(set(ops.helpers()) - reached)
    assert not unreached, f"helpers no operation's kernel calls: {unreached}"


def test_helper_sources_define_one_function_and_call_registered_helpers():
    for name, helper in ops.helpers().items():
        assert re.findall(r"^def (\w+)\(", helper.source, re.M) == [f"h_{name}"], name
        for called in helper.calls:
            assert called in ops.helpers(), f"h_{name} calls unregistered h_{called}"


def test_vectorisable_follows_the_math_the_kernel_calls():
    """A CPU loop vectorises only when its math is the vectorisable exp/log family: an op
    whose template reaches any other libm function must say vectorisable=False (and the
    other way round, or a loop loses its SIMD for nothing)."""
    wrong = []
    for op in ELEMENTWISE:
        if op.kernel is None or callable(op.kernel) and not isinstance(op.kernel, ops.Helper):
            continue
        calls = ops.kernel_math_calls(op)
        if op.vectorisable != (calls <= ops.VECTOR_MATH):
            wrong.append(f"{op.name} (calls {sorted(calls)}, vectorisable={op.vectorisable})")
    assert not wrong, wrong


def test_every_math_function_the_templates_call_is_in_the_cpu_math():
    for op in ELEMENTWISE:
        for name in ops.kernel_math_calls(op):
            assert hasattr(libm, name), f"{op.name} calls math.{name}, which libm lacks"


def test_primitive_tables_are_derived_from_the_registry():
    assert set(OPERATIONS) == {op.name for op in ops.operations()}
    assert set(ELEMENTWISE_NUMPY) == {op.name for op in ELEMENTWISE}
    assert ops.vectorisable("exp") and not ops.vectorisable("digamma")


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="twice"):
        ops.register(ops.Op("exp", 1, doc="again"))


# Points where each operation is smooth (away from kinks, ties, poles and its domain's edges).
_DEFAULT_POINTS = ([0.35, 0.8, 1.7, 2.9], [1.2, 0.45, 2.2, 0.6], [1.0, -1.0, 2.0, 0.5])
_POINTS = {
    "log1mexp": ([-2.0, -0.9, -0.3, -0.05],),
    "sign": ([-1.5, -0.2, 0.3, 2.0],),
    "abs": ([-1.5, -0.2, 0.3, 2.0],),
    "where": ([1.0, -1.0, 2.0, 0.5], [0.35, 0.8, 1.7, 2.9], [1.2, 0.45, 2.2, 0.6]),
    "log_ndtr": ([-30.0, -9.5, -0.5, 3.0],),
    "ndtr_ratio": ([-30.0, -9.5, -0.5, 3.0],),
    "digamma": ([-2.5, 0.3, 4.2, 20.0],),
    "trigamma": ([-2.5, 0.3, 4.2, 20.0],),
    "lgamma": ([-2.5, 0.3, 4.2, 20.0],),
    "xlog1py": ([0.35, -0.8, 1.7, 2.9], [1.2, 0.45, -0.5, 0.6]),
}


def _points(op: ops.Op) -> list[np.ndarray]:
    table = _POINTS.get(op.name, _DEFAULT_POINTS)
    return [np.array(table[i] if i < len(table) else _DEFAULT_POINTS[i])
            for i in range(op.arity)]


# stop_gradient's rule is 0 by definition, not the derivative of its value (the identity)
@pytest.mark.parametrize("op", [op for op in ELEMENTWISE
                                if op.partials is not None and op.name != "stop_gradient"],
                         ids=lambda op: op.name)
def test_partials_match_central_differences_of_the_reference(op):
    points = _points(op)
    leaves = [node("input", (), f"x{i}", ("n0",)) for i in range(op.arity)]
    value = node(op.name, tuple(leaves), None, ("n0",))
    partials = op.partials(lambda name, *args: make(name, args), value, *leaves,
                           wanted=[True] * op.arity)
    inputs = {f"x{i}": x for i, x in enumerate(points)}
    computed = evaluate(partials, inputs)
    for i, derivative in enumerate(computed):
        step = 1e-6 * np.maximum(1.0, np.abs(points[i]))
        up = [x + step if j == i else x for j, x in enumerate(points)]
        down = [x - step if j == i else x for j, x in enumerate(points)]
        expected = (op.reference(*up) - op.reference(*down)) / (2 * step)
        np.testing.assert_allclose(np.broadcast_to(derivative, expected.shape), expected,
                                   rtol=1e-6, atol=1e-8, err_msg=f"d{op.name}/dx{i}")


def test_an_operation_without_a_derivative_says_why():
    from lossdsl.errors import LossError
    from lossdsl.passes.diff import PARTIALS

    x = node("input", (), "x", ("n0",))
    with pytest.raises(LossError, match="polygamma"):
        PARTIALS.of(node("tetragamma", (x,), None, ("n0",)), [True])


_SPELLING_POINTS = np.array([-3.0, -0.7, -0.0, 0.0, 0.4, 1.0, 2.5, 7.0])


def _spelling_arguments(op: ops.Op) -> list[np.ndarray]:
    if op.arity == 1:
        return [_SPELLING_POINTS]
    grids = np.meshgrid(*([_SPELLING_POINTS] * op.arity))
    return [grid.ravel() for grid in grids]


def _in_domain(op: ops.Op, arguments: list[np.ndarray]) -> np.ndarray:
    """Where the spellings are compared: PyTorch and JAX implement the special functions
    with their own algorithms, which differ from lossdsl's at poles and outside a domain
    (log1mexp of x > 0), where the reference defines NaN or inf."""
    mask = np.ones(arguments[0].shape, dtype=bool)
    if op.name in ("lgamma", "digamma", "trigamma", "tetragamma"):
        mask &= arguments[0] > 0
    if op.name == "log1mexp":
        mask &= arguments[0] < 0
    return mask


@pytest.mark.parametrize("op", [op for op in ELEMENTWISE if op.torch is not None],
                         ids=lambda op: op.name)
def test_torch_spelling_matches_the_reference(op):
    torch = pytest.importorskip("torch")
    arguments = _spelling_arguments(op)
    with np.errstate(all="ignore"):
        expected = op.reference(*arguments)
    actual = op.torch(torch)(*(torch.from_numpy(a) for a in arguments))
    if actual.dtype == torch.bool:
        actual = actual.to(torch.float64)
    mask = _in_domain(op, arguments)
    # lossdsl's polygammas recur only up to x = 6 (16 for tetragamma) before their series,
    # which leaves about 1e-11 (digamma) and 1e-10 (trigamma) of relative error; PyTorch's
    # differ by as much (digamma(1) = -0.5772156649015328 there, -0.577215664910292 here)
    rtol = 1e-9 if op.name in ("digamma", "trigamma", "tetragamma") else 1e-12
    np.testing.assert_allclose(actual.detach().numpy()[mask], np.asarray(expected)[mask],
                               rtol=rtol, atol=1e-300, equal_nan=True, err_msg=op.name)


@pytest.mark.parametrize("op", [op for op in ELEMENTWISE if op.jax is not None],
                         ids=lambda op: op.name)
def test_jax_spelling_matches_the_reference(op):
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    from lossdsl.backend import jax as jax_printer

    arguments = _spelling_arguments(op)
    leaves = [node("input", (), f"x{i}", ("n0",)) for i in range(op.arity)]
    names = {f"x{i}": f"a{i}" for i in range(op.arity)}
    program = jax_printer.generate([node(op.name, tuple(leaves), None, ("n0",))], names, {}, {})
    run = program.build(np.float64, jnp, jax.lax, jax_printer)
    with jax.enable_x64(True):
        (actual,) = run(*arguments)
    with np.errstate(all="ignore"):
        expected = op.reference(*arguments)
    # atol: XLA on the CPU flushes subnormal results to zero
    np.testing.assert_allclose(np.asarray(actual), np.broadcast_to(expected, actual.shape),
                               rtol=1e-13, atol=1e-300, equal_nan=True, err_msg=op.name)


def test_the_kernel_printer_reads_the_records():
    from lossdsl.backend.emit import HELPERS, ExpressionPrinter

    x = node("input", (), "x", ("n0",))
    printer = ExpressionPrinter()
    assert printer.expression(node("exp", (x,), None, ("n0",)), ["v1"]) == "math.exp(v1)"
    assert printer.expression(node("max", (x, x), None, ("n0",)), ["v1", "v2"]) == "h_max(v1, v2)"
    square = node("pow", (x, node("const", (), 2.0, ())), None, ("n0",))
    assert printer.expression(square, ["v1", "K0"]) == "v1 * v1"
    assert printer.vectorisable  # exp, max and a square: SIMD-friendly
    assert printer.expression(node("log_ndtr", (x,), None, ("n0",)), ["v1"]) == "h_log_ndtr(v1)"
    # log_ndtr with the helpers it calls
    assert printer.helpers == {"max", "log_ndtr", "ndtr_tail", "ndtr_tail_terms"}
    assert not printer.vectorisable  # log_ndtr calls libm's erfc
    general = ExpressionPrinter()
    power = node("pow", (x, x), None, ("n0",))
    assert general.expression(power, ["v1", "v1"]) == "math.pow(v1, v1)"
    assert general.vectorisable  # the CPU's math.pow is vector_math's vpow
    assert general.math_calls["pow"] == 1  # counted among the inlined calls
    assert ExpressionPrinter("cuda").expression(power, ["v1", "v1"]) == "v1 ** v1"
    assert set(HELPERS) == set(ops.helpers())
    assert HELPERS["ndtr_tail"] == ops.helper_source("ndtr_tail")


def test_a_cuda_override_is_used_for_cuda_only():
    op = ops.Op("twice", 1, doc="2x", kernel="T(2.0) * {0}", cuda="{0} + {0}")
    assert op.kernel_for("cpu") == "T(2.0) * {0}" and op.kernel_for("cuda") == "{0} + {0}"
    assert ops.get("exp").kernel_for("cuda") == ops.get("exp").kernel_for("cpu")


def test_a_helper_must_define_its_function():
    with pytest.raises(ValueError, match="h_wrong"):
        ops.Helper("wrong", "\ndef h_other(x):\n    return x\n")


@pytest.mark.parametrize(("text", "vectorised"), [
    ("exp(p) + log1p(p^2)", True),  # the vectorisable exp/log family and constant powers
    ("tanh(p)", True),  # vector_math's tanh, from its expm1
    ("sin(p)", False),  # libm only, one element at a time
    ("lgamma(p)", False),  # a helper calling libm's lgamma
    ("p^y", True),  # a power with a varying exponent: vector_math's vpow
    ("p^y + sin(p)", False),  # libm's pow then, as the module's other math
])
def test_the_registry_decides_whether_cpu_loops_vectorise(text, vectorised):
    """A CPU module calls the vectorisable libm and inlines its bodies exactly when no
    operation in it is scalar-only by its record (the golden sources pin every library
    loss's decision)."""
    import lossdsl

    source = lossdsl.compile(text).source
    assert ("from lossdsl.backend.cpu import libm as math" in source) == vectorised
    assert ("forceinline=True" in source) == vectorised


@pytest.mark.parametrize("op", ELEMENTWISE, ids=lambda op: op.name)
def test_templates_use_each_argument_once_formatted(op):
    """Every format-string template (kernel, CUDA, jax, LaTeX) takes the operation's arity
    of arguments and mentions each of them."""
    names = [f"<arg{i}>" for i in range(op.arity)]
    for field in ("kernel", "cuda", "jax", "latex"):
        template = getattr(op, field)
        if not isinstance(template, str) or template == ops.NOTATION:
            continue
        if field == "latex" and "{0}" not in template:
            continue  # a function name, applied to the arguments by the printer
        text = template.format(*names)
        assert all(name in text for name in names), f"{op.name}.{field}: {text}"
