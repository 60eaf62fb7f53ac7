"""The language reference's table of built-in functions is the registry's (generated)."""

from __future__ import annotations

from lossdsl import ops
from lossdsl.docs import (
    LANGUAGE_PAGE,
    PRIMITIVES_BEGIN,
    PRIMITIVES_END,
    render_primitives_markdown,
    with_primitives_table,
)

COMMAND = "python -m lossdsl.docs primitives --write"


def test_the_language_page_lists_every_callable_primitive():
    page = LANGUAGE_PAGE.read_text()
    assert PRIMITIVES_BEGIN in page and PRIMITIVES_END in page
    assert page == with_primitives_table(page), f"docs/language.md is stale: {COMMAND}"


def test_one_row_per_primitive_a_loss_can_call():
    table = render_primitives_markdown()
    for op in ops.operations("elementwise"):
        assert (f"| `{op.callable_as}(" in table) == (op.callable_as is not None), op.name
