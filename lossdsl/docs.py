"""Generated documentation: the reference page of the built-in loss library.

``render_losses_markdown()`` writes every loss of the prelude (``lossdsl/prelude/*.loss``)
with its signature, description, formula, parameters and defaults, reference, and the
gradient and Hessian diagonal the compiler derives for it, so the page cannot drift from the
definitions (``tests/test_library.py`` fails when ``docs/losses.md`` is stale). Regenerate it
with::

    python -m lossdsl.docs losses > docs/losses.md

Symbolic derivation needs no kernel compile, so rendering takes about a second.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .api import compile as compile_loss
from .catalog import Entry, entries
from .frontend.resolve import PRELUDE_DIR

# Section titles of the prelude files, in the order the page shows them.
SECTIONS: dict[str, str] = {
    "regression": "Regression",
    "classification": "Binary and multi-label classification",
    "multiclass": "Multiclass (class axis)",
    "batch": "Nested reductions: batch-level and per-row vector losses",
    "regularizers": "Regularizers",
    "business": "Business costs",
}

COMMAND = "python -m lossdsl.docs losses > docs/losses.md"

INTRODUCTION = f"""\
# Loss reference

Every built-in loss of lossdsl, as defined in the prelude (`lossdsl/prelude/*.loss`). This page
is generated (`{COMMAND}`); edit the prelude, not this file.

Conventions:

- Arguments are `(y, p, params...)`: the target first, then the prediction. `p` is a
  prediction on the target's scale or a probability, `z` a raw score (a logit, or the log of a
  rate on a log link), `log_p` log-probabilities, `w` a parameter vector of its own length.
  `cost` (for `expected_cost`) holds each sample's row of a cost matrix.
- A loss is one value per sample (per row for the class-axis losses), reduced by
  `reduction="mean"` (default), `"sum"` or `"none"`, with optional `sample_weight`. Batch-level
  losses (`dice`, `tversky`, `rmsle`) and regularizers are one number already.
- Parameters with a default can be passed by position or by name:
  `huber(y, p, 0.5)`, `focal_logits(y, z, gamma=3)`.
- "Gradient" and "Hessian" are what `lossdsl.compile(call, reduction="sum").derivative(x)`
  and `.derivative(x, 2)` return for the prediction `x`: per-element derivatives of the summed
  loss (the diagonal of the Hessian), after the compiler's simplification and stable rewrites.
  In them `onehot(y)` is the one-hot row of integer labels `y`, `K` the number of classes,
  `stop_gradient(...)` a value held constant (the max shift of a softmax) and `where(c, a, b)`
  is `a` where `c` holds, else `b`.
"""


def _section_of(entry: Entry) -> str:
    return Path(entry.file).stem


def _file_comment(stem: str) -> str:
    """The comment block at the top of a prelude file as markdown: its lines joined into
    paragraphs, with ``- `` lines (and their indented continuations) kept as list items."""
    blocks: list[str] = []
    for line in (PRELUDE_DIR / f"{stem}.loss").read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line[1:].rstrip()
        if text.strip().startswith("- "):
            blocks.append(text.strip())  # a new list item
        elif blocks and (blocks[-1].startswith("- ") == text.startswith("   ")):
            blocks[-1] += " " + text.strip()  # the paragraph or item goes on
        else:
            blocks.append(text.strip())
    text = blocks[0] if blocks else ""
    for previous, block in zip(blocks, blocks[1:]):
        both_items = previous.startswith("- ") and block.startswith("- ")
        text += ("\n" if both_items else "\n\n") + block
    return text


def _source_order(stem: str, names: list[str]) -> list[str]:
    """``names`` in the order their ``def`` appears in the prelude file."""
    text = (PRELUDE_DIR / f"{stem}.loss").read_text()
    return sorted(names, key=lambda name: text.index(f"def {name}("))


def _description(entry: Entry) -> str:
    return entry.doc.split("Ref:", 1)[0].strip()


def _derivatives(entry: Entry) -> tuple[str, str, str]:
    """(input, gradient, Hessian diagonal) of the summed loss w.r.t. the entry's prediction."""
    loss = compile_loss(entry.call_expression(), reduction="sum")
    wrt = entry.prediction()
    return wrt, str(loss.derivative(wrt)), str(loss.derivative(wrt, 2))


def _parameters(entry: Entry) -> str:
    rows = ["| Parameter | Default |", "|---|---|"]
    for name, default in entry.parameters:
        rows.append(f"| `{name}` | {'input' if default is None else f'`{default}`'} |")
    return "\n".join(rows)


def render_entry(entry: Entry) -> str:
    """The markdown section of one loss."""
    wrt, gradient, hessian = _derivatives(entry)
    parts = [
        f"### {entry.name}",
        "",
        f"`{entry.signature}`",
        "",
        _description(entry),
        "",
        "```",
        f"{entry.call_expression()} = {entry.formula}",
        "```",
        "",
        _parameters(entry),
        "",
        f"Reference: {entry.reference}",
        "",
        f"Gradient with respect to `{wrt}`:",
        "",
        "```",
        gradient,
        "```",
        "",
        f"Hessian diagonal with respect to `{wrt}`:",
        "",
        "```",
        hessian,
        "```",
        "",
    ]
    return "\n".join(parts)


def render_losses_markdown() -> str:
    """The whole reference page (``docs/losses.md``) as a string."""
    grouped: dict[str, list[Entry]] = {}
    for entry in entries():
        grouped.setdefault(_section_of(entry), []).append(entry)
    unknown = sorted(set(grouped) - set(SECTIONS))
    stems = [stem for stem in SECTIONS if stem in grouped] + unknown
    by_name = {entry.name: entry for entry in entries()}

    contents = ["## Contents", ""]
    body: list[str] = []
    for stem in stems:
        title = SECTIONS.get(stem, stem.replace("_", " ").capitalize())
        names = _source_order(stem, [entry.name for entry in grouped[stem]])
        anchor = title.lower().replace(" ", "-").replace(":", "").replace("(", "").replace(")", "")
        links = ", ".join(f"[{name}](#{name})" for name in names)
        contents.append(f"- [{title}](#{anchor}): {links}")
        body += [f"## {title}", "", _file_comment(stem), ""]
        body += [render_entry(by_name[name]) for name in names]
    return "\n".join([INTRODUCTION, *contents, "", *body]).rstrip("\n") + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lossdsl.docs losses``: print the loss reference page."""
    parser = argparse.ArgumentParser(prog="python -m lossdsl.docs",
                                     description="Print a generated documentation page.")
    parser.add_argument("page", choices=["losses"],
                        help="the page to print (losses: docs/losses.md)")
    arguments = parser.parse_args(argv)
    if arguments.page == "losses":
        sys.stdout.write(render_losses_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
