"""The grammar and parser: precedence, statements, positions, and robustness on random text."""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.lark import from_lark

import lossdsl
from lossdsl import ast
from lossdsl.parse import parse, parser
from lossdsl.resolve import resolve_text


def expression(text: str):
    """The graph of a one-expression text (names become inputs)."""
    return resolve_text(text).expression.graph


def test_grammar_is_conflict_free_under_strict_lalr():
    assert parser(strict=True).options.parser == "lalr"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-x^2", "-(x^2)"),
        ("-x**2", "-(x^2)"),
        ("2^-x", "2^(-x)"),
        ("2^3^x", "2^(3^x)"),
        ("a-b-c", "(a - b) - c"),
        ("a/b/c", "(a / b) / c"),
        ("a+b*c", "a + (b*c)"),
        ("(a+b)*c", "(a + b)*c"),
        ("a < b + 1", "a < (b + 1)"),
        ("not a < b and c", "(not (a < b)) and c"),
        ("a or b and c", "a or (b and c)"),
        ("if a < b then x else -y", "where(a < b, x, -y)"),
    ],
)
def test_precedence_and_associativity(text, expected):
    assert expression(text) is expression(expected)


@pytest.mark.parametrize("text", ["1", "1.5", "1e-3", ".5", "2.", "1E+2"])
def test_number_forms(text):
    (statement,) = parse(text).statements
    assert statement.value.value == float(text)


def test_statements_comments_and_positions():
    source = (
        "# the margin\n"
        "param delta = 1.0   # trailing comment\n"
        "def asym(y, p, under=3.0, over=1.0) = where(p < y, under*(y - p),\n"
        "                                            over*(p - y))\n"
        "let r = p - y\n"
        "loss fraud = 40*y*softplus(-p) + (1 - y)*softplus(p)\n"
        'import "other.loss"\n'
        "r^2; -r\n"
    )
    module = parse(source, "f.loss")
    kinds = [type(s).__name__ for s in module.statements]
    assert kinds == [
        "Param",
        "Def",
        "Let",
        "LossDecl",
        "Import",
        "ExpressionStatement",
        "ExpressionStatement",
    ]
    param, define, let, loss, imported, first, second = module.statements
    assert param.doc == "the margin"
    assert (param.span.file, param.span.line, param.span.column) == ("f.loss", 2, 1)
    assert [p.name for p in define.parameters] == ["y", "p", "under", "over"]
    assert define.parameters[2].default.value == 3.0
    assert define.body.span.end_line == 4  # the call spans two lines inside parentheses
    assert let.name == "r" and loss.name == "fraud" and imported.path == "other.loss"
    assert isinstance(second.value, ast.UnaryOp)  # "-r" on its own is a new statement
    name = loss.value.right.right.args[0]
    line = source.splitlines()[5]
    assert (name.span.line, name.span.column) == (
        6,
        line.rindex("softplus(p)") + len("softplus(") + 1,
    )


def test_newline_after_operator_continues_the_expression():
    assert expression("a +\n b") is expression("a + b")
    assert expression("(a\n - b)") is expression("a - b")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=string.printable + "αβ∑→", max_size=60))
def test_random_text_raises_only_loss_errors(text):
    try:
        lossdsl.compile(text)
    except lossdsl.LossError as error:
        assert error.line is None or error.line >= 1
        assert str(error)


_ALPHABET = st.sampled_from(
    list(" +-*/^()<>=!,.;\n#abcdefxyzpq01259e") + ["if ", " then ", " else ", "and", "or", "not"]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_ALPHABET, max_size=30).map("".join))
def test_near_miss_text_raises_only_loss_errors(text):
    """Strings of the language's own tokens: most are almost valid, the hard case for errors."""
    try:
        lossdsl.compile(text)
    except lossdsl.LossError as error:
        assert str(error)


_EXPRESSION_GRAMMAR = r"""
start: expression
?expression: sum
?sum: product | sum "+" product | sum "-" product
?product: unary | product "*" unary | product "/" unary
?unary: power | "-" unary
?power: atom | atom "^" unary
?atom: NUMBER | NAME | "(" expression ")" | FUNCTION "(" expression ")"
NUMBER: /[1-9]/
NAME: "x" | "y" | "p"
FUNCTION: "exp" | "tanh" | "softplus" | "abs"
"""


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(from_lark(__import__("lark").Lark(_EXPRESSION_GRAMMAR, parser="lalr"), start="start"))
def test_printed_graph_parses_back_to_the_same_graph(text):
    graph = expression(text)
    assert expression(str(graph)) is graph
