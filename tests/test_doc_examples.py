"""Every Python block of the README and the documentation pages runs on its own, as a reader copies it into a
file and runs ``python block.py``, and prints what the page shows after it.

A block is a fenced ``python`` block. The ``text`` block right after it, if any, is what it prints; a block that
prints and shows nothing, or shows what it does not print, fails. A top-level expression shown for its value
(``report.condition_number``, ``L.memory_estimate(mlp)``) fails too: run as a script it prints nothing.
An HTML comment on the line before a block, visible in the page's source only, may say
``<!-- example: skip, REASON -->`` (the block is not run; the reason is required) or
``<!-- example: numbers within 10 % -->`` (the numbers of its output are compared to 10 %, for round-off that
moves with the machine; the text around them exactly).
"""
import ast
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(?:<!-- example: (?P<marker>[^>]*?) -->\n)?```python\n(?P<code>.*?)```[ \t]*\n"
                   r"(?:\s*```text\n(?P<shown>.*?)```)?", re.S)
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
BARE_CHECK = "_example_bare_expression"


@dataclass
class Example:
    page: str
    line: int
    code: str
    shown: str | None
    marker: str | None

    def __str__(self):
        return f"{self.page}:{self.line}"


def collect(page: str, text: str | None = None) -> list[Example]:
    text = (ROOT / page).read_text(encoding="utf-8") if text is None else text
    return [Example(page, text.count("\n", 0, m.start("code")), m.group("code"), m.group("shown"), m.group("marker"))
            for m in BLOCK.finditer(text)]


EXAMPLES = [example for page in PAGES for example in collect(page)]


def script(code: str) -> str:
    """The block as run: each top-level expression statement is checked. A call is taken as made for its effect
    when its value is None, a bool (a status flag, as monitor.record returns) or a torch.Generator
    (torch.manual_seed); any other value, or an expression that is not a call, is one a reader expects to see."""
    tree = ast.parse(code)
    body: list[ast.stmt] = []
    for node in tree.body:
        if isinstance(node, ast.Expr):
            node = ast.Expr(ast.Call(ast.Name(BARE_CHECK, ast.Load()),
                                     [node.value, ast.Constant(isinstance(node.value, ast.Call)),
                                      ast.Constant(node.lineno), ast.Constant(ast.get_source_segment(code, node))], []))
        body.append(node)
    check = (f"def {BARE_CHECK}(value, call, line, source):\n"
             "    import torch\n"
             "    if not (call and (value is None or isinstance(value, (bool, torch.Generator)))):\n"
             "        raise SystemExit(f'line {line}: the expression {source!r} is {type(value).__name__}, not None: '\n"
             "                         'run as a script it prints nothing (print it, or drop it)')\n")
    return check + ast.unparse(ast.fix_missing_locations(ast.Module(body, []))) + "\n"


def run_example(example: Example, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "example.py"
    path.write_text(script(example.code), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, str(path)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)


def compare(printed: str, shown: str, marker: str | None) -> str | None:
    """None if the output is what the page shows, else what differs."""
    if marker == "numbers within 10 %":
        if NUMBER.sub("#", printed) != NUMBER.sub("#", shown):
            return f"the page shows\n{shown}\nthe block prints\n{printed}"
        for got, want in zip(NUMBER.findall(printed), NUMBER.findall(shown), strict=True):
            if abs(float(got) - float(want)) > 0.1 * abs(float(want)):
                return f"{got} printed where the page shows {want}"
        return None
    return None if printed == shown else f"the page shows\n{shown}\nthe block prints\n{printed}"


def test_the_pages_have_examples_and_markers_are_known():
    assert len(EXAMPLES) >= 8
    for example in EXAMPLES:
        marker = example.marker
        assert marker is None or marker == "numbers within 10 %" or re.fullmatch(r"skip, \S.{9,}", marker), (
            f"{example}: unknown example marker {marker!r} (a skip needs its reason)")
    assert sum(e.marker is not None and e.marker.startswith("skip") for e in EXAMPLES) <= 2, "few skips"


@pytest.mark.slow  # a fresh interpreter per block, some tracing resnet18: pytest -m slow (the check's own controls below run by default)
@pytest.mark.parametrize("example", EXAMPLES, ids=str)
def test_each_example_runs_on_its_own_and_prints_what_the_page_shows(example, tmp_path):
    if example.marker and example.marker.startswith("skip"):
        pytest.skip(f"{example}: {example.marker}")
    run = run_example(example, tmp_path)
    assert run.returncode == 0, f"{example} fails when run on its own:\n{run.stderr[-3000:]}"
    if example.shown is None:
        assert not run.stdout, f"{example} prints, and the page shows no output after it:\n{run.stdout[:2000]}"
    else:
        difference = compare(run.stdout, example.shown, example.marker)
        assert difference is None, f"{example}: {difference}"


# ------------------------------------------------------------------------------------- the check itself can fail
def test_a_changed_output_a_bare_expression_and_a_missing_name_fail(tmp_path):
    page = ("```python\nprint(1 + 1)\n```\n\n```text\n3\n```\n\n```python\n1 + 1\n```\n\n"
            "```python\nprint(model)\n```\n\n<!-- example: numbers within 10 % -->\n```python\nprint(0.3)\n```\n"
            "```text\n0.31\n```\n")
    changed, bare, undefined, close = collect("page.md", page)
    assert compare(run_example(changed, tmp_path).stdout, changed.shown, changed.marker) is not None
    assert compare("2\n", changed.shown, None) is not None and compare("3\n", changed.shown, None) is None
    failed = run_example(bare, tmp_path)
    assert failed.returncode != 0 and "prints nothing" in failed.stderr
    failed = run_example(undefined, tmp_path)
    assert failed.returncode != 0 and "NameError" in failed.stderr
    assert compare(run_example(close, tmp_path).stdout, close.shown, close.marker) is None
    assert compare("0.4\n", close.shown, close.marker) is not None
