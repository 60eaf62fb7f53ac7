"""Name resolution: syntax tree → expression graph.

Resolves imports (paths relative to the importing file), params, lets and defs (inlined at
each call with their default arguments), checks arity, expands the built-in macros
(``logsumexp``, ``softmax``, ``pick``, ``clip``, ...) and turns every free name of a loss
expression into an input. The graph it returns has unknown axes (``None``); ``shapes.py``
gives them once the inputs are bound.

Scopes, innermost first: a def's parameters, the module's own lets, params and defs, those of
the modules it imports (a later import wins), the prelude, then the built-ins.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from . import ast
from .errors import LossArityError, LossError, LossNameError, Span, did_you_mean
from .evaluate import evaluate
from .ir import Node, constant, node, walk
from .parse import parse
from .primitives import CONSTANTS, FUNCTIONS
from .simplify import make

PRELUDE_DIR = Path(__file__).resolve().parent / "prelude"


@dataclass(frozen=True)
class ParamInfo:
    """A ``param``: its default value, doc comment and where it was declared."""

    name: str
    default: float
    doc: str
    span: Span


@dataclass(frozen=True)
class DefInfo:
    """A ``def``: its syntax (inlined at each call) and the scope it was written in."""

    name: str
    syntax: ast.Def
    scope: Scope
    doc: str


@dataclass(frozen=True)
class LossDefinition:
    """A resolved loss: its graph, its inputs in source order and the params it uses."""

    name: str | None
    graph: Node
    inputs: tuple[str, ...]
    params: dict[str, float]
    doc: str
    span: Span
    input_spans: dict[str, Span]


@dataclass(eq=False)
class Scope:
    """One module's names, and the modules it imports."""

    file: str | None
    params: dict[str, ParamInfo] = field(default_factory=dict)
    defs: dict[str, DefInfo] = field(default_factory=dict)
    lets: dict[str, Node] = field(default_factory=dict)
    losses: dict[str, LossDefinition] = field(default_factory=dict)
    imports: list[Scope] = field(default_factory=list)
    parent: Scope | None = None  # the prelude, for user modules
    expression: LossDefinition | None = None

    def _chain(self, seen: set[int] | None = None):
        """This scope, then its imports (later first), then its parent; each scope once, so
        modules that see each other (the prelude's files) do not loop."""
        seen = set() if seen is None else seen
        if id(self) in seen:
            return
        seen.add(id(self))
        yield self
        for imported in reversed(self.imports):
            yield from imported._chain(seen)
        if self.parent is not None:
            yield from self.parent._chain(seen)

    def find_def(self, name: str) -> DefInfo | None:
        for scope in self._chain():
            if name in scope.defs:
                return scope.defs[name]
        return None

    def find_value(self, name: str) -> Node | None:
        for scope in self._chain():
            if name in scope.lets:
                return scope.lets[name]
            if name in scope.params:
                return node("param", (), name, ())
        return None

    def find_param(self, name: str) -> ParamInfo | None:
        for scope in self._chain():
            if name in scope.params:
                return scope.params[name]
        return None

    def all_names(self) -> set[str]:
        names: set[str] = set(FUNCTIONS) | set(CONSTANTS)
        for scope in self._chain():
            names |= set(scope.params) | set(scope.defs) | set(scope.lets) | set(scope.losses)
        return names

    def function_names(self) -> set[str]:
        names = set(FUNCTIONS)
        for scope in self._chain():
            names |= set(scope.defs)
        return names


# ---------------------------------------------------------------------------------------------
# Expression lowering


class Lowerer:
    """Lowers syntax to graph nodes in one scope; one method per syntax node type."""

    def __init__(self, scope: Scope, inputs_allowed: bool, record: dict[str, Span]):
        self.scope = scope
        self.inputs_allowed = inputs_allowed
        self.input_spans = record  # first use of each input, in source order
        self.expanding: tuple[str, ...] = ()

    def lower(self, expression: ast.Expression, local: dict[str, Node]) -> Node:
        method = getattr(self, "lower_" + type(expression).__name__)
        return method(expression, local)

    def lower_Number(self, e: ast.Number, local):  # noqa: N802 - dispatch on class name
        return constant(e.value)

    def lower_Name(self, e: ast.Name, local):  # noqa: N802
        if e.id in local:
            return local[e.id]
        found = self.scope.find_value(e.id)
        if found is not None:
            return found
        if e.id in CONSTANTS:
            return constant(CONSTANTS[e.id])
        if not self.inputs_allowed:
            if self.scope.find_def(e.id) is not None or e.id in FUNCTIONS:
                raise LossNameError(f"'{e.id}' is a function; call it with arguments", e.span)
            candidates = set(local) | self.scope.all_names()
            raise LossNameError(
                f"unknown name '{e.id}' (a def may use only its parameters, params and lets)",
                e.span,
                did_you_mean(e.id, candidates),
            )
        self.input_spans.setdefault(e.id, e.span)
        return node("input", (), e.id, None)

    def lower_UnaryOp(self, e: ast.UnaryOp, local):  # noqa: N802
        return make(e.op, (self.lower(e.operand, local),))

    def lower_BinOp(self, e: ast.BinOp, local):  # noqa: N802
        return make(e.op, (self.lower(e.left, local), self.lower(e.right, local)))

    def lower_IfElse(self, e: ast.IfElse, local):  # noqa: N802
        args = [self.lower(x, local) for x in (e.condition, e.then, e.otherwise)]
        return make("where", args)

    def lower_Call(self, e: ast.Call, local):  # noqa: N802
        definition = self.scope.find_def(e.function)
        if definition is not None:
            return self._inline(definition, e, local)
        if e.function in FUNCTIONS:
            if e.keywords:
                raise LossArityError(
                    f"built-in '{e.function}' takes no keyword arguments", e.keywords[0].span
                )
            low, high = FUNCTIONS[e.function]
            if not low <= len(e.args) <= high:
                wanted = str(low) if low == high else f"{low} to {high}"
                raise LossArityError(
                    f"'{e.function}' takes {wanted} argument{'s' if high != 1 else ''}, "
                    f"got {len(e.args)}",
                    e.span,
                )
            args = [self.lower(a, local) for a in e.args]
            return self._builtin(e, args)
        raise LossNameError(
            f"unknown function '{e.function}'",
            e.span,
            did_you_mean(e.function, self.scope.function_names()),
        )

    def _builtin(self, e: ast.Call, args: list[Node]) -> Node:
        name = e.function
        if name == "clip":
            return make("min", (make("max", (args[0], args[1])), args[2]))
        if name in ("logsumexp", "softmax", "log_softmax"):
            z = args[0]
            shift = make("stop_gradient", (make("rowmax", (z,)),))
            total = make("rowsum", (make("exp", (make("sub", (z, shift)),)),))
            lse = make("add", (shift, make("log", (total,))))
            if name == "logsumexp":
                return lse
            log_probabilities = make("sub", (z, lse))
            return log_probabilities if name == "log_softmax" else make("exp", (log_probabilities,))
        if name == "onehot":
            width = None
            if len(args) == 2:
                if (
                    args[1].op != "const"
                    or args[1].value < 1
                    or args[1].value != int(args[1].value)
                ):
                    raise LossArityError(
                        "onehot's class count must be a positive integer", e.args[1].span
                    )
                width = int(args[1].value)
            return make("eq", (node("class_index", (args[0],), width, None), args[0]))
        if name == "rowof":
            table, labels = args
            if table.op != "input":
                raise LossArityError(
                    "rowof's first argument must be an input: a (K, K) table bound at call "
                    "time, such as a cost matrix", e.args[0].span)
            return node("table_row", (table, labels), None, None)
        if name == "pick":
            z, labels = args
            onehot = make("eq", (node("class_index", (labels,), None, None), labels))
            return make("rowsum", (make("mul", (z, onehot)),))
        if name == "square":
            return make("pow", (args[0], constant(2.0)))
        if name == "cosh":
            x = args[0]
            return make(
                "mul",
                (
                    constant(0.5),
                    make("add", (make("exp", (x,)), make("exp", (make("neg", (x,)),)))),
                ),
            )
        if name == "xlogy":
            x, y = args
            return make(
                "where",
                (
                    make("eq", (x, constant(0.0))),
                    constant(0.0),
                    make("mul", (x, make("log", (y,)))),
                ),
            )
        return make(name, args)

    def _inline(self, definition: DefInfo, call: ast.Call, local) -> Node:
        syntax = definition.syntax
        if definition.name in self.expanding:
            raise LossError(f"'{definition.name}' is defined in terms of itself", call.span)
        names = [p.name for p in syntax.parameters]
        if len(call.args) > len(names):
            raise LossArityError(
                f"'{syntax.name}' takes at most {len(names)} positional argument"
                f"{'s' if len(names) != 1 else ''}, got {len(call.args)}",
                call.span,
            )
        bound: dict[str, Node] = {}
        for parameter, argument in zip(syntax.parameters, call.args):
            bound[parameter.name] = self.lower(argument, local)
        for keyword in call.keywords:
            if keyword.name not in names:
                raise LossArityError(
                    f"'{syntax.name}' has no parameter '{keyword.name}'",
                    keyword.span,
                    did_you_mean(keyword.name, names),
                )
            if keyword.name in bound:
                raise LossArityError(
                    f"'{syntax.name}' got two values for '{keyword.name}'", keyword.span
                )
            bound[keyword.name] = self.lower(keyword.value, local)
        inner = Lowerer(definition.scope, inputs_allowed=False, record=self.input_spans)
        inner.expanding = self.expanding + (definition.name,)
        for parameter in syntax.parameters:
            if parameter.name not in bound:
                if parameter.default is None:
                    raise LossArityError(
                        f"'{syntax.name}' is missing argument '{parameter.name}'", call.span
                    )
                bound[parameter.name] = inner.lower(parameter.default, dict(bound))
        return inner.lower(syntax.body, bound)


# ---------------------------------------------------------------------------------------------
# Modules


def params_used(graph: Node, scope: Scope) -> dict[str, float]:
    """The params a graph uses, with their default values."""
    used: dict[str, float] = {}
    for n in walk(graph):
        if n.op == "param":
            info = scope.find_param(n.value)
            used[n.value] = info.default if info else float("nan")
    return used


def inputs_used(graph: Node, spans: dict[str, Span]) -> tuple[str, ...]:
    """The inputs a graph uses, in order of first appearance in the source."""
    names = {n.value for n in walk(graph) if n.op == "input"}
    order = list(spans)
    return tuple(sorted(names, key=lambda name: order.index(name) if name in order else 1 << 30))


def _constant_value(value: Node, scope: Scope, span: Span) -> float:
    """A param's value: a constant expression, possibly of earlier params."""
    params = {name: info.default for s in scope._chain() for name, info in s.params.items()}
    try:
        (result,) = evaluate([value], {}, params)
    except KeyError:
        raise LossError("a param's value must be a constant expression", span) from None
    return float(result)


def build_scope(module: ast.Module, parent: Scope | None, loading: tuple[str, ...] = ()) -> Scope:
    """Resolve every statement of a parsed module into a :class:`Scope`."""
    scope = Scope(module.file, parent=parent)
    spans: dict[str, Span] = {}
    base = Path(module.file).resolve().parent if module.file else Path.cwd()
    # Declarations (imports, params, defs) come first, wherever they are written, so that a
    # param declared below a loss is still a param there; lets and losses follow in order.
    declarations = (ast.Import, ast.Param, ast.Def)
    ordered = [s for s in module.statements if isinstance(s, declarations)]
    ordered += [s for s in module.statements if not isinstance(s, declarations)]
    for statement in ordered:
        lowerer = Lowerer(scope, inputs_allowed=True, record=spans)
        if isinstance(statement, ast.Import):
            path = (base / statement.path).resolve()
            if str(path) in loading:
                raise LossError(f"circular import of '{statement.path}'", statement.span)
            if not path.is_file():
                raise LossNameError(
                    f"cannot import '{statement.path}': no such file", statement.span
                )
            scope.imports.append(load_scope(str(path), parent, loading))
        elif isinstance(statement, ast.Param):
            try:
                graph = lowerer.lower(statement.value, {})
            except LossNameError:
                raise LossError(
                    "a param's value must be a constant expression", statement.value.span
                ) from None
            scope.params[statement.name] = ParamInfo(
                statement.name,
                _constant_value(graph, scope, statement.span),
                statement.doc,
                statement.span,
            )
        elif isinstance(statement, ast.Def):
            seen: set[str] = set()
            for parameter in statement.parameters:
                if parameter.name in seen:
                    raise LossArityError(f"duplicate parameter '{parameter.name}'", parameter.span)
                seen.add(parameter.name)
            scope.defs[statement.name] = DefInfo(statement.name, statement, scope, statement.doc)
        elif isinstance(statement, ast.Let):
            scope.lets[statement.name] = lowerer.lower(statement.value, {})
        elif isinstance(statement, (ast.LossDecl, ast.ExpressionStatement)):
            graph = lowerer.lower(statement.value, {})
            name = statement.name if isinstance(statement, ast.LossDecl) else None
            definition = LossDefinition(
                name,
                graph,
                inputs_used(graph, spans),
                params_used(graph, scope),
                statement.doc,
                statement.span,
                dict(spans),
            )
            if name is None:
                if scope.expression is not None:
                    raise LossError(
                        "only one bare expression is allowed; name the others "
                        "with 'loss NAME = ...'",
                        statement.span,
                    )
                scope.expression = definition
            else:
                scope.losses[name] = definition
    return scope


@functools.cache
def prelude() -> Scope:
    """The built-in library (every ``*.loss`` file shipped in ``lossdsl/prelude``)."""
    root = Scope(None)
    for path in sorted(PRELUDE_DIR.glob("*.loss")):
        module = parse(path.read_text(), str(path))
        # each file sees the whole prelude: defs are looked up when a loss calls them
        root.imports.append(build_scope(module, root))
    return root


_FILE_CACHE: dict[tuple[str, float], Scope] = {}


def load_scope(path: str, parent: Scope | None = None, loading: tuple[str, ...] = ()) -> Scope:
    """Parse and resolve a ``.loss`` file (cached by path and modification time)."""
    resolved = str(Path(path).resolve())
    try:
        stamp = Path(resolved).stat().st_mtime
        text = Path(resolved).read_text()
    except OSError as error:
        raise LossNameError(f"cannot read '{path}': {error.strerror}") from None
    key = (resolved, stamp)
    if key not in _FILE_CACHE:
        module = parse(text, path)
        _FILE_CACHE[key] = build_scope(module, parent or prelude(), loading + (resolved,))
    return _FILE_CACHE[key]


def resolve_text(text: str) -> Scope:
    """Parse and resolve loss text given as a string."""
    return build_scope(parse(text, None), prelude())
