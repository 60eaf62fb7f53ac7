"""Fuzzing the compiler (issue 10): nothing a loss text can say ends in a raw traceback.

For any text the grammar accepts, and any small mutation of such a text, ``compile``,
``.expression``, ``.derivative(x, 1)`` and ``.derivative(x, 2)`` for each input, and
``.source`` either work or raise a :class:`lossdsl.LossError` that has a line and a column.

Texts come from two places: the grammar itself (its rules expanded at random, with names drawn
from the inputs, built-ins and prelude, numbers from edge cases), and a strategy over the language's
constructs with the built-in functions and the prelude's losses, which gets further into the
compiler (shapes, derivatives, code generation) than random grammar text does. CI replays a
derandomised sample (tests/conftest.py); a larger run is one environment variable away:
``LOSSDSL_FUZZ_EXAMPLES=5000 pytest tests/frontend/test_fuzz.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import lark
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lossdsl
from lossdsl import catalog
from lossdsl.ops.primitives import CONSTANTS, FUNCTIONS

# hypothesis describes a strategy once per test, and the one over the prelude's 68 losses
# describes itself at length (a cost of milliseconds, not a problem to report)
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

GRAMMAR = Path(__file__).resolve().parents[2] / "grammar" / "lossdsl.lark"
EXAMPLES = int(os.environ.get("LOSSDSL_FUZZ_EXAMPLES", "0")) or None

INPUTS = ["y", "p", "z", "w", "t"]
NUMBERS = ["0", "1", "2", "0.5", ".5", "3.", "40", "1e-3", "1E+2", "1e308", "5e-324", "1e-320"]
OPERATORS = ["+", "-", "*", "/", "^", "**", "<", "<=", ">", ">=", "==", "!=", "and", "or"]


def _library() -> dict[str, tuple[list[str], list[str]]]:
    """Each prelude loss: (required parameters, optional parameters)."""
    return {entry.name: ([name for name, default in entry.parameters if default is None],
                         [name for name, default in entry.parameters if default is not None])
            for entry in catalog.entries()}


LIBRARY = _library()


# --- texts from the grammar ------------------------------------------------------------------

_GRAMMAR = lark.Lark(GRAMMAR.read_text(), parser="lalr", start="start")
_RULES: dict[str, list[tuple]] = {}
for _rule in _GRAMMAR.rules:
    _RULES.setdefault(_rule.origin.name, []).append(tuple(_rule.expansion))
_LITERALS = {t.name: t.pattern.value for t in _GRAMMAR.terminals if t.pattern.type == "str"}
_NAMES = INPUTS + list(CONSTANTS) + sorted(FUNCTIONS) + sorted(LIBRARY) + ["a", "k", "f"]
_TERMINALS = {
    "NAME": st.sampled_from(_NAMES),
    "NUMBER": st.sampled_from(NUMBERS),
    "STRING": st.sampled_from(['"missing.loss"', '""', '"."']),
    "COMPARE": st.sampled_from(["<", "<=", ">", ">=", "==", "!="]),
    "POWER": st.sampled_from(["^", "**"]),
    "_NL": st.sampled_from(["\n", "\r\n"]),
}


def _cost() -> dict[str, int]:
    """The fewest tokens each rule can expand to (to close a text once it is long enough)."""
    cost: dict[str, int] = {}
    changed = True
    while changed:
        changed = False
        for name, expansions in _RULES.items():
            for expansion in expansions:
                total = sum(1 if symbol.is_term else cost.get(symbol.name, 10**6)
                            for symbol in expansion)
                if total < cost.get(name, 10**6):
                    cost[name], changed = total, True
    return cost


_COST = _cost()


@st.composite
def grammar_texts(draw, tokens: int = 40) -> str:
    """A text the grammar derives: rules chosen at random (by hypothesis, so it shrinks them),
    then, past ``tokens`` tokens, the shortest way to finish. Tokens are written apart by
    spaces so that keywords and names do not run together."""
    written: list[str] = []
    stack = [_GRAMMAR.rules[0].origin]
    while stack:
        symbol = stack.pop()
        if symbol.is_term:
            strategy = _TERMINALS.get(symbol.name)
            written.append(_LITERALS[symbol.name] if strategy is None else draw(strategy))
            continue
        options = _RULES[symbol.name]
        if len(written) >= tokens:
            cheapest = min(sum(1 if s.is_term else _COST[s.name] for s in o) for o in options)
            options = [o for o in options
                       if sum(1 if s.is_term else _COST[s.name] for s in o) == cheapest]
        expansion = options[draw(st.integers(0, len(options) - 1))]
        stack.extend(reversed(expansion))
    return " ".join(written)


# --- texts over the language's constructs ----------------------------------------------------

def _arguments(children, count: int):
    return st.lists(children, min_size=count, max_size=count).map(", ".join)


def _builtin_call(children):
    def call(name: str):
        low, high = FUNCTIONS[name]
        counts = [low] * 6 + [high] * 3 + [max(low - 1, 0), high + 1]  # mostly the right arity
        return st.sampled_from(counts).flatmap(
            lambda count: _arguments(children, count).map(lambda a: f"{name}({a})"))

    return st.sampled_from(sorted(FUNCTIONS)).flatmap(call)


def _library_call(children):
    def call(name: str):
        required, optional = LIBRARY[name]
        positional = _arguments(children, len(required))
        keywords = st.lists(st.tuples(st.sampled_from(optional or ["x"]), children),
                            max_size=2, unique_by=lambda pair: pair[0])

        def text(parts) -> str:
            arguments, named = parts
            written = [arguments] + [f"{keyword}={value}" for keyword, value in named]
            return f"{name}({', '.join(filter(None, written))})"

        return st.tuples(positional, keywords).map(text)

    return st.sampled_from(sorted(LIBRARY)).flatmap(call)


def _combine(children):
    return st.one_of(
        st.tuples(children, st.sampled_from(OPERATORS), children).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(children, st.sampled_from(OPERATORS), children).map(" ".join),
        children.map(lambda x: f"-{x}"),
        children.map(lambda x: f"not {x}"),
        st.tuples(children, children, children).map(
            lambda t: f"(if {t[0]} then {t[1]} else {t[2]})"),
        _builtin_call(children),
        _library_call(children),
    )


expressions = st.recursive(
    st.sampled_from(INPUTS + NUMBERS + list(CONSTANTS)), _combine, max_leaves=12)

_statement = st.one_of(
    expressions,
    expressions.map(lambda e: f"loss l = {e}"),
    st.tuples(st.sampled_from(["a", "k"]), expressions).map(lambda t: f"param {t[0]} = {t[1]}"),
    st.tuples(st.sampled_from(["r", "s"]), expressions).map(lambda t: f"let {t[0]} = {t[1]}"),
    expressions.map(lambda e: f"def f(a, b=2) = {e}"),
)
construct_texts = st.one_of(
    expressions,
    st.lists(_statement, min_size=1, max_size=4).map("\n".join),
)


# --- mutations -------------------------------------------------------------------------------

_CHARACTERS = list("abcdefghijklmnopqrstuvwxyz_0123456789.+-*/^<>=!(),;#\"\\ \t\n") + ["é", "\0"]


def _mutate(text: str, edits) -> str:
    characters = list(text)
    for kind, position, character in edits:
        position %= len(characters) + 1
        if kind == "insert" or not characters:
            characters.insert(position, character)
        elif kind == "delete":
            del characters[min(position, len(characters) - 1)]
        else:
            characters[min(position, len(characters) - 1)] = character
    return "".join(characters)


def mutated(texts):
    edit = st.tuples(st.sampled_from(["insert", "delete", "replace"]),
                     st.integers(0, 10**6), st.sampled_from(_CHARACTERS))
    return st.tuples(texts, st.lists(edit, min_size=1, max_size=3)).map(lambda t: _mutate(*t))


# --- the property ----------------------------------------------------------------------------

def compile_everything(text: str) -> None:
    """Compile ``text`` and ask for everything symbolic; a LossError must have a position."""
    try:
        loss = lossdsl.compile(text)
        str(loss.expression)
        for name in loss.inputs[:3]:
            for order in (1, 2):
                str(loss.derivative(name, order))
        assert loss.source
    except lossdsl.LossError as error:
        assert error.line is not None and error.column is not None, repr(error)
        assert "internal error" not in error.message, repr(error)  # a wrapped crash


@pytest.fixture(scope="module", autouse=True)
def _kernel_cache_of_its_own(tmp_path_factory):
    """Each fuzzed text writes a kernel module of its own (``.source``): keep them out of the
    suite's persistent cache, which would otherwise grow with every randomised run."""
    previous = os.environ.get("LOSSDSL_CACHE_DIR")
    os.environ["LOSSDSL_CACHE_DIR"] = str(tmp_path_factory.mktemp("fuzz_kernels"))
    yield
    if previous is None:
        os.environ.pop("LOSSDSL_CACHE_DIR")
    else:
        os.environ["LOSSDSL_CACHE_DIR"] = previous


_SETTINGS = dict(deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])


@settings(max_examples=EXAMPLES or 300, **_SETTINGS)
@given(st.one_of(grammar_texts(), mutated(grammar_texts())))
def test_grammar_texts_and_their_mutations_raise_only_positioned_loss_errors(text):
    compile_everything(text)


@settings(max_examples=EXAMPLES or 600, **_SETTINGS)
@given(st.one_of(construct_texts, mutated(construct_texts)))
def test_construct_texts_and_their_mutations_raise_only_positioned_loss_errors(text):
    compile_everything(text)
