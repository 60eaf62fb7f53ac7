"""The grammar and parser: precedence, statements, positions, and robustness on random text."""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lossdsl
from lossdsl.frontend import ast
from lossdsl.frontend.parse import parse, parser
from lossdsl.frontend.resolve import resolve_text


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


@pytest.mark.parametrize("text, line, column", [
    ("loss a = x*2\n  + y*3\n", 2, 3),     # meant as a continuation: a = x*2 silently
    ("x*2\n- y", 2, 1),
    ("param k = 2\n\n# a comment\n-log(p)*k", 4, 1),
])
def test_a_line_starting_with_a_sign_after_a_statement_is_an_error(text, line, column):
    with pytest.raises(lossdsl.LossSyntaxError, match="starts with") as raised:
        lossdsl.api.loss_from_text(text)
    assert (raised.value.line, raised.value.column) == (line, column)
    assert "parentheses" in str(raised.value)


def test_a_leading_sign_is_fine_first_in_parentheses_or_after_a_semicolon():
    assert lossdsl.api.loss_from_text("-log(p)").inputs == ("p",)
    assert lossdsl.api.loss_from_text("loss a = x\n(-y)").inputs == ("y",)
    assert lossdsl.api.loss_from_text("loss a = (x*2\n  + y*3)").inputs == ("x", "y")
    assert lossdsl.api.loss_from_text("loss a = x; -y").inputs == ("y",)


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
_EXPRESSION_PARSER = __import__("lark").Lark(_EXPRESSION_GRAMMAR, parser="lalr")

# Sentences of _EXPRESSION_GRAMMAR built rule by rule, as (text, level) with level the
# grammar's rule the text is an instance of: 0 sum, 1 product, 2 unary, 3 power, 4 atom. A
# rule's operand of a lower level is parenthesised (the grammar's "(" expression ")"), which
# the grammar also offers on its own. Built directly, instead of drawn by
# hypothesis.extra.lark.from_lark, which took 30-50 s to draw 150 examples (the checks: 0.3 s).
_SUM, _PRODUCT, _UNARY, _POWER, _ATOM = range(5)


def _operand(term: tuple[str, int], level: int) -> str:
    text, own = term
    return text if own >= level else f"({text})"


def _rules(terms):
    return st.one_of(
        st.tuples(terms, st.sampled_from("+-"), terms).map(
            lambda t: (_operand(t[0], _SUM) + t[1] + _operand(t[2], _PRODUCT), _SUM)),
        st.tuples(terms, st.sampled_from("*/"), terms).map(
            lambda t: (_operand(t[0], _PRODUCT) + t[1] + _operand(t[2], _UNARY), _PRODUCT)),
        terms.map(lambda t: ("-" + _operand(t, _UNARY), _UNARY)),
        st.tuples(terms, terms).map(
            lambda t: (_operand(t[0], _ATOM) + "^" + _operand(t[1], _UNARY), _POWER)),
        terms.map(lambda t: (f"({t[0]})", _ATOM)),
        st.tuples(st.sampled_from(["exp", "tanh", "softplus", "abs"]), terms).map(
            lambda t: (f"{t[0]}({t[1][0]})", _ATOM)),
    )


_EXPRESSION_TEXTS = st.recursive(
    st.sampled_from(list("123456789xyp")).map(lambda leaf: (leaf, _ATOM)), _rules,
    max_leaves=24).map(lambda term: term[0])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_EXPRESSION_TEXTS)
def test_printed_graph_parses_back_to_the_same_graph(text):
    _EXPRESSION_PARSER.parse(text)  # a sentence of the grammar (else lark raises)
    graph = expression(text)
    assert expression(str(graph)) is graph


# ------------------------------------------------------------------ depth, size and sharing


def test_long_def_and_let_chains_and_huge_sums_resolve():
    """Nothing in the front end recurses per level: 200 chained defs, 300 chained lets and a
    sum of 10,000 terms (a tree 10,000 levels deep) all resolve."""
    defs = ["def f0(x) = x + 1"] + [f"def f{i}(x) = f{i - 1}(x) + 1" for i in range(1, 200)]
    graph = expression("\n".join(defs) + "\nf199(p)")
    assert graph.depth > 200 and {n.value for n in _walk(graph) if n.op == "input"} == {"p"}
    lets = ["let r0 = p"] + [f"let r{i} = r{i - 1} * (r{i - 1} + {i})" for i in range(1, 300)]
    assert expression("\n".join(lets) + "\nr299 * y").depth > 300
    terms = [f"x{i}" for i in range(10000)]
    assert len(resolve_text(" + ".join(terms)).expression.inputs) == 10000
    assert expression("-" * 3000 + "p") is expression("p")


def _walk(graph):
    from lossdsl.ir.node import toposort

    return toposort([graph])


def test_a_def_is_expanded_once_per_distinct_arguments(monkeypatch):
    """Each def calls the one before twice; expanded naively the work doubles per def (21 defs
    took 9.4 s, 64 never finished). Applications are memoised on the argument nodes."""
    from lossdsl.frontend import resolve

    built = []

    def counting_make(op, args, *rest, **options):
        built.append(op)
        return make(op, args, *rest, **options)

    make = resolve.make
    monkeypatch.setattr(resolve, "make", counting_make)
    defs = ["def f0(x) = x*x"] + [f"def f{i}(x) = f{i - 1}(x) + f{i - 1}(x)" for i in range(1, 16)]
    expression("\n".join(defs) + "\nf15(p)")
    assert len(built) < 100  # 2^16 without sharing
    monkeypatch.undo()
    defs = ["def f0(x) = x*x"] + [f"def f{i}(x) = f{i - 1}(x) + f{i - 1}(x)" for i in range(1, 64)]
    expression("\n".join(defs) + "\nf63(p)")


def test_memoised_defs_bind_keywords_and_defaults_as_before():
    assert expression("poisson(y, p, full=1)") is expression("poisson(y, p, 1e-8, 1)")
    assert expression("poisson(y, p, full=1)") is not expression("poisson(y, p)")
    assert expression("huber(y, p) + huber(y, p, delta=2)") is expression(
        "huber(y, p, 1) + huber(y, p, 2)")
    text = "def g(a, b=a + 1, c=b*2) = a + b + c\n"
    assert expression(text + "g(p) * g(p, c=q)") is expression(
        "(p + (p + 1) + (p + 1)*2) * (p + (p + 1) + q)")


def test_many_params_resolve_in_linear_time():
    """8,000 params took 2.3 s: each param's value was evaluated with a copy of every param
    declared before it. Resolution time must grow linearly with the number of params."""
    import time

    from lossdsl.frontend.resolve import build_scope, prelude

    def seconds(count: int) -> float:
        text = "\n".join(f"param a{i} = {i} + 1" for i in range(count))
        module = parse(text + "\n" + " + ".join(f"a{i}*p" for i in range(0, count, 50)))
        best = float("inf")
        for _ in range(2):
            start = time.process_time()
            build_scope(module, prelude())
            best = min(best, time.process_time() - start)
        return best

    small, large = seconds(1000), seconds(8000)
    assert large < 16 * small  # 8x linear, 64x quadratic


# ------------------------------------------------------------------------ error recovery


def test_parse_all_reports_every_syntax_error_and_keeps_the_rest():
    from lossdsl.frontend.parse import parse_all

    source = (
        "param k = 2\n"
        "loss a = (y - p\n"  # missing ')'
        "loss b = k*y\n"
        "loss c = y $ p\n"  # a character no token starts with
        "let r = huber(delta=1, y)\n"  # positional after keyword
        "loss d = r +\n"  # the end comes too early
    )
    module, errors = parse_all(source, "f.loss")
    assert [(e.line, e.column, e.message) for e in errors] == [
        (2, 16, "missing ')'"),
        (4, 12, "unexpected character '$'"),
        (5, 24, "positional argument after a keyword argument"),
        (6, 13, "unexpected end of input"),
    ]
    assert [s.name for s in module.statements] == ["k", "b"]
    assert module.broken == {"a", "c", "r", "d"}
    with pytest.raises(lossdsl.LossSyntaxError) as raised:
        parse(source)
    assert (raised.value.line, raised.value.column) == (2, 16)  # the first one


@pytest.mark.parametrize(
    ("text", "position", "hint"),
    [
        ("loss a = (y - p\nloss b = y", (1, 16), "line 1, column 10"),
        ("loss a = huber(y, p\n\nparam k = 1", (1, 20), "line 1, column 15"),
        ("exp((y - p)", (1, 12), "line 1, column 4"),
        ("loss a = f((y - p)\n  * 2\nb = y", (2, 6), "line 1, column 11"),
    ],
)
def test_missing_parenthesis_is_reported_where_it_is_missing(text, position, hint):
    with pytest.raises(lossdsl.LossSyntaxError) as raised:
        parse(text)
    assert (raised.value.line, raised.value.column) == position
    assert raised.value.message == "missing ')'" and hint in raised.value.hint


def test_a_parenthesis_closed_later_is_not_reported_missing():
    with pytest.raises(lossdsl.LossSyntaxError) as raised:
        parse("f(a\n b)")
    assert (raised.value.line, raised.value.column, raised.value.message) == (
        2, 2, "unexpected 'b'")


def test_byte_order_mark_is_not_part_of_the_text():
    assert expression("\ufeffy - p") is expression("y - p")
