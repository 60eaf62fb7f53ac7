"""Every snippet of the guides in docs/ runs, and shows what it really prints.

Each guide is run top to bottom in an empty folder, as a reader would follow it:

* ```` ```loss file=NAME.loss ```` blocks are written to that file (and must pass
  ``lossdsl check`` unless marked ``broken``); other ``loss`` blocks must resolve;
* ```` ```python ```` blocks run in order, in one namespace per guide;
* ```` ```console ```` blocks: each ``$ lossdsl ...`` line is run (in this process) and its
  output compared with the lines below it, where a line ``...`` stands for any lines; the
  exit status must be 0, or the block's ``exit=N``. Blocks without ``$`` lines (installation
  commands) are not run.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from lossdsl import cli
from lossdsl.frontend.resolve import resolve_text

DOCS = Path(__file__).resolve().parent.parent / "docs"
GUIDES = ["tutorial.md", "language.md", "business-costs.md", "estimators.md", "boosting.md",
          "linear.md", "jax.md", "keras.md"]
FENCE = re.compile(r"^```(\w*)([^\n]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def snippets(path: Path):
    """(language, options, body, line number) of each fenced block."""
    text = path.read_text()
    for match in FENCE.finditer(text):
        language, info, body = match.groups()
        options = {}
        for item in info.split():
            key, _, value = item.partition("=")
            options[key] = value
        yield language, options, body, text[:match.start()].count("\n") + 1


def run_command(command: str) -> tuple[int, str]:
    """Run ``lossdsl ARGS`` in this process: (exit status, stdout and stderr as printed)."""
    words = shlex.split(command)
    assert words[0] == "lossdsl", f"guides run only lossdsl commands, not {command!r}"
    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        status = cli.main(words[1:])
    return status, output.getvalue()


def matches(expected: list[str], actual: str) -> bool:
    """Whether ``actual`` has the expected lines (``...`` = any lines), trailing spaces aside."""
    pattern = "".join(r"(?:[^\n]*\n)*?" if line.strip() == "..." else re.escape(line.rstrip())
                      + r"[ \t]*\n" for line in expected)
    actual_lines = "".join(line.rstrip() + "\n" for line in actual.splitlines())
    return re.fullmatch(pattern, actual_lines) is not None


def run_console(body: str, options: dict, where: str) -> None:
    commands: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            commands.append((line[2:], []))
        elif commands:
            commands[-1][1].append(line)
    for command, expected in commands:
        status, output = run_command(command)
        assert status == int(options.get("exit", "0")), f"{where}: {command}\n{output}"
        assert matches(expected, output), (f"{where}: the output of {command!r} is not what the "
                                           f"guide shows:\n{output}")


@pytest.mark.parametrize("guide", GUIDES)
def test_guide_snippets_run(guide, tmp_path, monkeypatch):
    path = DOCS / guide
    if not path.exists():
        pytest.fail(f"docs/{guide} is missing")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs.{guide}"}
    ran = 0
    for language, options, body, line in snippets(path):
        where = f"docs/{guide}:{line}"
        if language == "loss":
            if "file" in options:
                Path(options["file"]).write_text(body)
                if "broken" not in options:
                    status, output = run_command(f"lossdsl check -q {options['file']}")
                    assert status == 0, f"{where}: {output}"
            else:
                resolve_text(body)
        elif language == "python":
            exec(compile(body, where, "exec"), namespace)  # noqa: S102 - our own docs
        elif language == "console":
            run_console(body, options, where)
        else:
            continue
        ran += 1
    assert ran > 0
