"""``lossdsl bench``: time a compiled loss against the code a user would write instead.

Three tasks are timed: the value, value + gradient, and gradient + Hessian diagonal with
respect to the prediction. lossdsl is compared with

* the memory floor: a streaming Numba kernel that reads the same inputs and writes the same
  outputs into freshly allocated arrays (:func:`lossdsl.peers.floor_peer`), always;
* idiomatic peers (:mod:`lossdsl.peers`: ``torch.nn.functional`` with autograd and closed
  forms in torch, hand-written NumPy, ``jax.jit`` of it, scikit-learn's ``_loss`` Cython
  kernels), when the loss is a single call of a library loss that has them. Each peer's
  numbers are checked against lossdsl's on the same data before it is timed.

For any other loss no peer is known: only the floor is shown. ``graph_baselines`` adds
lossdsl's own expression graph evaluated one operation at a time in NumPy and in PyTorch
(:func:`numpy_tasks`, :func:`torch_tasks`): a check on the compiler, not a peer, since no user
writes those graphs.

Timings are the best of several rounds after a warm-up call (compilation excluded; the
first-call time is reported separately); in each round every implementation runs once per
task, interleaved, so that a burst of load from elsewhere hits them all alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import compiler
from . import peers as peers_module
from .api import CompiledLoss
from .ir.node import Node, toposort
from .ir.visit import NodeVisitor
from .ops import operations
from .reference import Evaluator

TASKS = ("value", "value+grad", "grad+hess")


def synthetic_inputs(compiled: CompiledLoss, n: int, classes: int, dtype: np.dtype,
                     seed: int = 0) -> dict[str, np.ndarray]:
    """Data for every input: values in (0.05, 0.95) (valid for probabilities, targets,
    residuals and logits alike), integer labels for class-index inputs, ``(n, classes)``
    matrices for inputs used per class."""
    rng = np.random.default_rng(seed)
    ranks = compiled.default_ranks()
    labels = compiled.label_inputs()
    inputs = {}
    for name in compiled.inputs:
        if name in labels:
            inputs[name] = rng.integers(0, classes, size=n).astype(dtype)
        elif name in compiled.group_inputs():  # queries of about 20 samples
            inputs[name] = np.repeat(np.arange(n), 20)[:n].astype(dtype)
        elif ranks.get(name) == 2:
            inputs[name] = rng.uniform(0.05, 0.95, size=(n, classes)).astype(dtype)
        else:
            inputs[name] = rng.uniform(0.05, 0.95, size=n).astype(dtype)
    return inputs


@dataclass
class Graphs:
    """The loss's typed value graph and its symbolic derivatives for one input."""

    total: Node
    gradient: Node
    hessian: Node
    counts: dict[str, int]


def graphs(compiled: CompiledLoss, wrt: str, inputs: dict[str, np.ndarray]) -> Graphs:
    """Typed graphs for the inputs' shapes (the same graphs the kernels are built from)."""
    spec = compiled.specialization(compiled.default_ranks())
    objective = spec.objective
    gradient, hessian = compiler.derivatives(spec, wrt, 2)
    counts: dict[str, int] = {}
    for node in toposort([objective.total, gradient, hessian]):
        if node.op == "input" and node.axes:
            array = inputs[node.value]
            for dimension, axis in enumerate(node.axes):
                counts[axis] = array.shape[dimension]
    return Graphs(objective.total, gradient, hessian, counts)


def numpy_tasks(compiled: CompiledLoss, wrt: str,
                inputs: dict[str, np.ndarray]) -> dict[str, Callable[[], object]]:
    """lossdsl's own graphs for the three tasks run one NumPy operation at a time (a check
    on the compiler, not a peer: no user writes these graphs)."""
    g = graphs(compiled, wrt, inputs)
    params = dict(compiled.params)

    def run(*roots: Node):
        return Evaluator(inputs, params, g.counts).evaluate(list(roots))

    return {"value": lambda: run(g.total), "value+grad": lambda: run(g.total, g.gradient),
            "grad+hess": lambda: run(g.gradient, g.hessian)}


def lossdsl_tasks(compiled: CompiledLoss, wrt: str,
                  inputs: dict[str, np.ndarray]) -> dict[str, Callable[[], object]]:
    """The compiled kernels for the three tasks."""
    return {"value": lambda: compiled(**inputs),
            "value+grad": lambda: compiled.value_and_grad(wrt, **inputs),
            "grad+hess": lambda: compiled.grad_and_hessian(wrt, **inputs)}


class TorchEvaluator(NodeVisitor):
    """Evaluates a typed graph with PyTorch tensors (eager mode, autograd-aware)."""

    method_prefix = "eval_"
    pass_arguments = True

    def __init__(self, torch, inputs, params, counts, dtype):
        super().__init__()
        self.torch = torch
        self.dtype = dtype
        self.inputs = inputs
        self.params = params
        self.counts = counts
        # each elementwise operation's PyTorch spelling, from its registry record
        self.elementwise = {op.name: op.torch(torch) for op in operations("elementwise")
                            if op.torch is not None}

    def evaluate(self, root: Node):
        """The tensor of ``root``."""
        return self.run([root])[0]

    def _scalar(self, value: float):
        return self.torch.tensor(value, dtype=self.torch.float64)

    def eval_const(self, n):
        return self._scalar(n.value)

    def eval_input(self, n):
        return self.inputs[n.value]

    def eval_param(self, n):
        return self._scalar(self.params[n.value])

    def eval_count(self, n):
        return self._scalar(float(self.counts[n.value]))

    def eval_class_index(self, n, label):
        return self.torch.arange(self.counts[n.axes[1]], dtype=self.torch.float64)

    def eval_sum(self, n, x):
        return x.sum()

    def eval_rowsum(self, n, x):
        return x.sum(dim=1)

    def eval_rowmax(self, n, x):
        return x.amax(dim=1)

    def eval_sparsemax_threshold(self, n, x):
        ordered = self.torch.sort(x, dim=1, descending=True).values
        totals = self.torch.cumsum(ordered, dim=1)
        sizes = self.torch.arange(1, x.shape[1] + 1, dtype=x.dtype)
        support = (1.0 + sizes * ordered > totals).sum(dim=1, keepdim=True)
        return ((totals.gather(1, support - 1) - 1.0) / support).squeeze(1)

    def fallback(self, n, *args):
        aligned = [self._align(v, a.axes, n.axes) for v, a in zip(args, n.args, strict=True)]
        value = self.elementwise[n.op](*aligned)
        return value.to(self.dtype) if value.dtype == self.torch.bool else value

    @staticmethod
    def _align(value, axes, out_axes):
        if axes is not None and len(axes) == 1 and len(out_axes) == 2:
            return value[:, None]
        return value


def torch_tasks(compiled: CompiledLoss, wrt: str,
                inputs: dict[str, np.ndarray]) -> dict[str, Callable[[], object]] | None:
    """lossdsl's own value graph run one PyTorch operation at a time, derivatives by
    autograd (a check on the compiler, not a peer), or None without PyTorch."""
    try:
        import torch
    except ImportError:
        return None
    g = graphs(compiled, wrt, inputs)
    tensors = {name: torch.from_numpy(np.ascontiguousarray(array))
               for name, array in inputs.items()}

    def forward(requires_grad: bool):
        bound = dict(tensors)
        if requires_grad:
            bound[wrt] = tensors[wrt].clone().requires_grad_(True)
        evaluator = TorchEvaluator(torch, bound, dict(compiled.params), g.counts,
                                   tensors[wrt].dtype)
        return evaluator.evaluate(g.total), bound[wrt]

    def value():
        with torch.no_grad():
            return forward(False)[0]

    def value_and_grad():
        total, x = forward(True)
        (gradient,) = torch.autograd.grad(total, x)
        return total.item(), gradient

    def grad_and_hess():
        total, x = forward(True)
        (gradient,) = torch.autograd.grad(total, x, create_graph=True)
        (hessian,) = torch.autograd.grad(gradient.sum(), x)
        return gradient.detach(), hessian

    return {"value": value, "value+grad": value_and_grad, "grad+hess": grad_and_hess}


@dataclass
class Result:
    """Seconds per call for each task and each implementation; first-call time of lossdsl;
    the peers timed (with their code), the ones skipped and why, and why there are no peers
    when there are none."""

    seconds: dict[str, dict[str, float]]  # implementation -> task -> seconds
    first_call: float
    peers: list[peers_module.Peer] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    no_peers: str = ""


def interleaved_best(implementations: dict[str, dict[str, Callable[[], object]]], repeat: int,
                     pause: float = 0.0) -> dict[str, dict[str, float]]:
    """Best time of each implementation and task over ``repeat`` rounds, every
    implementation running once per task in each round (after one warm-up call each).
    ``pause`` seconds of idle before each timed call let PyTorch's and JAX's worker threads,
    which spin for a while after a call, stop competing with the next implementation. Each
    round starts at the next implementation: the first large allocation after another
    task's calls can fault its pages in without huge pages (an 80 MB output's 26 ms became 110),
    and that cost must not always fall on the same implementation."""
    for tasks in implementations.values():
        for function in tasks.values():
            function()
    times: dict[str, dict[str, list[float]]] = {
        name: {task: [] for task in tasks} for name, tasks in implementations.items()}
    names = list(implementations)
    for round_number in range(repeat):
        first = round_number % len(names)
        rotated = names[first:] + names[:first]
        for task in TASKS:
            for name in rotated:
                tasks = implementations[name]
                if task not in tasks:
                    continue
                if pause:
                    time.sleep(pause)
                start = time.perf_counter()
                tasks[task]()
                times[name][task].append(time.perf_counter() - start)
    return {name: {task: min(values) for task, values in by_task.items()}
            for name, by_task in times.items()}


def run(compiled: CompiledLoss, wrt: str, inputs: dict[str, np.ndarray], repeat: int,
        match: peers_module.Match | None = None, no_peers: str = "",
        include: tuple[str, ...] = ("numpy", "numba", "torch", "jax", "sklearn"),
        graph_baselines: bool = False, pause: float = 0.0,
        on_mismatch: Callable[[str], None] | None = None) -> Result:
    """Time every task for lossdsl, the floor and the peers of ``match`` (checked against
    lossdsl's numbers first: a peer that disagrees raises
    :class:`lossdsl.peers.PeerMismatch`, or is reported to ``on_mismatch`` and dropped).
    ``graph_baselines`` adds lossdsl's own graph run op by op (not peers)."""
    ours = lossdsl_tasks(compiled, wrt, inputs)
    start = time.perf_counter()
    reference = {task: function() for task, function in ours.items()}  # compiles or loads
    first_call = time.perf_counter() - start
    implementations = {"lossdsl": ours}
    floor = peers_module.floor_peer(inputs, wrt, compiled.target)
    implementations["floor"] = floor.tasks
    timed, skipped = [floor], []
    if match is not None and wrt != match.input_name(match.family.prediction):
        no_peers = (f"the peers of {match.family.name} differentiate by its prediction "
                    f"'{match.input_name(match.family.prediction)}', not by '{wrt}'")
        match = None
    if match is not None:
        candidates, skipped = peers_module.build_peers(match, inputs, compiled.target, include)
        dtype = inputs[wrt].dtype
        for peer in candidates:
            try:
                peers_module.check_peer(peer, reference, dtype)
            except peers_module.PeerMismatch as error:
                if on_mismatch is None:
                    raise
                on_mismatch(str(error))
                continue
            implementations[peer.name] = peer.tasks
            timed.append(peer)
    if graph_baselines:
        implementations["numpy graph"] = numpy_tasks(compiled, wrt, inputs)
        torch_versions = torch_tasks(compiled, wrt, inputs)
        if torch_versions is not None:
            implementations["torch graph"] = torch_versions
    seconds = interleaved_best(implementations, repeat, pause)
    return Result(seconds, first_call, timed, skipped, "" if match is not None else no_peers)
