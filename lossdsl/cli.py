"""The ``lossdsl`` command line: check, derive, codegen, eval, plot, list, show, bench.

Run ``lossdsl --help`` (or ``python -m lossdsl --help``) for the overview and
``lossdsl COMMAND --help`` for each command. Errors in loss text print as
``file:line:col: message`` with the source line and a caret, on stderr, with exit status 1;
misuse of the command line itself exits with status 2 (argparse's convention).

A loss argument (``LOSS`` below) is one of:

* a path to a ``.loss`` file: its bare expression, or its only named loss;
* ``FILE.loss:NAME``: the loss ``NAME`` of that file;
* the name of a built-in loss (``huber``), called on inputs named like its required
  parameters, the others at their defaults (``huber(y, p)``: delta 1.0);
* an expression: ``"huber(y, p, delta=0.5) + 0.1*l1(w)"`` (quote it for the shell).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import __version__, catalog
from .api import REDUCTIONS, CompiledLoss, Loss, load, loss_from_text
from .api import compile as compile_loss
from .datafiles import (
    OUTPUT_SUFFIXES,
    DataError,
    Progress,
    Table,
    check_output,
    open_table,
    open_writer,
)
from .errors import LossDomainError, LossError, did_you_mean
from .plotting import couples_samples, misplaced_hint

EPILOG = """\
loss arguments (LOSS):
  FILE.loss            the file's expression, or its only named loss
  FILE.loss:NAME       the loss NAME of that file
  NAME                 a built-in loss, e.g. huber (see 'lossdsl list')
  EXPRESSION           loss text, e.g. "huber(y, p, 1.0) + 0.1*l1(w)"

examples:
  lossdsl list                                   the built-in losses
  lossdsl show huber                             formula, parameters, derivatives
  lossdsl check losses/*.loss                    parse, resolve and type-check (for CI)
  lossdsl derive "bce_logits(y, z)" --wrt z --hessian
  lossdsl codegen fraud.loss:fraud --target parallel
  lossdsl eval huber --data scores.csv --map y=label,p=score --grad p -o out.csv
  lossdsl plot mse huber log_cosh --range -3:3 -o losses.png
  lossdsl bench "huber(y, p, 1.0)" -n 1000000

Errors in loss text are printed as file:line:col with the source line and a caret; the exit
status is 1 for errors in losses or data, 2 for a wrong command line.

Documentation: docs/language.md, docs/tutorial.md, docs/business-costs.md, docs/losses.md.
"""


class CliError(Exception):
    """A command line that argparse accepts and lossdsl cannot carry out: the loss, the data
    or the options do not fit together (exit status 1)."""


class UsageError(CliError):
    """An option's value that argparse cannot check and that is malformed or out of range
    (``--map yy``, ``--chunk-size 0``): a wrong command line, exit status 2 as argparse's
    own usage errors."""


# ------------------------------------------------------------------------- loss arguments


def _pick_loss(path: Path, name: str | None) -> Loss:
    library = load(path)
    if name:
        if name in library.losses:
            return library.losses[name]
        hint = did_you_mean(name, library.losses)
        raise CliError(f"{path} has no loss named {name!r} (losses: "
                       f"{', '.join(library.losses) or 'none'})" + (f"; {hint}" if hint else ""))
    if library.scope.expression is not None:
        return Loss(library.scope.expression, library.scope)
    if len(library.losses) == 1:
        return next(iter(library.losses.values()))
    if not library.losses:
        raise CliError(f"{path} defines no loss (write 'loss NAME = ...' or an expression)")
    names = ", ".join(library.losses)
    raise CliError(f"{path} defines several losses ({names}); pick one with {path}:NAME")


def resolve_loss(spec: str) -> tuple[str, Loss]:
    """``(label, Loss)`` for a loss argument: a file, ``FILE:NAME``, a built-in name or text."""
    if _is_file(spec):
        return Path(spec).stem, _pick_loss(Path(spec), None)
    head, colon, tail = spec.rpartition(":")
    if colon and _is_file(head):
        return tail, _pick_loss(Path(head), tail)
    file_part = head if colon else spec
    if file_part.endswith(".loss"):
        raise CliError(f"{file_part}: no such file")
    loss = loss_from_text(spec)  # a built-in's bare name means the library loss
    if spec.strip().isidentifier() and loss.inputs == (spec.strip(),):
        # a bare name that is no built-in loss would be the loss "that input": a typo
        hint = did_you_mean(spec.strip(), [e.name for e in catalog.entries()])
        raise CliError(f"no built-in loss named {spec.strip()!r}"
                       + (f"; {hint}" if hint else "; see 'lossdsl list'"))
    return spec, loss


def _is_file(text: str) -> bool:
    """Whether ``text`` names an existing file (False for text no path can be: a long loss
    formula, which the OS refuses as a file name)."""
    try:
        return Path(text).is_file()
    except (OSError, ValueError):
        return False


def _same_file(a: str, b: str) -> bool:
    try:
        return Path(a).exists() and os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def _names(values: Iterable[str] | None) -> list[str]:
    """Names from repeated and/or comma-separated options (``--wrt p --wrt w``, ``p,w``)."""
    return [n.strip() for value in values or () for n in value.split(",") if n.strip()]


def _assignments(values: Iterable[str] | None, option: str) -> dict[str, str]:
    """``NAME=VALUE`` pairs from repeated and/or comma-separated options."""
    result = {}
    for item in _names(values):
        name, equals, value = item.partition("=")
        if not equals or not name.strip() or not value.strip():
            raise UsageError(f"{option} expects NAME={'COLUMN' if option == '--map' else 'VALUE'}, "
                           f"got {item!r}")
        result[name.strip()] = value.strip()
    return result


def _numbers(values: Iterable[str] | None, option: str) -> dict[str, float]:
    result = {}
    for name, text in _assignments(values, option).items():
        try:
            result[name] = float(text)
        except ValueError:
            raise UsageError(f"{option} {name}={text}: not a number") from None
    return result


PREDICTION_NAMES = ("p", "z", "pred", "prediction", "y_pred", "yhat", "y_hat", "logit",
                    "logits", "score", "margin", "f")
TARGET_NAMES = ("y", "t", "target", "label", "labels", "y_true")


def _prediction(loss: Loss) -> str:
    """The input differentiated by default (see :func:`lossdsl.notebook.prediction_input`)."""
    from .notebook import prediction_input

    name = prediction_input(loss)
    if name is None:
        raise CliError("this loss has no inputs to differentiate")
    return name


def _wrt(loss: Loss, requested: list[str]) -> list[str]:
    names = requested or [_prediction(loss)]
    for name in names:
        if name not in loss.inputs:
            hint = did_you_mean(name, loss.inputs)
            raise CliError(f"'{name}' is not an input of this loss (inputs: "
                           f"{', '.join(loss.inputs)})" + (f"; {hint}" if hint else ""))
    return names


def _argument_hint(entry: catalog.Entry, name: str, value: float) -> str:
    """What to write for a built-in's argument given as ``--param``: the call itself."""
    return (f"'{name}' is an argument of {entry.name}, not a param of the loss: write it in "
            f"the formula, e.g. \"{entry.name}({', '.join(entry.required)}, "
            f"{name}={value:g})\"")


def _refuse_params_that_are_inputs(loss: Loss, params: dict[str, float]) -> None:
    """Raise where ``--param`` names an input of the loss: it would be left unset (or read
    from a column) while the user believes it fixed."""
    for name in params:
        if name in loss.inputs and name not in loss.params:
            raise CliError(
                f"--param {name}: '{name}' is an input of the loss, not a param (a param is "
                f"declared in a .loss file, 'param {name} = VALUE'); give the input a column "
                f"with --map {name}=COLUMN, or write the number into the formula")


def _compiled(loss: Loss, args, reduction: str) -> CompiledLoss:
    params = _numbers(getattr(args, "param", None), "--param")
    _refuse_params_that_are_inputs(loss, params)
    spec = str(getattr(args, "loss", ""))
    entry = catalog.entry(spec) if re.fullmatch(r"\w+", spec) else None
    if entry is not None:
        arguments = [name for name, default in entry.parameters if default is not None]
        given = next((name for name in params if name in arguments), None)
        if given is not None:  # a built-in's argument, which a bare name leaves at its default
            raise CliError(_argument_hint(entry, given, params[given]))
    return CompiledLoss(loss, getattr(args, "target", "cpu"), reduction, params)


# ------------------------------------------------------------------------------- check


def _check_definition(compiled: CompiledLoss) -> None:
    """Type the loss for its default input ranks and differentiate it by every input."""
    from .passes import diff

    constants = compiled.label_inputs() | frozenset(compiled.group_inputs())
    spec = compiled.specialization(compiled.default_ranks())
    for name in compiled.inputs:
        if name not in constants:
            diff.grad(spec.objective.total, spec.typed[name])


# Codes of ``lossdsl check``, ruff-style: the letter says error or warning, the hundreds what
# kind. Errors that resolve does not tag get the code of their class.
CHECK_CODES = {
    "E101": "a file that cannot be read (missing, a directory or FIFO, too large)",
    "E102": "a file that is not UTF-8 loss text (binary, another encoding)",
    "E110": "a syntax error",
    "E201": "a name defined twice in one file",
    "E202": "an unknown name or function",
    "E203": "a let that uses itself",
    "E204": "a name used before its let",
    "E301": "wrong arguments to a function",
    "E401": "shapes that do not fit",
    "E501": "a value outside the loss's domain",
    "E900": "any other error",
    "W201": "an input one edit away from a param, let or def (a likely misspelling)",
}
_CLASS_CODES = (("LossSyntaxError", "E110"), ("LossNameError", "E202"),
                ("LossArityError", "E301"), ("LossShapeError", "E401"),
                ("LossDomainError", "E501"))


def _code(error: LossError) -> str:
    code = getattr(error, "code", None)
    if code:
        return code
    for cls in type(error).__mro__:
        for name, fallback in _CLASS_CODES:
            if cls.__name__ == name:
                return fallback
    return "E900"


def _check_def(info, scope) -> None:
    """Inline a ``def`` on inputs named like its parameters, then check the result."""
    from .frontend.resolve import def_as_loss

    definition = def_as_loss(info, scope)
    if definition is not None:
        _check_definition(CompiledLoss(Loss(definition, scope)))


def _diagnose(path: str) -> tuple[object, list[LossError], list[LossError]]:
    """(scope or None, errors, warnings) of one file: every syntax and name error, then the
    shapes and derivatives of each loss and def that resolved."""
    from .frontend.resolve import diagnose_file

    scope, found = diagnose_file(path)
    errors = list(found.errors)
    if scope is not None:
        checks = [(definition.span, lambda d=definition: _check_definition(
            CompiledLoss(Loss(d, scope)))) for definition in scope.losses.values()]
        if scope.expression is not None:
            checks.append((scope.expression.span, lambda: _check_definition(
                CompiledLoss(Loss(scope.expression, scope)))))
        checks += [(info.syntax.span, lambda i=info: _check_def(i, scope))
                   for info in scope.defs.values()]
        for span, check in checks:
            try:
                check()
            except LossError as error:
                if error.line is None:  # every diagnostic has a place: here, the statement
                    error = type(error)(error.message, span, error.hint)
                errors.append(error)
    unique: dict[tuple, LossError] = {}
    for error in errors:  # a def's mistake is found again in each loss that uses it
        unique.setdefault((error.file, error.line, error.column, error.message), error)
    return scope, list(unique.values()), found.warnings


def _in_order(errors: list[LossError], path: str) -> list[LossError]:
    """The file's own diagnostics by position, then those in the files it imports."""
    return sorted(errors, key=lambda error: (error.file != path, str(error.file),
                                             error.line or 0, error.column or 0))


def _print_diagnostic(error: LossError, path: str) -> None:
    """``file:line:col: CODE message``, then the source line, caret and hint (ruff-style)."""
    code = _code(error)
    text = str(error)
    where = f"{error.file or '<string>'}:{error.line}:{error.column}: "
    if error.line is not None and text.startswith(where):
        text = f"{where}{code} {text[len(where):]}"
    else:
        text = f"{path}:1:1: {code} {text}"
    print(text, file=sys.stderr)


def command_check(args: argparse.Namespace) -> int:
    """``lossdsl check FILE...``: every error (and warning) of each file, ruff-style; exit
    status 1 if any file has an error (or, with ``--strict``, a warning)."""
    failed = 0
    for path in args.files:
        scope, errors, warnings = _diagnose(path)
        shown = errors + (warnings if not args.quiet or args.strict else [])
        for error in _in_order(shown, path):
            _print_diagnostic(error, path)
        if errors or (args.strict and warnings):
            failed += 1
            continue
        if not args.quiet:
            parts = [f"{len(scope.losses)} loss{'es' if len(scope.losses) != 1 else ''}",
                     f"{len(scope.defs)} def{'s' if len(scope.defs) != 1 else ''}",
                     f"{len(scope.params)} param{'s' if len(scope.params) != 1 else ''}"]
            if scope.expression is not None:
                parts.insert(0, "1 expression")
            if warnings:
                parts.append(f"{len(warnings)} warning{'s' if len(warnings) != 1 else ''}")
            print(f"{path}: ok ({', '.join(parts)})")
    if failed and not args.quiet:
        print(f"{failed} of {len(args.files)} file{'s' if len(args.files) != 1 else ''} "
              "failed", file=sys.stderr)
    return 1 if failed else 0


# ------------------------------------------------------------------------------ derive


def _formulas(compiled: CompiledLoss, wrt: list[str], hessian: bool, latex: bool,
              with_loss: bool = True) -> list[tuple[str, str]]:
    """(label, formula) lines: the loss, then each gradient (and Hessian diagonal)."""
    from .latex import latex_name, to_latex

    def show(node) -> str:
        return to_latex(node) if latex else str(node)

    lines = []
    if with_loss:
        lines.append(("\\ell" if latex else "loss", show(compiled.expression)))
    for name in wrt:
        symbol = latex_name(name) if latex else name
        label = (rf"\frac{{\partial \ell}}{{\partial {symbol}}}" if latex else f"d/d{name}")
        lines.append((label, show(compiled.derivative(name))))
        if hessian:
            label = (rf"\frac{{\partial^2 \ell}}{{\partial {symbol}^2}}" if latex
                     else f"d2/d{name}2")
            lines.append((label, show(compiled.derivative(name, 2))))
    return lines


def _print_formulas(lines: list[tuple[str, str]], latex: bool, indent: str = "") -> None:
    width = max(len(label) for label, _ in lines)
    for label, formula in lines:
        if latex:
            print(f"{indent}{label} = {formula}")
        else:
            print(f"{indent}{label.ljust(width)} = {formula}")


def command_derive(args: argparse.Namespace) -> int:
    """``lossdsl derive LOSS``: print the loss, its gradient(s) and Hessian diagonal(s)."""
    _, loss = resolve_loss(args.loss)
    wrt = _wrt(loss, _names(args.wrt))
    compiled = CompiledLoss(loss, "cpu", args.reduction)
    lines = _formulas(compiled, wrt, args.hessian, args.latex, with_loss=not args.no_loss)
    _print_formulas(lines, args.latex)
    return 0


# ----------------------------------------------------------------------------- codegen


def command_codegen(args: argparse.Namespace) -> int:
    """``lossdsl codegen LOSS``: print the generated kernel source."""
    _, loss = resolve_loss(args.loss)
    compiled = _compiled(loss, args, args.reduction)
    constants = compiled.label_inputs() | frozenset(compiled.group_inputs())
    requested = _names(args.wrt)
    if requested:
        grads = tuple(_wrt(loss, requested))
    else:
        grads = tuple(n for n in loss.inputs if n not in constants)
    hessians = grads if args.hessian else ()
    if args.no_grad:
        grads = ()
    try:
        kernel = compiled.kernel(compiled.default_ranks(), args.weighted, np.dtype(args.dtype),
                                 not args.no_value, grads, hessians)
    except ImportError as error:  # e.g. the CUDA backend without numba-cuda
        raise CliError(f"target {args.target!r} is not available here: {error}") from None
    print(kernel.source.rstrip())
    return 0


# -------------------------------------------------------------------------------- eval


def _in_file(error: LossDomainError, table: Table, first_row: int,
             inputs: dict[str, np.ndarray]) -> LossDomainError:
    """``error``, raised for a chunk of rows starting at data row ``first_row`` with the
    chunk's ``inputs``, saying where the bad value is in the file instead of in the chunk."""
    index = error.index
    if index is None:
        return error
    if isinstance(index, tuple):  # a requirement's (sample,) or (sample, class)
        row, column = index[0], (index[1] if len(index) > 1 else None)
    else:  # a flat index into the input
        if error.input in inputs:
            shape = np.shape(inputs[error.input])
        elif all(np.ndim(v) <= 1 for v in inputs.values()):
            shape = ()  # vectors alone: the index is a row
        else:  # which matrix the index is in is unknown: say where the chunk starts
            return error.relocated(
                f" at index {index} of the rows from {table.row_place(first_row)}")
        width = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
        row, column = divmod(index, width) if width > 1 else (index, None)
    return error.relocated(f" at {table.row_place(first_row + row)}"
                           + (f", class {column}" if column is not None else ""))


class _DerivedParam(NamedTuple):
    """A param whose value reads other params (``param k = 2*d``)."""

    derived: str
    default: float
    reads: tuple[str, ...]


def _derived_param(loss: Loss, name: str) -> _DerivedParam | None:
    """The param ``name`` seen from the loss's module where its value reads params the loss
    uses (``param k = 2*d``): it stands for that expression, so ``loss.params`` lists ``d``
    and not ``k``, but a column named ``k`` is as surely meant for it."""
    found = loss.scope.nearest_kind(name)
    if found is None or found[0] != "param":
        return None
    info = found[1].params[name]
    reads = tuple(base for base, _ in info.reads)
    if info.derived is None or not any(base in loss.params for base in reads):
        return None
    return _DerivedParam(str(info.derived), info.default, reads)


def _refuse_columns_named_like_params(loss: Loss, args: argparse.Namespace,
                                      columns: Iterable[str], used: set[str]) -> None:
    """Raise where a column of the data that no input reads is named like a param of the
    loss (or like an argument that a bare built-in's name leaves at its default: huber's
    delta) that no ``--param`` sets: the column looks meant for it, but a param is one
    number for the whole call, so the rows' values would be silently ignored."""
    given = _numbers(args.param, "--param")
    unread = [c for c in columns if c not in used and c not in given]
    for name in unread:
        derived = _derived_param(loss, name)
        if derived is not None and not any(base in given for base in derived.reads):
            base = derived.reads[0]
            raise CliError(
                f"column '{name}' of {args.data} is named like the param '{name}' of the "
                f"loss, '{name} = {derived.derived}' (here {derived.default:g}), one number "
                f"for the whole data that follows {', '.join(derived.reads)}, not read per "
                f"row: set it through {base} with --param {base}=VALUE (--param "
                f"{base}={loss.params.get(base, 0):g} keeps it); to read the column row by "
                f"row, make '{name}' an input of the loss instead of a param")
        if name in loss.params:
            raise CliError(
                f"column '{name}' of {args.data} is named like the param '{name}' of the "
                f"loss, which is one number for the whole data (here {loss.params[name]:g}), "
                f"not read per row: give its value with --param {name}=VALUE (--param "
                f"{name}={loss.params[name]:g} keeps it); to read the column row by row, "
                f"make '{name}' an input of the loss instead of a param")
    spec = str(args.loss).strip()
    entry = catalog.entry(spec) if re.fullmatch(r"\w+", spec) else None
    if entry is None:
        return
    defaults = {name: default for name, default in entry.parameters if default is not None}
    for name in unread:
        if name in defaults:
            required = ", ".join(entry.required)
            raise CliError(
                f"column '{name}' of {args.data} is named like the argument '{name}' of "
                f"{entry.name}, which the bare name '{entry.name}' leaves at its default "
                f"{defaults[name]}, not read per row: to read the column row by row, write "
                f"the call, \"{entry.name}({required}, {name}={name})\"; to fix another "
                f"value, \"{entry.name}({required}, {name}=VALUE)\"")


def command_eval(args: argparse.Namespace) -> int:
    """``lossdsl eval LOSS --data FILE``: evaluate on a data file, chunk by chunk."""
    if args.chunk_size < 1:
        raise UsageError("--chunk-size must be at least 1")
    if (args.grad or args.hessian) and not args.output:
        raise CliError("--grad and --hessian write each sample's derivatives to a file: add "
                       f"-o FILE ({', '.join(OUTPUT_SUFFIXES)})")
    output = check_output(args.output) if args.output else None
    label, loss = resolve_loss(args.loss)
    _refuse_params_that_are_inputs(loss, _numbers(args.param, "--param"))
    table = open_table(args.data, args.delimiter)
    mapping = _assignments(args.map, "--map")
    unknown = [name for name in mapping if name not in loss.inputs]
    if unknown:
        hint = (f"'{unknown[0]}' is a param: give its value with --param "
                f"{unknown[0]}=VALUE" if unknown[0] in loss.params
                else did_you_mean(unknown[0], loss.inputs))
        raise CliError(f"--map names '{unknown[0]}', which is not an input of the loss "
                       f"(inputs: {', '.join(loss.inputs)})" + (f"; {hint}" if hint else ""))
    for name in loss.inputs:
        if name not in mapping:
            if name not in table.columns:
                raise CliError(f"input '{name}' has no column: map it with --map {name}=COLUMN "
                               f"(columns of {args.data}: {', '.join(table.columns[:12])})")
            mapping[name] = name
    selected = {name: table.select(selector) for name, selector in mapping.items()}
    weight_column = table.select(args.weight) if args.weight else None
    if weight_column and len(weight_column) != 1:
        raise CliError("--weight must name a single column")
    used = {c for cs in selected.values() for c in cs} | set(weight_column or [])
    _refuse_columns_named_like_params(loss, args, table.columns, used)
    grads = _wrt(loss, _names(args.grad)) if args.grad else []
    hessians = _wrt(loss, _names(args.hessian)) if args.hessian else []
    columns = sorted(used)
    dtype = np.dtype(args.dtype)
    per_sample = _compiled(loss, args, "none")
    whole = couples_samples(loss)
    reduced = _compiled(loss, args, args.reduction) if whole else None
    chunk_rows = None if whole else args.chunk_size
    if whole and not args.quiet:
        print("note: a sample's loss here depends on other samples (a sum or mean over "
              "samples, groups, pairs or risk sets), so the data is evaluated in one piece",
              file=sys.stderr)
    if args.output and _same_file(args.output, args.data):
        raise CliError(f"-o {args.output} is the --data file: writing the outputs would "
                       f"destroy the data being read; write them to another file")
    show_progress = args.progress if args.progress is not None else sys.stderr.isatty()
    progress = Progress(table.progress_total, table.progress_unit, show_progress)
    writer = None  # opened with the first outputs: a loss with none leaves no empty file
    weighted_sum, count, rows, weight_total = 0.0, 0.0, 0, 0.0
    total = None
    try:
        for chunk, amount in table.chunks(columns, chunk_rows, dtype):
            for column, values in chunk.items():
                # an empty cell is refused as missing when read; a literal nan is not
                missing = np.flatnonzero(np.isnan(values)) if values.dtype.kind == "f" else ()
                if len(missing):
                    raise CliError(f"column {column!r} is nan (a missing value) at "
                                   f"{table.row_place(rows + int(missing[0]))}: drop or "
                                   "fill such rows first")
            inputs = {}
            for name, names in selected.items():
                inputs[name] = (chunk[names[0]] if len(names) == 1
                                else np.column_stack([chunk[c] for c in names]))
            weight = chunk[weight_column[0]] if weight_column else None
            try:
                values = np.asarray(per_sample(**inputs))
                # a loss that is one number for all samples (Dice) has no per-sample value
                outputs = {"loss": values} if values.ndim else {}
                if grads:
                    found = per_sample.grad(tuple(grads), **inputs)
                    outputs.update({f"grad_{g}": found[g] for g in grads})
                if hessians:
                    found = per_sample.hessian(tuple(hessians), **inputs)
                    outputs.update({f"hess_{h}": found[h] for h in hessians})
                if whole:
                    total = reduced(sample_weight=weight, **inputs)
            except LossDomainError as error:  # its index is the chunk's: say the file's row
                raise _in_file(error, table, rows, inputs) from None
            n = len(next(iter(chunk.values()))) if chunk else 0
            if output is not None and not outputs:
                raise CliError(f"{label} is one number for the whole data set (a batch-level "
                               "loss such as Dice): it has no per-sample values to write to "
                               "-o; add --grad INPUT to write each sample's gradient, or "
                               "drop -o")
            if not whole and values.ndim == 0:
                raise CliError("the loss does not depend on any per-sample column")
            if not whole:
                per_row = values.size // max(values.shape[0], 1)
                if weight is not None:
                    rows_weighted = weight.reshape((-1,) + (1,) * (values.ndim - 1)) * values
                    weighted_sum += float(np.sum(rows_weighted, dtype=np.float64))
                    count += (float(np.sum(weight, dtype=np.float64)) * per_row
                              if args.reduction == "weighted_mean" else values.size)
                else:
                    weighted_sum += float(np.sum(values, dtype=np.float64))
                    count += values.size
            if weight is not None:
                weight_total += float(np.sum(weight, dtype=np.float64))
            rows += n
            if output is not None:
                writer = writer or open_writer(output)
                writer.write({k: np.asarray(v) for k, v in outputs.items()})
            progress.update(amount, n)
    except BaseException:
        if writer is not None:  # outputs of only some rows must not pass for all of them
            writer.close()
            output.unlink(missing_ok=True)
        raise
    else:
        if writer is not None:
            writer.close()
    finally:
        progress.close()
    if rows == 0:
        raise CliError(f"{args.data} has no data rows")
    if (total is None and weight_column and args.reduction == "weighted_mean"
            and not (weight_total != 0 and math.isfinite(weight_total))):
        # as the API refuses it (binding.weight_total_error): the mean would be nan
        raise CliError(f"the weights of --weight {args.weight} sum to {weight_total!r}: "
                       "--reduction weighted_mean divides by their total; use --reduction "
                       "sum, or fix the weights")
    if total is None:
        total = weighted_sum if args.reduction == "sum" else (
            weighted_sum / count if count else math.nan)
    return _report_eval(args, label, float(total), rows, weight_total)


def _report_eval(args, label: str, total: float, rows: int, weight_total: float) -> int:
    if args.json:
        result = {"loss": label, "reduction": args.reduction, "value": total, "rows": rows}
        if args.weight:
            result["total_weight"] = weight_total
        if args.output:
            result["output"] = str(args.output)
        print(json.dumps(result))
        return 0
    weighting = ""
    if args.weight:
        weighting = f", weighted by {args.weight} (total weight {weight_total:.6g})"
    print(f"{args.reduction} loss = {total!r}  ({rows:,} rows{weighting})")
    if args.output:
        print(f"per-sample outputs written to {args.output}")
    return 0


# -------------------------------------------------------------------------------- plot


def _parse_range(text: str) -> tuple[float, float]:
    """``LOW:HIGH`` of ``--range``: two finite numbers, LOW < HIGH."""
    low, colon, high = text.partition(":")
    try:
        bounds = float(low), float(high)
    except ValueError:
        bounds = None
    if not colon or bounds is None or not (math.isfinite(bounds[0]) and
                                           math.isfinite(bounds[1]) and bounds[0] < bounds[1]):
        raise UsageError(f"--range expects LOW:HIGH, two finite numbers with LOW < HIGH, e.g. "
                       f"-3:3; got {text!r}")
    return bounds


def command_plot(args: argparse.Namespace) -> int:
    """``lossdsl plot LOSS... -o IMAGE``: draw losses, gradients and Hessians."""
    from . import plotting

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CliError("plot needs matplotlib: pip install 'lossdsl[cli]' "
                       "(or pip install matplotlib)") from None
    output = Path(args.output)
    if output.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise CliError(f"{output}: the image format comes from the extension: .png, .svg or .pdf")
    low, high = _parse_range(args.range)
    if args.points < 2 or args.dpi < 1:
        raise UsageError("--points must be at least 2 and --dpi at least 1")
    grid = np.linspace(low, high, args.points)
    at = _numbers(args.at, "--at")
    requested = _names(args.wrt)
    if len(requested) > 1:
        raise CliError("plot draws against one input: give a single --wrt")
    losses = []
    for spec in args.losses:
        label, loss = resolve_loss(spec)
        wrt = _wrt(loss, requested)[0]
        losses.append((label, loss, wrt))
    params = _numbers(args.param, "--param")
    inputs = {n for _, loss, _ in losses for n in loss.inputs}
    param_names = {n for _, loss, _ in losses for n in loss.params}
    for option, kind, names, known, other in (
            ("--at", "an input", at, inputs, "--param"),
            ("--param", "a param", params, param_names, "--at")):
        for name in names:
            if name not in known:
                hint = (misplaced_hint(name, names[name], inputs, param_names, other)
                        or did_you_mean(name, known))
                arguments = [e for e in map(catalog.entry, args.losses)
                             if e is not None and name in dict(e.parameters)]
                if option == "--param" and arguments:
                    hint = _argument_hint(arguments[0], name, params[name])
                raise CliError(f"{option} {name}: no loss here has {kind} named '{name}'"
                               + (f"; {hint}" if hint else ""))
    found = plotting.curves(losses, grid, at, params)
    wrt_names = sorted({c.wrt for c in found})
    xlabel = args.xlabel or plotting.axis_label(losses, at)
    panels = ("loss", "gradient") if args.no_hessian else plotting.PANELS
    layout = plotting.draw(grid, found, output, xlabel, panels, args.title, args.dpi)
    if args.data_out:
        data = {"x": grid.tolist(), "wrt": wrt_names, "at": at, "layout": layout,
                "curves": [{"label": c.label, "wrt": c.wrt,
                            **{k: _json_floats(v) for k, v in c.values.items()}}
                           for c in found]}
        Path(args.data_out).write_text(json.dumps(data))
    print(f"wrote {output} ({len(found)} loss{'es' if len(found) != 1 else ''}, "
          f"{' / '.join(wrt_names)} from {low:g} to {high:g})")
    return 0


def _json_floats(values: np.ndarray) -> list:
    return [None if not math.isfinite(v) else v for v in values.tolist()]


# -------------------------------------------------------------------------- list, show


def command_list(args: argparse.Namespace) -> int:
    """``lossdsl list``: the built-in library with one-line descriptions."""
    entries = catalog.entries()
    if args.names:
        for entry in entries:
            print(entry.name)
        return 0
    width = max(len(entry.signature) for entry in entries)
    for entry in entries:
        print(f"{entry.signature.ljust(width)}  {entry.summary}")
    print(f"\n{len(entries)} built-in definitions; 'lossdsl show NAME' for formula and "
          "derivatives, docs/losses.md for the reference.")
    return 0


def _symbolic_call(entry: catalog.Entry) -> Loss | None:
    """``huber(y, p, delta=delta)``: parameters stay symbolic in the derivatives."""
    keywords = [f"{name}={name}" for name, default in entry.parameters if default is not None]
    text = f"{entry.name}({', '.join(list(entry.required) + keywords)})"
    try:
        return compile_loss(text).loss
    except LossError:  # e.g. a class count that must be a number
        return None


def command_show(args: argparse.Namespace) -> int:
    """``lossdsl show NAME``: a loss's description, formula, parameters, derivatives."""
    entry = catalog.entry(args.name) if re.fullmatch(r"\w+", args.name) else None
    if entry is None:
        if re.fullmatch(r"\w+", args.name) and not Path(args.name).exists():
            names = [e.name for e in catalog.entries()]
            hint = did_you_mean(args.name, names)
            raise CliError(f"no built-in loss named {args.name!r}"
                           + (f"; {hint}" if hint else "; see 'lossdsl list'"))
        label, loss = resolve_loss(args.name)
        print(label)
        if loss.doc:
            print("  " + loss.doc.replace("\n", "\n  "))
        print()
        formula, parameters, symbolic = str(loss.definition.graph), loss.params, loss
    else:
        print(entry.signature)
        description = entry.doc.split("Ref:")[0].strip()
        if description:
            print("  " + description.replace("\n", "\n  "))
        if entry.reference:
            print(f"  Reference: {entry.reference}")
        print(f"  Defined in: {Path(entry.file).name}")
        print()
        formula = entry.formula
        parameters = {name: default for name, default in entry.parameters if default is not None}
        symbolic = _symbolic_call(entry) or compile_loss(entry.call_expression()).loss
        loss = symbolic
    print(f"  formula     {formula}")
    print(f"  inputs      {', '.join(n for n in symbolic.inputs if n not in parameters)}")
    if parameters:
        print("  parameters  " + ", ".join(f"{k} = {v}" for k, v in parameters.items()))
    wrt = [args.wrt] if args.wrt else [_prediction(loss)]
    _wrt(loss, wrt)
    compiled = CompiledLoss(symbolic, "cpu", "sum")
    print(f"\n  derivatives of one sample's loss with respect to {wrt[0]}:")
    lines = _formulas(compiled, wrt, True, False, with_loss=False)
    _print_formulas(lines, False, indent="  ")
    paired = symbolic.pair_inputs
    for name in compiled.group_inputs():  # printed as the compiler lays groups out
        print(f"  (rowsum and rowmax here are over the other samples of each sample's group of "
              f"{name})" if name in paired else
              f"  (rowsum and rowmax here are over the samples of each group of {name})")
    if args.latex:
        print()
        _print_formulas(_formulas(compiled, wrt, True, True), True, indent="  ")
    return 0


# ------------------------------------------------------------------------------- bench


def _duration(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.3f} s"


def command_bench(args: argparse.Namespace) -> int:
    """``lossdsl bench LOSS``: time value/grad/Hessian against the memory floor and the code
    a user would write instead (idiomatic peers)."""
    from . import benchmark, peers

    label, loss = resolve_loss(args.loss)
    wrt = _wrt(loss, _names(args.wrt))[0]
    if args.n < 1 or args.repeat < 1 or args.classes < 1:
        raise UsageError("-n, --repeat and --classes must be positive")
    if not (math.isfinite(args.pause) and args.pause >= 0):
        raise UsageError(f"--pause is seconds to wait, 0 or more; got {args.pause:g}")
    compiled = _compiled(loss, args, "mean")
    dtype = np.dtype(args.dtype)
    is_file = Path(args.loss).is_file() or (":" in args.loss and Path(
        args.loss.rpartition(":")[0]).is_file())
    match, why = (None, "the loss comes from a file") if is_file else peers.match(args.loss)
    if match is not None and set(match.inputs.values()) != set(compiled.inputs):
        match, why = None, "the loss's inputs are not the library loss's"
    if match is not None:
        inputs = peers.family_data(match, args.n, args.classes, dtype)
    else:
        inputs = benchmark.synthetic_inputs(compiled, args.n, args.classes, dtype)
    include = ["numpy", "numba"]
    if not args.no_torch:
        include += ["torch", "torch.compile"] if args.torch_compile else ["torch"]
    if not args.no_jax:
        include.append("jax")
    include.append("sklearn")
    mismatches: list[str] = []
    result = benchmark.run(compiled, wrt, inputs, args.repeat, match, why, tuple(include),
                           graph_baselines=args.graph_baselines, pause=args.pause,
                           on_mismatch=mismatches.append)
    print(f"lossdsl bench: {label}   wrt {wrt}   N = {args.n:,} {args.dtype}   "
          f"target = {args.target}   best of {args.repeat} interleaved rounds")
    print(f"first call (compile or load from the cache): {_duration(result.first_call)}")
    if result.no_peers:
        print(f"no idiomatic peer is known for this loss ({result.no_peers}): only the memory "
              "floor is shown")
    print()
    others = [name for name in result.seconds if name != "lossdsl"]
    header = f"{'task':<12}{'lossdsl':>12}"
    for name in others:
        header += f"{name:>14}{name + '/lossdsl':>{max(16, len(name) + 10)}}"
    print(header)
    for task in benchmark.TASKS:
        ours = result.seconds["lossdsl"][task]
        row = f"{task:<12}{_duration(ours):>12}"
        for name in others:
            width = max(16, len(name) + 10)
            theirs = result.seconds[name].get(task)
            if theirs is None:
                row += f"{'-':>14}{'-':>{width}}"
            else:
                row += f"{_duration(theirs):>14}{theirs / ours:>{width - 1}.2f}x"
        print(row)
    print("\n(larger = lossdsl faster; 'floor' is a streaming kernel moving the same bytes, "
          "the least any kernel needs: floor/lossdsl near 1 means lossdsl is at the memory "
          "bound)")
    if args.graph_baselines:
        print("'numpy graph' and 'torch graph' are lossdsl's own graph run op by op, not "
              "peers: no user writes that code")
    for peer in result.peers:
        if peer.note:
            print(f"  {peer.name}: {peer.note}")
    for line in result.skipped + mismatches:
        print(f"  skipped {line}")
    if args.show_peers:
        for peer in result.peers:
            print(f"\n# ---- {peer.name}\n{peer.source()}")
    return 0


# ------------------------------------------------------------------------------ parser


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Wraps prose paragraphs to the terminal; keeps indented blocks (examples) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = []
        for paragraph in text.split("\n\n"):
            lines = paragraph.splitlines()
            if any(line.startswith(" ") for line in lines):
                paragraphs.append("\n".join(indent + line for line in lines))
            else:
                paragraphs.append(textwrap.fill(" ".join(lines), width, initial_indent=indent,
                                                subsequent_indent=indent))
        return "\n\n".join(paragraphs)


def _add_params(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--param", action="append", metavar="NAME=VALUE",
                        help="override a 'param' of the loss (repeatable or comma-separated)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``lossdsl`` command."""
    formatter = _HelpFormatter
    parser = argparse.ArgumentParser(
        prog="lossdsl", formatter_class=formatter, epilog=EPILOG,
        description="Write machine-learning losses as formulas; check them, see their exact "
                    "derivatives, plot them, compile them to fused kernels and run them on "
                    "data.")
    parser.add_argument("--version", action="version", version=f"lossdsl {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, summary: str, description: str, epilog: str):
        sub = commands.add_parser(name, help=summary, description=description, epilog=epilog,
                                  formatter_class=formatter)
        return sub

    check = command(
        "check", "parse, resolve and type-check .loss files (exit 1 on errors)",
        "Parse each file, resolve every name (imports, params, defs), give every loss and "
        "def its shapes and differentiate it. Every error of a file is reported, as "
        "file:line:col: CODE message with the source line and a caret; a name defined twice, "
        "a let that uses itself or is used above its definition are errors, and an input "
        "one edit away from a param, let or def (undr for under) is a warning. The exit "
        "status is 1 if any file has an error, so the command fits pre-commit hooks and CI.",
        "codes:\n" + "\n".join(f"  {code}  {meaning}" for code, meaning in CHECK_CODES.items())
        + "\n\nexamples:\n  lossdsl check fraud.loss\n"
        "  lossdsl check -q --strict losses/*.loss || exit 1")
    check.add_argument("files", nargs="+", metavar="FILE", help=".loss files to check")
    check.add_argument("-q", "--quiet", action="store_true",
                       help="print errors only (and warnings with --strict)")
    check.add_argument("--strict", action="store_true",
                       help="warnings fail the check too (exit status 1)")
    check.set_defaults(handler=command_check)

    derive = command(
        "derive", "print the simplified gradient / Hessian of a loss",
        "Print the loss as the compiler sees it (after inlining and stable rewrites), its "
        "exact symbolic gradient with respect to an input and, with --hessian, the diagonal "
        "of its Hessian, simplified, as loss-language formulas or LaTeX. By default these "
        "are the derivatives of one sample's loss (reduction 'sum'); --reduction mean shows "
        "the derivative of the average, with its 1/N (N = count(n0)).",
        "examples:\n  lossdsl derive \"huber(y, p, delta)\" --wrt p --hessian\n"
        "  lossdsl derive bce_logits --hessian --latex\n"
        "  lossdsl derive model.loss:fraud --wrt p,w")
    derive.add_argument("loss", metavar="LOSS", help="file, FILE:NAME, built-in or expression")
    derive.add_argument("--wrt", action="append", metavar="INPUT",
                        help="input(s) to differentiate by (default: the prediction: an input "
                             "named p, z, pred, ..., else the first one not named y); "
                             "repeatable or comma-separated")
    derive.add_argument("--hessian", action="store_true",
                        help="also print the Hessian diagonal")
    derive.add_argument("--latex", action="store_true", help="print LaTeX instead")
    derive.add_argument("--reduction", choices=("sum", "mean"), default="sum",
                        help="reduction over samples (default: sum, i.e. per sample)")
    derive.add_argument("--no-loss", action="store_true", help="do not print the loss line")
    derive.set_defaults(handler=command_derive)

    codegen = command(
        "codegen", "print the generated kernel source",
        "Print the Numba source the compiler generates for a loss: one fused pass computing "
        "the value and the gradients (and Hessian diagonals with --hessian), for vector "
        "inputs (per-class matrices where the loss reduces over classes).",
        "examples:\n  lossdsl codegen \"huber(y, p, 1.0)\"\n"
        "  lossdsl codegen bce_logits --target parallel --dtype float32 --hessian")
    codegen.add_argument("loss", metavar="LOSS", help="file, FILE:NAME, built-in or expression")
    codegen.add_argument("--target", choices=("cpu", "parallel", "cuda"), default="cpu",
                         help="kernel target (default: cpu)")
    codegen.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                         help="element type of the kernel (default: float64)")
    codegen.add_argument("--reduction", choices=REDUCTIONS,
                         default="mean",
                         help="reduction over samples (default: mean)")
    codegen.add_argument("--wrt", action="append", metavar="INPUT",
                         help="gradients to compute (default: every differentiable input)")
    codegen.add_argument("--hessian", action="store_true", help="also the Hessian diagonals")
    codegen.add_argument("--no-grad", action="store_true", help="no gradients")
    codegen.add_argument("--no-value", action="store_true", help="no loss value")
    codegen.add_argument("--weighted", action="store_true", help="with sample weights")
    _add_params(codegen)
    codegen.set_defaults(handler=command_codegen)

    evaluate = command(
        "eval", "evaluate a loss on a data file (CSV, .npy, .npz, Parquet)",
        "Evaluate a loss on the columns of a data file and print the reduced loss (mean or "
        "sum, with optional per-sample weights). Big files are streamed in chunks with a "
        "progress bar on stderr. With -o, the per-sample loss and the requested derivatives "
        "(each sample's own, unweighted) are written to a file, one row per input row.\n\n"
        "Inputs map to columns with --map NAME=COLUMN (an input named like a column needs no "
        "mapping). A glob pattern (--map z='logit_*') stacks several columns into a per-class "
        "matrix, in the order of the numbers the names end in (logit_2 before logit_10, "
        "whatever the file's order; the numbers must run without gaps, and class 0 is the "
        "lowest), or in file order when no name ends in a number; in .npz files a 2-D array "
        "is a matrix input. A 2-D .npy file has columns named 0, 1, ...; a structured .npy "
        "has its field names. Parquet needs pyarrow. Every CSV row must have as many fields "
        "as the header, and every column used must hold numbers. A param is one number for "
        "the whole data, set with --param NAME=VALUE: a column named like one (or like an "
        "argument a built-in's bare name leaves at its default, huber's delta) that no input "
        "reads is an error, not silently ignored.",
        "examples:\n  lossdsl eval huber --data scores.csv --map y=label,p=score\n"
        "  lossdsl eval fraud.loss:fraud --data tx.parquet --map y=is_fraud,p=logit "
        "--weight amount\n"
        "  lossdsl eval bce_logits --data d.npz --map y=t,z=s --grad z --hessian z -o gh.npy\n"
        "  lossdsl eval sparse_cce_logits --data d.csv --map y=label,z='logit_*' --json")
    evaluate.add_argument("loss", metavar="LOSS", help="file, FILE:NAME, built-in or expression")
    evaluate.add_argument("--data", required=True, metavar="FILE",
                          help="CSV/TSV (header line), .npy, .npz or .parquet")
    evaluate.add_argument("--map", action="append", metavar="NAME=COLUMN",
                          help="which column feeds which input (repeatable or comma-separated)")
    evaluate.add_argument("--weight", metavar="COLUMN", help="per-sample weights column")
    evaluate.add_argument("--grad", action="append", metavar="INPUT",
                          help="write the per-sample gradient with respect to INPUT (needs "
                               "-o)")
    evaluate.add_argument("--hessian", action="append", metavar="INPUT",
                          help="write the per-sample Hessian diagonal for INPUT (needs -o)")
    evaluate.add_argument("--reduction", choices=("mean", "weighted_mean", "sum"),
                          default="mean",
                          help="how the printed total reduces the samples (default: mean; "
                               "with --weight, mean = sum(w*l)/N as PyTorch and Keras, "
                               "weighted_mean = sum(w*l)/sum(w) as scikit-learn)")
    evaluate.add_argument("-o", "--output", metavar="FILE",
                          help="per-sample outputs: .csv, .npy (structured), .npz or .parquet "
                               "(a batch-level loss such as Dice has no per-sample value: "
                               "only its --grad/--hessian are written)")
    evaluate.add_argument("--chunk-size", type=int, default=500_000, metavar="ROWS",
                          help="rows per chunk (default: 500000)")
    evaluate.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                          help="precision of the computation (default: float64)")
    evaluate.add_argument("--target", choices=("cpu", "parallel"), default="cpu",
                          help="kernel target (default: cpu)")
    evaluate.add_argument("--delimiter",
                          help="CSV field separator, one character (\\t for a tab; default: "
                               "',', or a tab for .tsv)")
    progress = evaluate.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None,
                          help="always show the progress bar (default: when stderr is a tty)")
    progress.add_argument("--no-progress", dest="progress", action="store_false",
                          help="never show the progress bar")
    evaluate.add_argument("--json", action="store_true", help="print the result as JSON")
    evaluate.add_argument("-q", "--quiet", action="store_true", help="no notes on stderr")
    _add_params(evaluate)
    evaluate.set_defaults(handler=command_eval)

    plot = command(
        "plot", "plot losses, gradients and Hessians (PNG, SVG, PDF)",
        "Draw the loss, its gradient and its Hessian diagonal against one input (the "
        "prediction by default) for one or more losses, in one figure of three panels. The "
        "other inputs are held fixed (--at, default 0), so with the target y = 0 the x axis "
        "is the residual p - y; for a loss on logits it is the logit.",
        "examples:\n  lossdsl plot mse huber log_cosh --range -3:3 -o regression.png\n"
        "  lossdsl plot bce_logits \"focal(y, z)\" --at y=1 --range -6:6 -o logits.svg\n"
        "  lossdsl plot \"quantile(y, p, alpha=0.9)\" --no-hessian -o pinball.png")
    plot.add_argument("losses", nargs="+", metavar="LOSS",
                      help="losses to draw: files, FILE:NAME, built-ins or expressions")
    plot.add_argument("-o", "--output", required=True, metavar="IMAGE",
                      help="output image: .png, .svg or .pdf")
    plot.add_argument("--wrt", action="append", metavar="INPUT",
                      help="the input on the x axis (default: each loss's prediction)")
    plot.add_argument("--range", default="-3:3", metavar="LOW:HIGH",
                      help="x axis range (default: -3:3)")
    plot.add_argument("--at", action="append", metavar="NAME=VALUE",
                      help="values of the other inputs (default 0), e.g. --at y=1")
    plot.add_argument("--points", type=int, default=401, help="grid points (default: 401)")
    plot.add_argument("--no-hessian", action="store_true", help="draw loss and gradient only")
    plot.add_argument("--title", help="figure title")
    plot.add_argument("--xlabel", help="x axis label")
    plot.add_argument("--dpi", type=int, default=100, help="resolution (default: 100)")
    plot.add_argument("--data-out", metavar="FILE.json",
                      help="also write the plotted numbers and the panels' pixel boxes")
    _add_params(plot)
    plot.set_defaults(handler=command_plot)

    listing = command("list", "list the built-in losses",
                      "List every definition of the built-in library with its signature and "
                      "a one-line description.",
                      "examples:\n  lossdsl list\n  lossdsl list --names")
    listing.add_argument("--names", action="store_true", help="names only, one per line")
    listing.set_defaults(handler=command_list)

    show = command("show", "show a loss: formula, parameters, derivatives",
                   "Show a built-in loss (or FILE.loss:NAME): its description and reference, "
                   "formula, inputs, parameters with defaults, and the gradient and Hessian "
                   "diagonal of one sample's loss with respect to its prediction, with the "
                   "parameters kept symbolic.",
                   "examples:\n  lossdsl show huber\n  lossdsl show focal --latex\n"
                   "  lossdsl show fraud.loss:fraud")
    show.add_argument("name", metavar="NAME", help="built-in name or FILE.loss:NAME")
    show.add_argument("--wrt", metavar="INPUT", help="input to differentiate by")
    show.add_argument("--latex", action="store_true", help="also print LaTeX")
    show.set_defaults(handler=command_show)

    bench = command(
        "bench", "time a loss against the code a user would write instead",
        "Time the value, value + gradient and gradient + Hessian (by the prediction) of a loss "
        "against the memory floor (a streaming Numba kernel reading the same inputs and "
        "writing the same outputs) and, when the loss is a single call of a library loss "
        "(\"bce_logits(y, z)\", \"huber(y, p, 2.0)\", sparse_cce_logits), against the code "
        "a user would write instead: torch.nn.functional with autograd and closed forms in "
        "torch, hand-written NumPy, jax.jit of it, scikit-learn's _loss Cython kernels "
        "(each checked to compute lossdsl's numbers first; a missing library is skipped). "
        "Data: the loss family's own (binary labels, counts, class labels, probability "
        "rows), or for other losses values in (0.05, 0.95), integer labels for class indices "
        "and N x K matrices for per-class inputs. Prints the ratios (larger = lossdsl "
        "faster).",
        "examples:\n  lossdsl bench \"huber(y, p, 1.0)\"\n"
        "  lossdsl bench sparse_cce_logits -n 200000 --classes 10 --target parallel\n"
        "  lossdsl bench \"bce_logits(y, z)\" --show-peers")
    bench.add_argument("loss", metavar="LOSS", help="file, FILE:NAME, built-in or expression")
    bench.add_argument("-n", type=int, default=1_000_000, help="samples (default: 1000000)")
    bench.add_argument("--classes", type=int, default=10,
                       help="K for per-class inputs (default: 10)")
    bench.add_argument("--wrt", action="append", metavar="INPUT",
                       help="input to differentiate by (default: the prediction)")
    bench.add_argument("--target", choices=("cpu", "parallel"), default="parallel",
                       help="kernel target (default: parallel)")
    bench.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                       help="element type of the data (default: float64)")
    bench.add_argument("--repeat", type=int, default=5, help="timed repeats (default: 5)")
    bench.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    bench.add_argument("--no-jax", action="store_true", help="skip JAX")
    bench.add_argument("--torch-compile", action="store_true",
                       help="also time torch.compile of the PyTorch peer (compiles for a "
                            "while)")
    bench.add_argument("--show-peers", action="store_true", help="print each peer's code")
    bench.add_argument("--pause", type=float, default=0.05,
                       help="idle seconds before each timed call, so that torch's and JAX's "
                            "spinning threads do not steal the cores (default: 0.05)")
    bench.add_argument("--graph-baselines", action="store_true",
                       help="also time lossdsl's own graph run op by op in NumPy and PyTorch "
                            "(a check on the compiler, not a peer)")
    _add_params(bench)
    bench.set_defaults(handler=command_bench)
    return parser


def _join_option_values(argv: list[str]) -> list[str]:
    """``--range -3:3`` → ``--range=-3:3``: argparse would read ``-3:3`` as an option."""
    joined: list[str] = []
    index = 0
    while index < len(argv):
        item = argv[index]
        if item in ("--range", "--at", "--param") and index + 1 < len(argv):
            joined.append(f"{item}={argv[index + 1]}")
            index += 2
            continue
        joined.append(item)
        index += 1
    return joined


def _report(error: LossError, prefix: str = "") -> None:
    """Print a loss error: ``file:line:col: message``, source line and caret (or a plain
    message when the error has no position)."""
    text = str(error)
    if error.line is None:
        text = f"{prefix}error: {text}" if prefix else f"lossdsl: error: {text}"
    print(text, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the ``lossdsl`` command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(_join_option_values(list(sys.argv[1:] if argv is None else argv)))
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.handler(args)
    except LossError as error:
        _report(error)
        return 1
    except (CliError, DataError) as error:
        print(f"lossdsl {args.command}: error: {error}", file=sys.stderr)
        return 2 if isinstance(error, UsageError) else 1
    except BrokenPipeError:  # e.g. 'lossdsl codegen ... | head'
        sys.stderr.close()
        return 0
    except OSError as error:  # unreadable input, unwritable output, full disk
        print(f"lossdsl {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
