"""Errors raised for bad loss text or bad inputs, with source positions and a caret.

Every error a user can provoke is a :class:`LossError`. It carries ``file`` (``None`` for a
string), 1-based ``line`` and ``column``, and its ``str()`` shows the offending source line
with a caret under the column, like a compiler diagnostic.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Span:
    """A position in loss source text (1-based line and column)."""

    file: str | None
    line: int
    column: int
    end_line: int | None = None
    end_column: int | None = None
    source: str | None = field(default=None, compare=False, repr=False)

    def place(self) -> str:
        """Where the span starts, as ``file:line:column`` (``<string>`` for loss text)."""
        return f"{self.file or '<string>'}:{self.line}:{self.column}"

    def source_line(self) -> str | None:
        """The text of the line this span starts on, or None when unknown."""
        if self.source is None:
            return None
        lines = self.source.splitlines()
        if 1 <= self.line <= len(lines):
            return lines[self.line - 1]
        return None

    def text(self) -> str | None:
        """The source text the span covers, its lines joined by single spaces (None when the
        source or the end is unknown)."""
        if self.source is None or self.end_column is None:
            return None
        lines = self.source.splitlines()
        end_line = self.end_line or self.line
        if end_line == self.line:
            return lines[self.line - 1][self.column - 1 : self.end_column - 1]
        first = lines[self.line - 1][self.column - 1 :]
        middle = lines[self.line : end_line - 1]
        last = lines[end_line - 1][: self.end_column - 1]
        return " ".join(part.strip() for part in [first, *middle, last])


class LossError(Exception):
    """Base class of every error lossdsl raises for bad loss text or bad inputs."""

    def __init__(self, message: str, span: Span | None = None, hint: str | None = None):
        self.message = message
        self.span = span
        self.hint = hint
        self.file = span.file if span else None
        self.line = span.line if span else None
        self.column = span.column if span else None
        super().__init__(self._render())

    def _render(self) -> str:
        if self.span is None:
            text = self.message
        else:
            text = f"{self.span.place()}: {self.message}"
            line = self.span.source_line()
            if line is not None:
                width = 1
                if self.span.end_line == self.span.line and self.span.end_column:
                    width = max(1, self.span.end_column - self.span.column)
                # the line's own tabs in the padding, so that the caret lines up wherever
                # the terminal puts its tab stops
                padding = "".join(c if c == "\t" else " " for c in line[:self.span.column - 1])
                caret = padding + "^" * min(width, max(1, len(line)))
                text += f"\n    {line}\n    {caret}"
        if self.hint:
            text += f"\n{self.hint}"
        return text

    def extend_message(self, text: str) -> None:
        """Append ``text`` to the message (for a caller that knows more about the place)."""
        self.message += text
        self.args = (self._render(),)

    def __reduce__(self):  # keep errors picklable across processes (Dask, multiprocessing)
        return (type(self), (self.message, self.span, self.hint), self.__dict__.copy())


class LossSyntaxError(LossError):
    """The text does not follow the grammar."""


class LossNameError(LossError):
    """A name is unknown (the message suggests the closest known one) or an input is missing."""


class LossAttributeError(LossNameError, AttributeError):
    """A library (:func:`lossdsl.load`) has no loss of the name asked for as an attribute;
    an :class:`AttributeError` too, so that ``hasattr`` and ``getattr(lib, name, default)``
    keep working."""


class LossArityError(LossError):
    """A function was called with the wrong number or names of arguments."""


class LossShapeError(LossError):
    """Input arrays have incompatible shapes, dtypes or roles at call time."""


class NoFiniteOptimumError(LossError):
    """No finite constant score minimises the loss over the labels (the expected cost of a
    decision that keeps improving towards an infinite score): what a boosting objective's
    ``init_score`` raises, naming the direction, instead of a huge start score."""


class LossDomainError(LossError):
    """A value is outside the domain the loss is defined on (e.g. a label out of range).

    Where the value is in an array, ``index`` says where: an ``int`` is its flat index into
    the input named ``input``; a tuple is the ``(sample,)`` or ``(sample, class)`` position
    where a def's ``requires`` condition is false over the arrays it reads (``input`` None).
    The message says it with :func:`at_index`, so that a caller that knows more (the
    command line knows the file line of a chunk's row) can say it better with
    :meth:`relocated`."""

    def __init__(self, message: str, span: Span | None = None, hint: str | None = None, *,
                 input: str | None = None, index: int | tuple[int, ...] | None = None):
        super().__init__(message, span, hint)
        self.input = input
        self.index = index

    def relocated(self, where: str) -> LossDomainError:
        """This error with its :func:`at_index` phrase replaced by ``where`` (such as
        ``" at line 9 of data.csv"``); ``index`` stays the one the loss was called with."""
        phrase = at_index(self.index)
        message = self.message.replace(phrase, where, 1) if phrase else self.message + where
        return type(self)(message, self.span, self.hint, input=self.input, index=self.index)


def at_index(index: int | tuple[int, ...] | None) -> str:
    """How an error message says where a bad value is: `` at index 3``, `` at index (2,
    1)``, or "" for a value that is not in an array."""
    if index is None:
        return ""
    if isinstance(index, tuple):
        return f" at index {index[0] if len(index) == 1 else index}"
    return f" at index {index}"


def all_ignored_error(label: str, ignore_index: float, reduction: str,
                      span: Span | None = None) -> LossDomainError:
    """The error for a batch whose every label of ``label`` equals ``ignore_index`` under a
    mean (``reduction``): a mean over no samples, which PyTorch returns as nan. One text for
    every path that checks it (the kernels' binding, :mod:`lossdsl.jax`)."""
    return LossDomainError(
        f"every label of '{label}' equals ignore_index={ignore_index}: the {reduction} over "
        "no samples is undefined (PyTorch returns nan); use reduction='sum' (0 for such a "
        "batch) or skip the batch", span)


def not_a_param_hint(name: str) -> str:
    """What to do with ``name`` given as a param the loss does not declare: most often an
    argument of a function in the formula (``huber``'s ``delta``)."""
    return (f"params are the names a loss declares with 'param NAME = ...'; if '{name}' is "
            f"an argument of a function in the formula (as huber's delta is), write it "
            f"there, f(..., {name}=VALUE), or make it a param: 'param {name} = VALUE' and "
            f"f(..., {name}); the reduction is chosen when the loss is compiled")


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The known name closest to ``name``, for "did you mean" hints."""
    matches = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return matches[0] if matches else None


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """A "did you mean ...?" hint line, or None when nothing is close."""
    match = closest(name, candidates)
    return f"did you mean '{match}'?" if match else None
