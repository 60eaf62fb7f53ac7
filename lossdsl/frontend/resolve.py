"""Name resolution: syntax tree → expression graph.

Resolves imports (paths relative to the importing file), params, lets and defs (inlined at
each call with their default arguments), checks arity, expands the built-in macros
(``logsumexp``, ``softmax``, ``pick``, ``clip``, ...) and turns every free name of a loss
expression into an input. The graph it returns has unknown axes (``None``); ``shapes.py``
gives them once the inputs are bound.

Scopes, innermost first: a def's parameters, the module's own lets, params and defs, those of
the modules it imports (a later import wins), the prelude, then the built-ins. A name is
defined once per file (a second ``param k`` or ``loss a`` is an error, not an override), a
let must come before its uses, and a let cannot use itself.

Graphs are built without recursion (an explicit work stack), so the depth of a def chain or
of a nested expression is not bounded by Python's stack; and each def is applied once per
distinct argument nodes (the graph is hash-consed), so a def that calls another twice on the
same arguments costs one application, not two.
"""

from __future__ import annotations

import errno
import functools
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..domains import (
    DeclaredRows,
    Domain,
    InputDomain,
    Requirement,
    declared_at,
    inside,
    number_text,
    sample_operation,
    unchecked_operation,
)
from ..errors import (
    LossArityError,
    LossDomainError,
    LossError,
    LossNameError,
    LossSyntaxError,
    Span,
    did_you_mean,
)
from ..ir.build import make
from ..ir.node import Node, constant, node, toposort
from ..ops.primitives import CLASS_VECTOR, CONSTANTS, FUNCTIONS, GROUP_REDUCTIONS
from ..ops.scans import SCANS
from ..reference import evaluate
from . import ast
from .parse import parse, parse_all

PRELUDE_DIR = Path(__file__).resolve().parent.parent / "prelude"
#: The prelude file of the language's own functions written in it (clip, softmax, xlogy, ...):
#: they behave as built-in functions, not as library losses.
CORE_PRELUDE = PRELUDE_DIR / "core.loss"


@dataclass(frozen=True)
class ParamInfo:
    """A ``param``: its default value, doc comment and where it was declared; ``derived``:
    its value's graph where that reads earlier params (``param k = 2*d``), which each use
    of the param stands for, so that it follows them when they are overridden."""

    name: str
    default: float
    doc: str
    span: Span
    derived: Node | None = None
    # the params ``derived`` reads, each as declared where this param is (see Lowerer.params)
    reads: tuple[tuple[str, ParamInfo], ...] = ()


@dataclass(frozen=True)
class DefInfo:
    """A ``def``: its syntax (inlined at each call) and the scope it was written in."""

    name: str
    syntax: ast.Def
    scope: Scope
    doc: str
    domains: dict[str, Domain] = field(default_factory=dict)  # by parameter name
    rows: dict[str, Span] = field(default_factory=dict)  # ``y[N, K]``: where each is declared


@dataclass(frozen=True)
class LossDefinition:
    """A resolved loss: its graph, its inputs in source order and the params it uses."""

    name: str | None
    graph: Node
    inputs: tuple[str, ...]
    params: dict[str, float]
    doc: str
    span: Span
    # where each input is first used, and each class index written as a number (keyed by
    # its repr, the name a label error gives it)
    input_spans: dict[str, Span]
    # the declared domains of the inputs and params (def parameters bound to them)
    domains: tuple[InputDomain, ...] = ()
    # the ``requires`` conditions of the defs it calls, over its inputs and params
    requirements: tuple[Requirement, ...] = ()
    # the arguments bound to def parameters declared rows (``y[N, K]``), which the shapes
    # pass checks once it knows the inputs' ranks
    rows: tuple[DeclaredRows, ...] = ()


@dataclass(eq=False)
class Scope:
    """One module's names, and the modules it imports."""

    file: str | None
    params: dict[str, ParamInfo] = field(default_factory=dict)
    defs: dict[str, DefInfo] = field(default_factory=dict)
    lets: dict[str, Node] = field(default_factory=dict)
    # what a let's value is checked against: declared domains and rows, def requirements
    let_checks: dict[str, tuple[InputDomain | DeclaredRows | Requirement, ...]] = field(
        default_factory=dict)
    # the params a let's value reads, each as declared where the let is
    let_params: dict[str, dict[str, ParamInfo]] = field(default_factory=dict)
    losses: dict[str, LossDefinition] = field(default_factory=dict)
    imports: list[Scope] = field(default_factory=list)
    parent: Scope | None = None  # the prelude, for user modules
    expression: LossDefinition | None = None
    # While the module is being resolved: its lets not resolved yet (a use of one is an error,
    # not a new input) and the one being resolved now.
    pending_lets: dict[str, Span] = field(default_factory=dict)
    defining_let: str | None = None
    # Only when resolving for diagnostics (see ``Diagnostics``): names whose definition had an
    # error, and whether an import failed, so that the uses are not reported a second time.
    broken: set[str] = field(default_factory=set)
    incomplete: bool = False
    # (path, mtime, size, inode) of the file read, for a module loaded from one
    source_key: tuple[str, int, int, int] | None = None

    def _chain(self):
        """This scope, then its imports (later first, each with its own imports), then the
        parents (the prelude); each scope once, so modules that see each other (the prelude's
        files) do not loop. Iterative, so a long chain of imports does not exhaust the
        stack."""
        seen: set[int] = set()
        stack: list[Scope] = [self]
        # Parents wait until every import has been searched: an imported module's parent is
        # the prelude, which would otherwise hide the defs of the imports still on the stack.
        parents: list[Scope] = []
        while stack or parents:
            scope = stack.pop() if stack else parents.pop(0)
            if id(scope) in seen:
                continue
            seen.add(id(scope))
            yield scope
            if scope.parent is not None:
                parents.append(scope.parent)
            stack.extend(scope.imports)  # popped last first: a later import wins

    def nearest_kind(self, name: str) -> tuple[str, Scope] | None:
        """What the nearest definition of ``name`` is ("def", "let" or "param") and the
        module holding it: params, defs and lets share one namespace, so a nearer one of
        another kind hides a farther def (or value) of that name."""
        for scope in self._chain():
            for kind, names in (("def", scope.defs), ("let", scope.lets),
                                ("param", scope.params)):
                if name in names:
                    return kind, scope
        return None

    def find_def(self, name: str) -> DefInfo | None:
        """The def ``name`` visible here, or None."""
        for scope in self._chain():
            if name in scope.defs:
                return scope.defs[name]
        return None

    def find_value(self, name: str) -> Node | None:
        """The graph of the let or param ``name`` visible here, or None."""
        for scope in self._chain():
            if name in scope.lets:
                return scope.lets[name]
            if name in scope.params:
                derived = scope.params[name].derived
                return derived if derived is not None else node("param", (), name, ())
        return None

    def find_value_params(self, name: str) -> Mapping[str, ParamInfo]:
        """The params the graph :meth:`find_value` gives for ``name`` reads, by name, each
        the one declared where that let or param is seen from."""
        for scope in self._chain():
            if name in scope.lets:
                return scope.let_params.get(name, {})
            if name in scope.params:
                info = scope.params[name]
                return dict(info.reads) if info.derived is not None else {name: info}
        return {}

    def find_let_checks(self, name: str) -> tuple[InputDomain | DeclaredRows | Requirement, ...]:
        """The declared domains and rows and def requirements the let ``name`` visible here
        puts on its inputs."""
        for scope in self._chain():
            if name in scope.lets:
                return scope.let_checks.get(name, ())
        return ()

    def has_loss(self, name: str) -> bool:
        """Whether a named loss ``name`` is defined here or in a module this one sees."""
        return any(name in scope.losses for scope in self._chain())

    def all_names(self) -> set[str]:
        """Every name visible here (for "did you mean" hints)."""
        names: set[str] = set(FUNCTIONS) | set(CONSTANTS)
        for scope in self._chain():
            names |= set(scope.params) | set(scope.defs) | set(scope.lets) | set(scope.losses)
        return names

    def function_names(self) -> set[str]:
        """Every function visible here: the built-ins and the defs."""
        names = set(FUNCTIONS)
        for scope in self._chain():
            names |= set(scope.defs)
        return names

    def _unresolved(self, name: str) -> bool:
        """Whether ``name`` may be one whose definition failed (diagnostics only)."""
        return any(scope.incomplete or name in scope.broken for scope in self._chain())


class _Unresolved(Exception):
    """A name whose definition already had a reported error: the statement using it is
    skipped instead of reporting the same mistake again (diagnostics only)."""


def _with_span(error: LossError, span: Span) -> LossError:
    """``error`` at ``span``: errors from the graph constructors do not know where in the
    source their operation was written."""
    if error.span is not None:
        return error
    try:
        located = type(error)(error.message, span, error.hint)
    except TypeError:  # a subclass with another constructor: keep its type, lose nothing
        located = LossError(error.message, span, error.hint)
    located.__dict__.update({k: v for k, v in error.__dict__.items()
                             if k not in ("message", "span", "hint", "file", "line", "column")})
    return located


def _coded(error: LossError, code: str) -> LossError:
    """Tag an error with its ``lossdsl check`` code."""
    error.code = code
    return error


# ---------------------------------------------------------------------------------------------
# Expression lowering


class _Context:
    """Where an expression is lowered: the scope, whether free names become inputs, the
    def parameters bound, and the defs being expanded (to report recursion); in a def's
    body, the call being expanded, its def and the caller's context (to report an error of
    an argument at the caller's text)."""

    __slots__ = ("scope", "inputs_allowed", "local", "expanding", "call", "definition",
                 "caller")

    def __init__(self, scope, inputs_allowed, local, expanding, call=None, definition=None,
                 caller=None):
        self.scope = scope
        self.inputs_allowed = inputs_allowed
        self.local = local
        self.expanding = expanding
        self.call = call
        self.definition = definition
        self.caller = caller


# Work-stack instructions of ``Lowerer.lower``.
_EVAL, _BUILD, _APPLY, _BIND, _STORE, _DECLARE, _REQUIRE = range(7)


class Lowerer:
    """Lowers syntax to graph nodes in one scope.

    ``lower`` runs an explicit work stack rather than recursing: a chain of 200 defs or a
    sum of 10,000 terms is as deep as it is long. Applications of a def are memoised on the
    def and its argument nodes; nodes are hash-consed, so equal arguments are the same node
    and a def called twice on the same arguments is expanded once (without this, each def
    that calls the previous one twice doubles the work).
    """

    def __init__(self, scope: Scope, inputs_allowed: bool, record: dict[str, Span]):
        self.scope = scope
        self.inputs_allowed = inputs_allowed
        self.input_spans = record  # first use of each input, in source order
        self.expanding: tuple[int, ...] = ()
        self._applied: dict[tuple, Node] = {}
        #: the declared domains met so far: def parameters bound to an input or a param
        self.domains: dict[tuple[str, Domain], InputDomain] = {}
        #: the requirements met so far whose conditions read inputs or params
        self.requirements: dict[Node, Requirement] = {}
        #: the arguments bound to parameters declared rows (``y[N, K]``) so far
        self.rows: dict[tuple[Node, str, str], DeclaredRows] = {}
        #: the params read so far, each as declared where it is read: two params of one name
        #: (declared in two modules) cannot meet in one graph, whose param nodes are named
        self.params: dict[str, ParamInfo] = {}
        #: where each class index written as a number is used (checked against the class
        #: count only at call time), by its repr
        self.constant_labels: dict[str, Span] = {}

    def lower(self, expression: ast.Expression, local: dict[str, Node]) -> Node:
        """The graph of ``expression`` with the def parameters ``local`` bound."""
        values: list[Node] = []
        tasks: list[tuple] = [
            (_EVAL, expression, _Context(self.scope, self.inputs_allowed, local, self.expanding))
        ]
        while tasks:
            task = tasks.pop()
            kind = task[0]
            if kind == _EVAL:
                self._evaluate(task[1], task[2], tasks, values)
            elif kind == _BUILD:
                self._build(task[1], values, task[2] if len(task) > 2 else None)
            elif kind == _APPLY:
                self._apply(task[1], task[2], task[3], tasks, values)
            elif kind == _BIND:
                task[2][task[1]] = values.pop()
            elif kind == _DECLARE:
                _, definition, name, bound, span = task
                self._declare(definition, name, bound[name], span)
            elif kind == _REQUIRE:
                _, definition, bound, span = task
                self._require(definition, bound, values.pop(), span)
            else:  # _STORE
                self._applied[task[1]] = values[-1]
        (result,) = values
        return result

    def _evaluate(self, e: ast.Expression, context: _Context, tasks: list, values: list) -> None:
        kind = type(e)
        if kind is ast.Number:
            values.append(constant(e.value))
        elif kind is ast.Name:
            values.append(self._name(e, context))
        elif kind is ast.BinOp:
            tasks += ((_BUILD, e), (_EVAL, e.right, context), (_EVAL, e.left, context))
        elif kind is ast.UnaryOp:
            tasks += ((_BUILD, e), (_EVAL, e.operand, context))
        elif kind is ast.IfElse:
            tasks += ((_BUILD, e), (_EVAL, e.otherwise, context), (_EVAL, e.then, context),
                      (_EVAL, e.condition, context))
        elif kind is ast.Call:
            self._call(e, context, tasks)
        else:
            raise LossError(f"cannot lower {kind.__name__}", getattr(e, "span", None))

    def _build(self, e: ast.Expression, values: list, context: _Context | None = None) -> None:
        """Combine the argument nodes on top of ``values`` into ``e``'s node (a built-in
        call's ``context``: where its errors are reported)."""
        kind = type(e)
        count = 2 if kind is ast.BinOp else 1 if kind is ast.UnaryOp else (
            3 if kind is ast.IfElse else len(e.args))
        args = values[len(values) - count:]
        del values[len(values) - count:]
        try:
            if kind is ast.Call:
                result = self._builtin(e, args, context)
            else:
                result = make("where" if kind is ast.IfElse else e.op, args)
        except LossError as error:
            raise _with_span(error, e.span) from None
        values.append(result)

    def _name(self, e: ast.Name, context: _Context) -> Node:
        if e.id in context.local:
            return context.local[e.id]
        scope = context.scope
        nearest = scope.nearest_kind(e.id)
        if nearest is not None and nearest[0] == "def" and not _in_prelude(nearest[1]):
            # a def of the user's own modules hides a value (an imported param) or an input
            # of that name (the prelude's defs do not: an input may be called gamma)
            raise LossNameError(f"'{e.id}' is a def here{_where(nearest[1])}, a function; "
                                "call it with arguments, or rename the def", e.span)
        found = scope.find_value(e.id)
        if found is not None:
            self._note_params(scope.find_value_params(e.id), e.span)
            for check in scope.find_let_checks(e.id):
                if isinstance(check, Requirement):
                    self.requirements.setdefault(check.condition, check)
                elif isinstance(check, DeclaredRows):
                    self.rows.setdefault((check.argument, check.function, check.parameter),
                                         check)
                else:
                    self.domains.setdefault((check.name, check.domain), check)
            return found
        if e.id in CONSTANTS:
            return constant(CONSTANTS[e.id])
        pending = scope.pending_lets.get(e.id)
        if pending is not None:
            if e.id == scope.defining_let:
                raise _coded(LossNameError(
                    f"let '{e.id}' refers to itself; a let cannot use its own value",
                    e.span, "give the new value another name"), "E203")
            raise _coded(LossNameError(
                f"'{e.id}' is used before its let (line {pending.line})", e.span,
                f"move 'let {e.id} = ...' above its first use"), "E204")
        if scope.broken or scope.incomplete:
            if scope._unresolved(e.id):
                raise _Unresolved(e.id)
        if not context.inputs_allowed:
            if scope.find_def(e.id) is not None or e.id in FUNCTIONS:
                raise LossNameError(f"'{e.id}' is a function; call it with arguments", e.span)
            candidates = set(context.local) | scope.all_names()
            raise LossNameError(
                f"unknown name '{e.id}' (a def may use only its parameters, params and lets)",
                e.span,
                did_you_mean(e.id, candidates),
            )
        self.input_spans.setdefault(e.id, e.span)
        return node("input", (), e.id, None)

    def _call(self, e: ast.Call, context: _Context, tasks: list) -> None:
        scope = context.scope
        nearest = scope.nearest_kind(e.function)
        if nearest is not None and nearest[0] != "def":
            # (a param named mse called the built-in mse; one named like an imported def,
            # that def)
            raise LossNameError(
                f"'{e.function}' is a {nearest[0]} here{_where(nearest[1])}, a value, not a "
                f"function; it hides any function of that name: rename the {nearest[0]}",
                e.span)
        # the nearest definition is a def (or there is none): the one find_def would find
        definition = nearest[1].defs[e.function] if nearest is not None else None
        if definition is not None:
            syntax = definition.syntax
            if id(definition) in context.expanding:
                raise LossError(f"'{definition.name}' is defined in terms of itself", e.span)
            names = [p.name for p in syntax.parameters]
            if len(e.args) > len(names):
                raise LossArityError(
                    f"'{syntax.name}' takes at most {len(names)} positional argument"
                    f"{'s' if len(names) != 1 else ''}, got {len(e.args)}",
                    e.span,
                )
            given = set(names[: len(e.args)])
            for keyword in e.keywords:
                if keyword.name not in names:
                    raise LossArityError(
                        f"'{syntax.name}' has no parameter '{keyword.name}'",
                        keyword.span,
                        did_you_mean(keyword.name, names),
                    )
                if keyword.name in given:
                    raise LossArityError(
                        f"'{syntax.name}' got two values for '{keyword.name}'", keyword.span
                    )
                given.add(keyword.name)
            tasks.append((_APPLY, e, context, definition))
            arguments = list(e.args) + [keyword.value for keyword in e.keywords]
            tasks += ((_EVAL, argument, context) for argument in reversed(arguments))
            return
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
            tasks.append((_BUILD, e, context))
            tasks += ((_EVAL, argument, context) for argument in reversed(e.args))
            return
        if (scope.broken or scope.incomplete) and scope._unresolved(e.function):
            raise _Unresolved(e.function)
        if scope.has_loss(e.function):
            raise LossNameError(
                f"'{e.function}' is a loss, and a loss cannot be called (a def can): write its "
                f"formula as 'def {e.function}(...) = ...' and call that, keeping "
                f"'loss {e.function} = {e.function}(...)' if the loss is wanted too",
                e.span,
            )
        raise LossNameError(
            f"unknown function '{e.function}'",
            e.span,
            did_you_mean(e.function, scope.function_names()),
        )

    def _apply(self, call: ast.Call, context: _Context, definition: DefInfo, tasks: list,
               values: list) -> None:
        """Bind a def's arguments (on top of ``values``) and schedule its defaults and body,
        unless it was already applied to the same argument nodes."""
        syntax = definition.syntax
        count = len(call.args) + len(call.keywords)
        arguments = values[len(values) - count:]
        del values[len(values) - count:]
        bound: dict[str, Node] = {}
        for parameter, value in zip(syntax.parameters, arguments[: len(call.args)]):
            bound[parameter.name] = value
        for keyword, value in zip(call.keywords, arguments[len(call.args):]):
            bound[keyword.name] = value
        key = (id(definition), tuple(bound.get(p.name) for p in syntax.parameters))
        done = self._applied.get(key)
        if done is not None:
            values.append(done)
            return
        missing = [p for p in syntax.parameters if p.name not in bound]
        for parameter in missing:
            if parameter.default is None:
                raise LossArityError(
                    f"'{syntax.name}' is missing argument '{parameter.name}'", call.span
                )
        if definition.domains or definition.rows:
            spans = {p.name: a.span for p, a in zip(syntax.parameters, call.args)}
            spans.update((k.name, k.value.span) for k in call.keywords)
            for name, value in bound.items():
                self._declare(definition, name, value, spans[name])
        # The defaults and the body see the def's own scope, never the caller's inputs; a
        # default may use the parameters before it, which are bound by then (the stack runs
        # each default, then binds it, in order).
        inner = _Context(definition.scope, False, bound, context.expanding + (id(definition),),
                         call, definition, context)
        tasks += ((_STORE, key), (_EVAL, syntax.body, inner))
        if syntax.requirement is not None:  # once every parameter is bound
            tasks += ((_REQUIRE, definition, bound, call.span),
                      (_EVAL, syntax.requirement.condition, inner))
        for parameter in reversed(missing):
            if parameter.name in definition.domains or parameter.name in definition.rows:
                tasks.append((_DECLARE, definition, parameter.name, bound,
                              parameter.default.span))
            tasks += ((_BIND, parameter.name, bound), (_EVAL, parameter.default, inner))

    def _group_ids_error(self, what: str, argument: ast.Expression,
                         context: _Context | None) -> LossArityError:
        """The error for group ids ``argument`` (``what``: which built-in's argument) that
        are not an input. Written as a def's parameter, it is reported at the argument of
        the outermost call that gave it (``ntxent(y, s, 0)``, not the prelude's ``pairmax``),
        naming that def's parameter, with the call to write instead."""
        needed = ("must be an input: the group id of each sample (a query, a customer, an "
                  "image), bound at call time")
        given, hop = argument, None
        while context is not None and context.call is not None \
                and isinstance(given, ast.Name) and given.id in context.local:
            call, parameters = context.call, context.definition.syntax.parameters
            index = next((i for i, p in enumerate(parameters) if p.name == given.id), None)
            if index is None:
                break
            outer = (call.args[index] if index < len(call.args) else
                     next((k.value for k in call.keywords if k.name == given.id), None))
            if outer is None:  # the parameter's default: written in the def
                break
            hop = (context.definition, parameters[index], call)
            given, context = outer, context.caller
        if hop is None:
            return LossArityError(f"{what} {needed}", argument.span)
        definition, parameter, call = hop
        name = parameter.name if parameter.name not in self.input_spans else "group_ids"
        written, text = given.span.text(), call.span.text()
        instead = f"an input such as '{name}'"
        if written and text and call.span.line == given.span.line \
                and (given.span.end_line or given.span.line) == given.span.line:
            start = given.span.column - call.span.column
            instead = f"{text[:start]}{name}{text[start + len(written):]}"
        hint = (f"write {instead} and pass {name} = numpy.zeros(N), one group of all the "
                "samples" if isinstance(given, ast.Number) else
                f"compute the group ids beforehand and write {instead}")
        return LossArityError(
            f"{definition.name}'s '{parameter.name}' {needed} (it gives {what}, declared "
            f"'{parameter.name}'{declared_at(parameter.span)}); got "
            f"{written or 'a computed value'}", given.span, hint)

    def _declare(self, definition: DefInfo, parameter: str, value: Node, span: Span) -> None:
        """Apply ``parameter``'s declared domain to the argument ``value`` (written at
        ``span``): a number is checked now, an input or a param at every call, and an
        argument computed from them elementwise (``hinge(2*y - 1, z)``) as a requirement
        that its values are in the domain. A parameter declared rows (``y[N, K]``) is noted
        for the shapes pass, which knows the inputs' ranks."""
        if parameter in definition.rows:
            sparse = f"sparse_{definition.name}"
            hint = (f"for class indices (N,) use {sparse}"
                    if definition.scope.find_def(sparse) is not None else
                    "pass one row of K values per sample; class indices (N,) become one-hot "
                    f"rows with onehot({span.text() or parameter})")
            self.rows.setdefault((value, definition.name, parameter), DeclaredRows(
                value, definition.name, parameter, definition.rows[parameter], span, hint))
        domain = definition.domains.get(parameter)
        if domain is None:
            return
        declared = next(p.domain.span for p in definition.syntax.parameters
                        if p.name == parameter)
        if value.op == "const":
            if value.value not in domain:
                raise LossDomainError(
                    f"{definition.name}'s '{parameter}' must be {domain.described()} "
                    f"(declared '{parameter} in {domain}'{declared_at(declared)}); got "
                    f"{number_text(value.value)}", span)
        elif value.op in ("input", "param"):
            self.domains.setdefault((value.value, domain), InputDomain(
                value.value, domain, definition.name, parameter, declared))
        elif (operation := sample_operation(value)) is not None:
            # a value of the whole batch: no row's check can say whether it is inside
            raise LossDomainError(
                f"{definition.name}'s '{parameter}' must be {domain.described()} (declared "
                f"'{parameter} in {domain}'{declared_at(declared)}), and this argument is "
                f"computed over the samples ({operation}), which lossdsl does not check at "
                "each call: compute it beforehand and pass it as an input or a param", span)
        elif unchecked_operation(value) is None:  # else (pick(z, 1)) left unchecked
            condition = inside(value, domain)
            self.requirements.setdefault(condition, Requirement(
                condition, definition.name, f"{parameter} in {domain}", declared,
                ((parameter, value),), span))

    def input_spans_of(self, inputs: tuple[str, ...],
                       first: Mapping[str, Span] | None = None) -> dict[str, Span]:
        """Where each of ``inputs`` and each class index written as a number is first
        used: in ``first`` (a loss's own text) where it is there, else anywhere before."""
        found = {**self.input_spans, **(first or {})}
        return {name: found[name] for name in inputs if name in found} | self.constant_labels

    def _require(self, definition: DefInfo, bound: dict[str, Node], condition: Node,
                 span: Span) -> None:
        """Apply ``definition``'s requirement, lowered to ``condition`` for the call at
        ``span`` with the parameters ``bound``: decided now if it reads numbers alone,
        recorded for every call otherwise."""
        requirement = definition.syntax.requirement
        named = _names(requirement.condition)
        text = requirement.span.text()
        text = text.removeprefix("requires").strip() if text else str(condition)
        found = Requirement(condition, definition.name, text, requirement.span,
                            tuple((p.name, bound[p.name]) for p in definition.syntax.parameters
                                  if p.name in named), span)
        if condition.op != "const":
            if unchecked_operation(condition) is not None:
                raise LossError("a requirement may use elementwise operations and rowsum, "
                                "which every call checks row by row; this one picks columns "
                                "or sums over samples", requirement.span)
            self.requirements.setdefault(condition, found)
        elif condition.value == 0 or condition.value != condition.value:  # false, or NaN
            raise found.error({name: value.value for name, value in found.arguments
                               if value.op == "const"}, None)

    def _note_params(self, params: Mapping[str, ParamInfo], span: Span) -> None:
        for name, info in params.items():
            seen = self.params.setdefault(name, info)
            if seen is not info:
                raise LossNameError(
                    f"two params named '{name}' meet here: one declared at "
                    f"{seen.span.place()}, the other at {info.span.place()} (a def or let "
                    f"of one module reads its own); rename one of them", span)

    def _constant_label(self, labels: Node, span: Span) -> None:
        """Refuse a class index written as a number that no class count makes valid, and
        note where it is written for the range check at call time."""
        if labels.op != "const":
            return
        index = labels.value
        if not 0 <= index < 2**31 or index != int(index):  # nan and inf fail too
            raise LossDomainError(f"a class index must be a non-negative integer; "
                                  f"found {index:g}", span)
        self.constant_labels.setdefault(repr(index), span)

    def _builtin(self, e: ast.Call, args: list[Node], context: _Context | None = None) -> Node:
        name = e.function
        if name == "onehot":
            width = None
            if len(args) == 2:
                count = args[1].value if args[1].op == "const" else None
                # written so that nan and inf fail the test rather than int()
                if count is None or not 1 <= count < 2**31 or count != int(count):
                    raise LossArityError(
                        "onehot's class count must be a positive integer", e.args[1].span
                    )
                width = int(count)
            self._constant_label(args[0], e.args[0].span)
            return make("eq", (node("class_index", (args[0],), width, None), args[0]))
        if name == "rowof":
            table, labels = args
            if table.op != "input":
                raise LossArityError(
                    "rowof's first argument must be an input: a (K, K) table bound at call "
                    "time, such as a cost matrix", e.args[0].span)
            return node("table_row", (table, labels), None, None)
        if name == "classvec":
            (vector,) = args
            if vector.op in ("const", "param"):
                return vector  # one number for every class
            if vector.op != "input":
                raise LossArityError(
                    "classvec's argument must be an input (a per-class vector (K,) bound at "
                    "call time, such as class weights) or a number", e.args[0].span)
            return node("table_row", (vector, constant(0.0)), CLASS_VECTOR, None)
        if name == "count_as":
            value, count = args
            if count.op == "const" and count.value == 1.0:
                return value
            return node("count_as", (value, count), None, None)
        if name in GROUP_REDUCTIONS or name == "group_logit_shift":
            *values, groups = args
            if groups.op != "input":
                position = "second" if len(args) == 2 else "third"
                raise self._group_ids_error(f"{name}'s {position} argument", e.args[-1],
                                            context)
            if name == "group_logit_shift":  # the shift b with sum sigmoid(z + b) = sum y
                labels, scores = (node("group", (v, groups), None, None) for v in values)
                return make("logit_shift", (scores, make("rowsum", (labels,))))
            reduction, rows = GROUP_REDUCTIONS[name]
            return make(reduction, (node(rows, (values[0], groups), None, None),))
        if name == "partner":
            (value,) = args
            if value.op in ("const", "param"):
                return value  # the same number at every sample
            return node("partner", (value,), None, None)
        if name == "partnersum":  # each class's sum over its partner classes
            return node("classpairs", tuple(args), None, None)
        if name == "classpairsum":  # a row's sum of its classes' sums over their partners
            return make("rowsum", (node("classpairs", tuple(args), None, None),))
        if name == "classnum":  # the class index, on the class axis it meets (onehot(0)'s)
            return node("class_index", (constant(0.0),), None, None)
        if name == "colsum":  # a group's total, every sample in the one group of key 0
            return make("sum_group", (args[0], constant(0.0), constant(0.0)))
        if name in SCANS:  # one stratum unless given
            return make(name, (*args, constant(0.0))[:3])
        if name == "pick":
            z, labels = args
            if z.op in ("const", "param") and labels.op not in ("const", "param"):
                return z  # a number is the same in every column (classvec(1.0) read at y)
            self._constant_label(labels, e.args[1].span)
            onehot = make("eq", (node("class_index", (labels,), None, None), labels))
            return make("rowsum", (make("mul", (z, onehot)),))
        return make(name, args)


# ---------------------------------------------------------------------------------------------
# Modules


def params_used(graph: Node, params: Mapping[str, ParamInfo]) -> dict[str, float]:
    """The params a graph uses, with their default values (``params``: those its lowerer
    read, :attr:`Lowerer.params`)."""
    used: dict[str, float] = {}
    for n in toposort([graph]):
        if n.op == "param" and n.value not in used:
            info = params.get(n.value)
            used[n.value] = info.default if info else float("nan")
    return used


def _names(expression: ast.Expression) -> set[str]:
    """Every name ``expression`` reads."""
    names, stack = set(), [expression]
    while stack:
        current = stack.pop()
        if isinstance(current, ast.Name):
            names.add(current.id)
        elif isinstance(current, ast.BinOp):
            stack += (current.left, current.right)
        elif isinstance(current, ast.UnaryOp):
            stack.append(current.operand)
        elif isinstance(current, ast.IfElse):
            stack += (current.condition, current.then, current.otherwise)
        elif isinstance(current, ast.Call):
            stack += (*current.args, *(k.value for k in current.keywords))
    return names


def _where(scope: Scope) -> str:
    """`` (in FILE)`` for a module read from a file, else ""."""
    return f" (in {scope.file})" if scope.file else ""


def inputs_used(graph: Node, spans: dict[str, Span],
                requirements: Iterable[Requirement] = ()) -> tuple[str, ...]:
    """The inputs a graph and the conditions of its ``requirements`` use, in order of first
    appearance in the source."""
    roots = [graph, *(r.condition for r in requirements)]
    names = {n.value for n in toposort(roots) if n.op == "input"}
    order = {name: index for index, name in enumerate(spans)}
    return tuple(sorted(names, key=lambda name: order.get(name, 1 << 30)))


def _constant_value(value: Node, params: Mapping[str, ParamInfo], span: Span,
                    what: str = "a param's value") -> float:
    """A param's value (or ``what`` else): a constant expression, possibly of earlier
    params."""
    # Only the params this value uses: copying every visible param for each of thousands of
    # params made a long file quadratic.
    try:
        (result,) = evaluate([value], {}, params_used(value, params))
        return float(result)
    except KeyError:
        raise LossError(f"{what} must be a constant expression", span) from None
    except (ArithmeticError, ValueError, TypeError, IndexError) as error:
        raise LossError(f"{what} cannot be computed ({error})", span) from None


def _domain(syntax: ast.DomainSyntax, scope: Scope) -> Domain:
    """A parameter's declared domain, its bounds evaluated: numbers (``-1``, ``inf``,
    ``1/3``), never params, which a call may change."""
    bounds = []
    for expression in (*syntax.members, syntax.low, syntax.high):
        if expression is None:
            continue
        free: dict[str, Span] = {}
        graph = Lowerer(scope, inputs_allowed=True, record=free).lower(expression, {})
        used = next((n.value for n in toposort([graph]) if n.op == "param"), None)
        if free or used is not None:
            name = next(iter(free), used)
            raise LossError(f"a domain's bounds must be numbers; '{name}' is not a constant",
                            free.get(name, expression.span))
        bounds.append(_constant_value(graph, {}, expression.span, "a domain's bound"))
    if any(bound != bound for bound in bounds):
        raise LossError("a domain's bounds cannot be nan", syntax.span)
    if syntax.members:
        return Domain(tuple(dict.fromkeys(bounds)))
    low, high = bounds
    if not low < high:
        raise LossError(f"an interval's low end must be below its high end, got "
                        f"{number_text(low)} and {number_text(high)}", syntax.span)
    return Domain((), low, high, syntax.low_open, syntax.high_open)


@dataclass
class Diagnostics:
    """Every error and warning found while resolving, instead of stopping at the first.

    ``errors`` are :class:`LossError` s (with ``code`` where resolve gives one); ``warnings``
    are LossErrors too (for their position and rendering) that do not make the file invalid.
    """

    errors: list[LossError] = field(default_factory=list)
    warnings: list[LossError] = field(default_factory=list)


_NAMESPACE = {ast.Param: "param", ast.Def: "def", ast.Let: "let"}


def _duplicates(module: ast.Module) -> dict[int, LossError]:
    """The statements that define a name already defined in the file, each with its error.

    Params, defs and lets share one namespace (a name is one thing in a file), loss names
    another (a loss may be named like the def it calls)."""
    found: dict[int, LossError] = {}
    first: dict[tuple[bool, str], ast.Statement] = {}
    for statement in module.statements:
        if isinstance(statement, ast.LossDecl):
            namespace = True
        elif isinstance(statement, (ast.Param, ast.Def, ast.Let)):
            namespace = False
        else:
            continue
        key = (namespace, statement.name)
        earlier = first.setdefault(key, statement)
        if earlier is statement:
            continue
        what = "loss" if namespace else _NAMESPACE[type(earlier)]
        span = statement.name_span or statement.span
        found[id(statement)] = _coded(LossNameError(
            f"'{statement.name}' is already defined (as a {what} on line {earlier.span.line})",
            span, "a name is defined once per file; rename one of them"), "E201")
    return found


def _statement_name(statement: ast.Statement) -> str | None:
    return getattr(statement, "name", None)


def build_scope(
    module: ast.Module,
    parent: Scope | None,
    loading: tuple[str, ...] = (),
    diagnostics: Diagnostics | None = None,
) -> Scope:
    """Resolve every statement of a parsed module into a :class:`Scope`.

    Raises the first :class:`LossError`, or, with ``diagnostics``, records every error (a
    statement with an error is left out, and the uses of what it defined are not reported
    again) and returns what resolved.
    """
    scope = Scope(module.file, parent=parent)
    if diagnostics is not None:
        scope.broken |= module.broken
        scope.incomplete = module.incomplete
    spans: dict[str, Span] = {}
    base = Path(module.file).resolve().parent if module.file else Path.cwd()
    duplicates = _duplicates(module)
    scope.pending_lets = {
        s.name: s.name_span or s.span
        for s in module.statements
        if isinstance(s, ast.Let) and id(s) not in duplicates
    }
    # Declarations (imports, params, defs) come first, wherever they are written, so that a
    # param declared below a loss is still a param there; lets and losses follow in order.
    declarations = (ast.Import, ast.Param, ast.Def)
    ordered = [s for s in module.statements if isinstance(s, declarations)]
    ordered += [s for s in module.statements if not isinstance(s, declarations)]
    for statement in ordered:
        try:
            if id(statement) in duplicates:
                raise duplicates[id(statement)]
            _resolve_statement(statement, scope, spans, base, parent, loading, diagnostics)
        except _Unresolved:
            if _statement_name(statement):
                scope.broken.add(statement.name)
        except LossError as error:
            if error.span is None:
                error = _with_span(error, statement.span)
            if diagnostics is None:
                raise error from None
            diagnostics.errors.append(error)
            if isinstance(statement, ast.Import):
                scope.incomplete = True
            elif _statement_name(statement) and id(statement) not in duplicates:
                scope.broken.add(statement.name)
        finally:
            if isinstance(statement, ast.Let) and scope.defining_let == statement.name:
                scope.defining_let = None
                scope.pending_lets.pop(statement.name, None)
    scope.pending_lets = {}
    return scope


def _resolve_statement(statement, scope, spans, base, parent, loading, diagnostics) -> None:
    lowerer = Lowerer(scope, inputs_allowed=True, record=spans)
    if isinstance(statement, ast.Import):
        scope.imports.append(_import(statement, base, parent, loading, diagnostics))
    elif isinstance(statement, ast.Param):
        free: dict[str, Span] = {}
        value_lowerer = Lowerer(scope, inputs_allowed=True, record=free)
        graph = value_lowerer.lower(statement.value, {})
        if free:
            name, span = next(iter(free.items()))
            raise LossError(
                f"a param's value must be a constant expression: '{name}' is not a param "
                "defined above it nor a constant", span)
        reads_params = any(n.op == "param" for n in toposort([graph]))
        scope.params[statement.name] = ParamInfo(
            statement.name,
            _constant_value(graph, value_lowerer.params, statement.value.span),
            statement.doc,
            statement.span,
            graph if reads_params else None,
            tuple(value_lowerer.params.items()),
        )
    elif isinstance(statement, ast.Def):
        seen: set[str] = set()
        for parameter in statement.parameters:
            if parameter.name in seen:
                raise LossArityError(f"duplicate parameter '{parameter.name}'", parameter.span)
            seen.add(parameter.name)
        domains = {p.name: _domain(p.domain, scope) for p in statement.parameters if p.domain}
        rows = {p.name: p.rows for p in statement.parameters if p.rows}
        scope.defs[statement.name] = DefInfo(statement.name, statement, scope, statement.doc,
                                             domains, rows)
    elif isinstance(statement, ast.Let):
        scope.defining_let = statement.name
        scope.lets[statement.name] = lowerer.lower(statement.value, {})
        scope.let_params[statement.name] = dict(lowerer.params)
        if lowerer.domains or lowerer.rows or lowerer.requirements:
            scope.let_checks[statement.name] = (*lowerer.domains.values(),
                                                *lowerer.rows.values(),
                                                *lowerer.requirements.values())
    elif isinstance(statement, (ast.LossDecl, ast.ExpressionStatement)):
        name = statement.name if isinstance(statement, ast.LossDecl) else None
        if name is None and scope.expression is not None:
            raise LossError(
                "only one bare expression is allowed; name the others "
                "with 'loss NAME = ...'",
                statement.span,
            )
        # where this loss itself first uses each input (an error about an input points
        # there, not at a use in another loss or in a let this loss does not read)
        written_here: dict[str, Span] = {}
        lowerer.input_spans = written_here
        try:
            graph = lowerer.lower(statement.value, {})
        finally:
            lowerer.input_spans = spans
            for input_name, span in written_here.items():
                spans.setdefault(input_name, span)
        inputs = inputs_used(graph, spans, lowerer.requirements.values())
        definition = LossDefinition(
            name,
            graph,
            inputs,
            params_used(graph, lowerer.params),
            statement.doc,
            statement.span,
            lowerer.input_spans_of(inputs, written_here),
            tuple(lowerer.domains.values()),
            tuple(lowerer.requirements.values()),
            tuple(lowerer.rows.values()),
        )
        if name is None:
            scope.expression = definition
        else:
            scope.losses[name] = definition


def _import(statement: ast.Import, base: Path, parent: Scope | None, loading: tuple[str, ...],
            diagnostics: Diagnostics | None) -> Scope:
    path = _resolved_path(base / statement.path, statement.path, statement.span, "import")
    if str(path) in loading:
        raise LossError(f"circular import of '{statement.path}'", statement.span)
    return load_scope(str(path), parent, loading, statement.span, statement.path)


# ---------------------------------------------------------------------------------------------
# Files

MAX_SOURCE_BYTES = 16 * 1024 * 1024


def _shown(path: str) -> str:
    """A path as error messages show it: quoted, control characters escaped, shortened."""
    text = repr(str(path))[1:-1]
    return f"'{text[:60]}...{text[-60:]}'" if len(text) > 130 else f"'{text}'"


def _file_error(message: str, path: str, span: Span | None, cls=LossNameError) -> LossError:
    """An error about a whole file: at the import that named it, else at the file's start."""
    where = span if span is not None else Span(repr(str(path))[1:-1], 1, 1)
    return _coded(cls(message, where), "E101" if cls is LossNameError else "E102")


def _resolved_path(path, shown: str, span: Span | None, verb: str = "read") -> Path:
    """``path`` made absolute with symlinks followed, or a LossError (NUL bytes, loops,
    names too long)."""
    try:
        return Path(path).resolve()
    except ValueError:  # an embedded NUL byte
        raise _file_error(f"cannot {verb} {_shown(shown)}: the path contains a NUL byte",
                          str(path), span) from None
    except RuntimeError:  # a symlink loop (Python < 3.13)
        raise _file_error(f"cannot {verb} {_shown(shown)}: too many levels of symbolic links",
                          str(path), span) from None
    except OSError as error:
        raise _file_error(f"cannot {verb} {_shown(shown)}: {error.strerror}", str(path),
                          span) from None


def is_loss_file(path: str) -> bool:
    """Whether a path names a loss file (``*.loss``, and so does the file a symlink points
    to): only such files have their lines quoted in errors before they are known to be loss
    text."""
    try:
        return str(path).endswith(".loss") and os.path.realpath(path).endswith(".loss")
    except (OSError, ValueError):
        return False


def read_source(path: str, span: Span | None = None, name: str | None = None) -> str:
    """The text of a loss file, or a LossError that says why it cannot be one.

    Only regular files are read (a FIFO would block, a device never end), at most
    ``MAX_SOURCE_BYTES``; the text must be UTF-8 (a byte-order mark is allowed) without NUL
    bytes. Errors point at the import that named the file (``span``), else at the file; an
    undecodable byte's line is quoted only for a ``*.loss`` file, so that naming, say,
    ``/etc/passwd`` never prints what is in it. ``name`` is the path as the user wrote it.
    """
    shown = _shown(name if name is not None else path)
    verb = "import" if span is not None else "read"
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except ValueError:
        raise _file_error(f"cannot {verb} {shown}: the path contains a NUL byte", path,
                          span) from None
    except OSError as error:
        reason = "no such file" if error.errno == errno.ENOENT and span is not None else (
            error.strerror or str(error))
        raise _file_error(f"cannot {verb} {shown}: {reason}", path, span) from None
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            kind = ("a directory" if stat.S_ISDIR(info.st_mode) else
                    "a FIFO" if stat.S_ISFIFO(info.st_mode) else
                    "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else
                    "a socket" if stat.S_ISSOCK(info.st_mode) else "not a regular file")
            raise _file_error(f"cannot {verb} {shown}: it is {kind}, not a loss file", path,
                              span)
        chunks = []
        size = 0
        while size <= MAX_SOURCE_BYTES:
            chunk = os.read(descriptor, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
    except OSError as error:
        raise _file_error(f"cannot {verb} {shown}: {error.strerror}", path, span) from None
    finally:
        os.close(descriptor)
    if len(data) > MAX_SOURCE_BYTES:
        raise _file_error(f"cannot {verb} {shown}: larger than {MAX_SOURCE_BYTES >> 20} MiB, "
                          "too large for a loss file", path, span)
    if b"\0" in data:
        raise _file_error(f"{shown} is a binary file, not loss text", path, span,
                          LossSyntaxError)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        before = data[: error.start]
        line = before.count(b"\n") + 1
        line_start = before.rfind(b"\n") + 1
        column = len(before[line_start:].decode("utf-8", "replace")) + 1
        source = data.decode("utf-8", "replace") if is_loss_file(path) else None
        raise _coded(LossSyntaxError(
            f"byte 0x{data[error.start]:02x} is not UTF-8 text",
            Span(path, line, column, source=source),
            "save the file as UTF-8",
        ), "E102") from None
    return text.removeprefix("\ufeff")


def _parse_file(text: str, path: str, diagnostics: Diagnostics | None) -> ast.Module:
    """Parse a file's text; a syntax error in a file not named ``*.loss`` says where, but not
    what is there: the file may be anything (``import "/etc/passwd"``)."""
    if diagnostics is None:
        try:
            return parse(text, path)
        except LossSyntaxError as error:
            raise _not_loss_text(error, path) from None
    module, errors = parse_all(text, path)
    diagnostics.errors.extend(_not_loss_text(error, path) for error in errors)
    return module


def _not_loss_text(error: LossSyntaxError, path: str) -> LossSyntaxError:
    if is_loss_file(path):
        return error
    return _coded(LossSyntaxError(
        f"{_shown(path)} does not parse as loss text here",
        Span(error.file, error.line or 1, error.column or 1),
        "loss files are named *.loss",
    ), "E102")


_FILE_CACHE: dict[tuple[str, int, int, int], Scope] = {}


def load_scope(
    path: str,
    parent: Scope | None = None,
    loading: tuple[str, ...] = (),
    span: Span | None = None,
    name: str | None = None,
) -> Scope:
    """Parse and resolve a ``.loss`` file (cached by path, size and modification time).

    ``span`` is the import that names the file, where errors about the file itself point, and
    ``name`` the path as the import wrote it.
    """
    shown = name if name is not None else path
    verb = "import" if span is not None else "read"
    resolved = str(_resolved_path(path, shown, span, verb))
    try:
        info = os.stat(resolved)
    except OSError as error:
        reason = "no such file" if error.errno == errno.ENOENT and span is not None else (
            error.strerror)
        raise _file_error(f"cannot {verb} {_shown(shown)}: {reason}", path, span) from None
    key = _file_key(resolved, info)
    scope = _FILE_CACHE.get(key)
    if scope is None or not _imports_unchanged(scope):
        text = read_source(path, span, shown)
        module = _parse_file(text, path, None)
        scope = build_scope(module, parent or prelude(), loading + (resolved,))
        scope.source_key = key
        _FILE_CACHE[key] = scope
    return scope


def _file_key(resolved: str, info: os.stat_result) -> tuple[str, int, int, int, int]:
    """What identifies a version of a file for the in-process cache of loaded modules. The
    change time too: an edit that keeps the size can keep the modification time (coarse
    timestamps, ``cp -p``, ``rsync -t``, ``touch -r``), but no tool sets the change time."""
    return (resolved, info.st_mtime_ns, info.st_ctime_ns, info.st_size, info.st_ino)


def _imports_unchanged(scope: Scope) -> bool:
    """Whether every file ``scope`` imports, directly or not, is as it was when read (an
    edited import must not leave the module that imports it on its old contents)."""
    seen: set[int] = set()
    stack = list(scope.imports)
    while stack:
        module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        if module.source_key is not None:
            resolved = module.source_key[0]
            try:
                info = os.stat(resolved)
            except OSError:
                return False
            if _file_key(resolved, info) != module.source_key:
                return False
        stack.extend(module.imports)
    return True


@functools.cache
def prelude() -> Scope:
    """The built-in library (every ``*.loss`` file shipped in ``lossdsl/prelude``)."""
    root = Scope(None)
    for path in sorted(PRELUDE_DIR.glob("*.loss")):
        module = parse(path.read_text(encoding="utf-8"), str(path))
        # each file sees the whole prelude: defs are looked up when a loss calls them
        root.imports.append(build_scope(module, root))
    return root


def resolve_text(text: str) -> Scope:
    """Parse and resolve loss text given as a string."""
    return build_scope(parse(text, None), prelude())


# ---------------------------------------------------------------------------------------------
# Diagnostics (``lossdsl check``)


def def_as_loss(info: DefInfo, scope: Scope) -> LossDefinition | None:
    """A def applied to inputs named like its parameters without defaults, as a loss (for
    checking a def on its own); None if it uses a name whose definition had an error."""
    syntax = info.syntax
    arguments = tuple(ast.Name(p.span, p.name) for p in syntax.parameters if p.default is None)
    call = ast.Call(syntax.span, syntax.name, arguments, ())
    spans: dict[str, Span] = {}
    lowerer = Lowerer(scope, inputs_allowed=True, record=spans)
    try:
        graph = lowerer.lower(call, {})
    except _Unresolved:
        return None
    inputs = inputs_used(graph, spans, lowerer.requirements.values())
    return LossDefinition(syntax.name, graph, inputs, params_used(graph, lowerer.params), info.doc,
                          syntax.span,
                          lowerer.input_spans_of(inputs),
                          tuple(lowerer.domains.values()), tuple(lowerer.requirements.values()),
                          tuple(lowerer.rows.values()))


def one_edit_apart(a: str, b: str) -> bool:
    """Whether ``b`` is ``a`` with one character inserted, deleted, replaced, or two
    neighbours swapped (Damerau-Levenshtein distance 1)."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        differ = [i for i in range(len(a)) if a[i] != b[i]]
        if len(differ) == 1:
            return True
        return (len(differ) == 2 and differ[1] == differ[0] + 1
                and a[differ[0]] == b[differ[1]] and a[differ[1]] == b[differ[0]])
    shorter, longer = (a, b) if len(a) < len(b) else (b, a)
    i = 0
    while i < len(shorter) and shorter[i] == longer[i]:
        i += 1
    return shorter[i:] == longer[i + 1:]


# Shorter names are too often one edit from another on purpose (p, z, y1, lr).
_NEAR_MISS_MIN_LENGTH = 3


def near_miss_inputs(scope: Scope) -> list[LossError]:
    """Warnings for inputs of the module's losses that are one edit away from a param, let or
    def it can see (the library's losses included): most likely a misspelt name that silently
    became a new input (``undr*(y - p)`` where ``under`` is a param, ``hubr`` for ``huber``).

    Built-in functions such as ``cos`` (and those ``prelude/core.loss`` writes, such as
    ``cosh``) are not candidates: they cannot be used without arguments, so an input named
    ``cost`` is not a misspelling of one."""
    definitions = list(scope.losses.values())
    if scope.expression is not None:
        definitions.append(scope.expression)
    kinds: dict[str, str] = {}
    for visible in reversed(list(scope._chain())):  # nearer scopes overwrite farther ones
        library = _in_prelude(visible)
        if not is_core_prelude(visible):
            kinds.update({name: "library def" if library else "def" for name in visible.defs})
        kinds.update({name: "param" for name in visible.params})
        kinds.update({name: "let" for name in visible.lets})
    candidates = [name for name in kinds if len(name) >= _NEAR_MISS_MIN_LENGTH]
    warnings: list[LossError] = []
    reported: set[str] = set()
    for definition in definitions:
        for name in definition.inputs:
            if name in reported or len(name) < _NEAR_MISS_MIN_LENGTH or name in kinds:
                continue
            close = sorted(c for c in candidates if one_edit_apart(name, c))
            if not close:
                continue
            reported.add(name)
            suggestion = close[0]
            warnings.append(_coded(LossNameError(
                f"input '{name}' is one edit away from the {kinds[suggestion]} "
                f"'{suggestion}'",
                definition.input_spans.get(name, definition.span),
                f"did you mean '{suggestion}'? (otherwise '{name}' is a new input, bound at "
                "call time)"), "W201"))
    return warnings


def is_core_prelude(scope: Scope) -> bool:
    """Whether ``scope`` is ``prelude/core.loss``, the language's own functions."""
    return scope.file is not None and Path(scope.file) == CORE_PRELUDE


def _in_prelude(scope: Scope) -> bool:
    return scope.file is not None and Path(scope.file).parent == PRELUDE_DIR


def diagnose_file(path: str) -> tuple[Scope | None, Diagnostics]:
    """Every error and warning in a loss file (``lossdsl check``): unreadable files, each
    syntax error, each statement that does not resolve, misspelt-looking inputs. Returns the
    scope of what resolved (None if the file could not be read) and the diagnostics."""
    diagnostics = Diagnostics()
    try:
        resolved = str(_resolved_path(path, path, None))
        text = read_source(path)
    except LossError as error:
        diagnostics.errors.append(error)
        return None, diagnostics
    module = _parse_file(text, path, diagnostics)
    scope = build_scope(module, prelude(), (resolved,), diagnostics)
    diagnostics.warnings.extend(near_miss_inputs(scope))
    return scope, diagnostics
