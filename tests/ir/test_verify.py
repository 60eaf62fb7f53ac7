"""The IR verifier: every stage of every library loss is a valid graph, and bad graphs are
reported at the node that breaks a rule.

The stages are those of a kernel build (``lossdsl.compiler``), reproduced here through the
passes' own functions so that each stage's graph is checked on its own: the graph out of
``resolve``, the specialised graph, after the stable rewrites, the objective, each gradient
and Hessian diagonal, after stabilize, simplify and lower, and the schedule.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import pytest

import lossdsl
from lossdsl import catalog
from lossdsl.backend.cpu import codegen as cpu
from lossdsl.backend.cuda import codegen as cuda
from lossdsl.errors import LossShapeError
from lossdsl.ir import verify
from lossdsl.ir.build import make
from lossdsl.ir.node import Node, constant, node, walk
from lossdsl.passes import diff, shapes
from lossdsl.passes.lower import lower
from lossdsl.passes.schedule import Loop, Output, Schedule, plan
from lossdsl.passes.simplify import simplify
from lossdsl.passes.stabilize import stabilize

ENTRIES = catalog.entries()


def _stages(compiled: lossdsl.CompiledLoss, weighted: bool,
            reduction: str) -> Iterable[tuple[str, list[Node] | Schedule]]:
    """(stage, its graph's roots or the schedule) for one kernel of ``compiled``: value,
    gradient and Hessian diagonal of every differentiable input."""
    definition = compiled.loss.definition
    specialized = shapes.specialize(definition.graph, compiled.default_ranks(),
                                    definition.inputs, definition.input_spans)
    yield "specialize", [specialized.graph]
    (stable,) = stabilize([specialized.graph])
    yield "stabilize", [stable]
    try:
        objective = shapes.objective(stable, reduction, weighted, compiled.ignore_index,
                                     specialized.labels)
    except LossShapeError:
        if weighted:  # a loss that reduces over samples itself (Dice) takes no sample weights
            return
        raise
    yield "objective", [objective.value, objective.total]
    typed = {n.value: n for n in walk(objective.total) if n.op == "input"}
    constants = compiled.constant_inputs()
    outputs = [Output("value", objective.value, objective.value.axes)]
    for name in definition.inputs:
        if name in constants or name not in typed:
            continue
        gradient = diff.grad(objective.total, typed[name])
        yield f"grad:{name}", [gradient]
        hessian = diff.hessian_diag(objective.total, typed[name], gradient)
        yield f"hess:{name}", [hessian]
        outputs += [Output(f"grad:{name}", gradient, typed[name].axes),
                    Output(f"hess:{name}", hessian, typed[name].axes)]
    roots = stabilize([o.node for o in outputs])
    yield "stabilize outputs", roots
    roots = simplify(roots)
    yield "simplify", roots
    roots = lower(roots)
    yield "lower", roots
    yield "schedule", plan([Output(o.name, n, o.axes) for o, n in zip(outputs, roots)])


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_every_stage_of_every_library_loss_is_valid(entry):
    compiled = lossdsl.compile(entry.call_expression())
    verify.verify(compiled.loss.definition.graph, typed=False)
    cases = [(compiled, False, "mean"), (compiled, True, "mean"), (compiled, False, "sum")]
    if compiled.label_inputs():  # the samples whose label is ignore_index drop out
        ignoring = lossdsl.compile(entry.call_expression(), ignore_index=-100)
        cases += [(ignoring, False, "mean"), (ignoring, True, "mean")]
    for loss, weighted, reduction in cases:
        for stage, graph in _stages(loss, weighted, reduction):
            try:
                if isinstance(graph, Schedule):
                    verify.verify_schedule(graph)
                else:
                    verify.verify(graph)
            except verify.InvalidGraphError as error:
                pytest.fail(f"{entry.name}, {reduction}{', weighted' if weighted else ''}"
                            f"{', ignore_index' if loss.ignore_index is not None else ''}, "
                            f"after {stage}: {error}")


def test_the_resolved_graph_is_not_typed():
    graph = lossdsl.compile("mean(log(p) - y)").loss.definition.graph
    verify.verify(graph, typed=False)
    with pytest.raises(verify.InvalidGraphError, match="unknown axes"):
        verify.verify(graph)


def test_shape_mistakes_before_specialisation_are_the_users():
    # shapes.specialize reports these with their position; the resolved graph is valid IR
    for text in ("-softmax(0)", "rowsum(2) + sum(3)", "logsumexp(1) * p"):
        verify.verify(lossdsl.compile(text).loss.definition.graph, typed=False)


# ------------------------------------------------------------------------------ bad graphs

def _raw(op: str, args: tuple = (), value: object = None, axes: object = None) -> Node:
    """A node built without ``node()``'s checks and interning, as a buggy pass might."""
    new = object.__new__(Node)
    for name, field in (("op", op), ("args", args), ("value", value), ("axes", axes),
                        ("depth", 1), ("key", f"raw-{id(new)}")):
        object.__setattr__(new, name, field)
    return new


def _vector(name: str, axis: str = "n0") -> Node:
    return node("input", (), name, (axis,))


def _matrix(name: str, axis: str = "n0") -> Node:
    return node("input", (), name, (axis, axis + "k"))


def test_valid_leaves_and_broadcasts_pass():
    p, z = _vector("p"), _matrix("z")
    graph = make("add", (make("mul", (z, p)), constant(math.inf)))
    verify.verify([graph, constant(math.nan), make("sum", (make("rowsum", (graph,)),)),
                   node("param", (), "delta", ()), node("count", (), "n0#kept", ())])


def test_a_node_of_an_unregistered_operation_cannot_be_built():
    # ops are ids of the primitive registry: a misspelt one fails where it is built
    with pytest.raises(ValueError, match="not in the primitive registry"):
        node("frobnicate", (_vector("p"),), None, ("n0",))


@pytest.mark.parametrize("bad, message", [
    (lambda: node("neg", (_vector("p"), _vector("y")), None, ("n0",)), "takes 1 argument"),
    (lambda: node("exp", (_vector("p"),), None, ("n0", "n0k")), "broadcast axes"),
    (lambda: node("add", (_vector("p"), _vector("q", "n1")), None, ("n0",)), "do not broadcast"),
    (lambda: node("rowsum", (_vector("p"),), None, ("n0",)), "reduces a class matrix"),
    (lambda: node("rowmax", (_matrix("z"),), None, ("n0", "n0k")), "drops the class axis"),
    (lambda: node("sum", (_matrix("z"),), None, ()), "one value per sample"),
    (lambda: node("sum", (_vector("p"),), None, ("n0",)), "a sum is a scalar"),
    (lambda: node("const", (), "1.5", ()), "must be a float"),
    (lambda: node("const", (), 1.5, ("n0",)), "is a scalar"),
    (lambda: _raw("count", (), "samples", ()), "counts an axis"),
    (lambda: node("input", (), "p", ("k0",)), "an input is a scalar"),
    (lambda: node("mean", (_vector("p"),), None, ()), "shape macro"),
    (lambda: make("add", (_vector("p"), _matrix("p"))), "has axes"),
    (lambda: node("class_index", (_vector("y"),), None, ("n1", "n1k")), "sample axis of its"),
    (lambda: node("table_row", (_vector("C"), _vector("y")), None, ("n0", "n0k")),
     "whose columns are its classes"),
])
def test_a_bad_node_is_reported(bad, message):
    culprit = bad()
    above = node("mul", (culprit, constant(2.0)), None, culprit.axes)  # as given: no make()
    with pytest.raises(verify.InvalidGraphError, match=message) as caught:
        verify.verify(above)
    # the bad node, or the leaf under it that shows the fault (an input's second axes)
    assert any(n is caught.value.culprit for n in walk(culprit))


def test_known_axes_need_known_arguments():
    untyped = node("input", (), "p", None)
    verify.verify(node("exp", (untyped,), None, None), typed=False)
    with pytest.raises(verify.InvalidGraphError, match="an argument's are not"):
        verify.verify(node("exp", (untyped,), None, ("n0",)), typed=False)
    with pytest.raises(verify.InvalidGraphError, match="its axes are"):
        verify.verify(node("param", (), "delta", None), typed=False)


def test_a_bad_node_is_named_briefly():
    # a long, valid graph above a bad node: the message names the node, not the whole graph
    bad = node("rowsum", (_vector("p"),), None, ("n0",))
    graph = bad
    for k in range(200):
        graph = make("add", (graph, make("mul", (constant(float(k + 2)), _vector("q")))))
    with pytest.raises(verify.InvalidGraphError) as caught:
        verify.verify(graph)
    text = str(caught.value)
    assert "rowsum(input['p'])" in text and "rowsum(p)" in text
    assert len(text) < 400, text
    assert isinstance(caught.value, AssertionError)  # a compiler bug, not a user's error
    assert caught.value.culprit is bad


def test_an_argument_that_is_not_a_node_is_reported():
    with pytest.raises(verify.InvalidGraphError, match="a str, not a Node"):
        verify.verify(_raw("exp", ("p",), None, ("n0",)))
    with pytest.raises(verify.InvalidGraphError, match="not a Node"):
        verify.verify(["p"])


def test_a_cycle_is_reported():
    first = _raw("exp", (), None, ("n0",))
    second = _raw("neg", (first,), None, ("n0",))
    object.__setattr__(first, "args", (second,))
    with pytest.raises(verify.InvalidGraphError, match="cycle"):
        verify.verify(make("add", (_vector("p"), second)))
    loop = _raw("exp", (), None, ("n0",))
    object.__setattr__(loop, "args", (loop,))
    with pytest.raises(verify.InvalidGraphError, match="cycle"):
        verify.verify(loop)


def _mean_of(p: Node) -> Node:
    return make("div", (make("sum", (p,)), node("count", (), "n0", ())))


def test_a_schedule_reading_a_sum_of_its_own_pass_is_reported():
    p = _vector("p")
    total = make("sum", (p,))
    centred = make("sub", (p, _mean_of(p)))
    good = plan([Output("value", total, ()), Output("grad:p", centred, ("n0",))])
    verify.verify_schedule(good)
    assert good.passes == 2
    # both in one pass: the loop would read the sum it is still accumulating
    one_pass = Schedule([Loop(0, "n0", [make("sum", (p,))], [Output("grad:p", centred, ("n0",))])],
                        [Output("value", total, ())], 1)
    with pytest.raises(verify.InvalidGraphError, match="no earlier pass"):
        verify.verify_schedule(one_pass)
    missing = Schedule([], [Output("value", total, ())], 0)
    with pytest.raises(verify.InvalidGraphError, match="no pass computes"):
        verify.verify_schedule(missing)
    wrong_axis = Schedule([Loop(0, "n1", [total], [])], [Output("value", total, ())], 1)
    with pytest.raises(verify.InvalidGraphError, match="accumulates only sums"):
        verify.verify_schedule(wrong_axis)


def _bad_schedule() -> Schedule:
    bad = node("rowsum", (_vector("p"),), None, ("n0",))
    return Schedule([Loop(0, "n0", [], [Output("grad:p", bad, ("n0",))])], [], 1)


def test_the_debug_switch_checks_every_generated_schedule(monkeypatch):
    monkeypatch.delenv(verify.ENVIRONMENT_SWITCH, raising=False)
    verify.check(node("rowsum", (_vector("p"),), None, ("n0",)))  # off: nothing is checked
    assert not verify.enabled()
    monkeypatch.setenv(verify.ENVIRONMENT_SWITCH, "1")
    assert verify.enabled()
    with pytest.raises(verify.InvalidGraphError, match="reduces a class matrix"):
        verify.check(node("rowsum", (_vector("p"),), None, ("n0",)))
    with pytest.raises(verify.InvalidGraphError):
        cpu.generate(_bad_schedule(), "float64", frozenset(), "# header")
    with pytest.raises(verify.InvalidGraphError):
        cuda.generate(_bad_schedule(), "float64", "# header")


def test_the_debug_switch_passes_a_real_kernel(monkeypatch):
    monkeypatch.setenv(verify.ENVIRONMENT_SWITCH, "1")
    compiled = lossdsl.compile("sparse_cce_logits(y, z)")
    assert "def run(" in compiled.source
