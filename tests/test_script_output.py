"""What a figure script says when run alone: where it wrote, and its claims with their verdicts in the lines
reproduce.py prints; a note before it replaces committed figures; a clean start under python -OO, an ASCII-only
terminal and a matplotlib backend it does not know."""
import ast
import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from repro import experiment as E

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted([*ROOT.glob("Q_*.py"), *ROOT.glob("conservation_*.py"), ROOT / "noether_dynamics.py",
                  ROOT / "teleportation.py", ROOT / "reproduce.py"])
# python -OO (no docstrings), a terminal that takes ASCII only, a backend matplotlib refuses at import
ODD = {"MPLBACKEND": "bogus", "PYTHONIOENCODING": "ascii", "LC_ALL": "C"}


def _run(args, tmp_path, env=None, optimize=False):
    return subprocess.run([sys.executable, *(["-OO"] if optimize else []), *map(str, args)], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, capture_output=True, text=True,
                          timeout=300)


def test_a_figure_script_prints_where_it_wrote_and_the_claim_lines_reproduce_prints(tmp_path):
    run = _run([ROOT / "Q_distribution.py", "--quick", "--out", tmp_path / "out"], tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"wrote {tmp_path / 'out' / 'Q_distribution'}.{{pdf,png,json}}\n" in run.stdout
    payload = json.loads((tmp_path / "out" / "Q_distribution.json").read_text(encoding="utf-8"))
    sys.path.insert(0, str(ROOT))
    try:
        import Q_distribution
        import reproduce
    finally:
        sys.path.remove(str(ROOT))
    expected = io.StringIO()
    with contextlib.redirect_stdout(expected):
        reproduce.print_claims(reproduce.collect_claims("Q_distribution", payload))  # what reproduce.py prints
    assert expected.getvalue().strip() in run.stdout
    assert all(re.search(rf"^{re.escape(row['claim'])}\s+(yes|NO|n/m)\s", run.stdout, re.M)
               for row in Q_distribution.claims(payload))
    assert "QUICK MODE" in run.stdout and "note:" not in run.stderr  # a fresh --out replaces nothing committed


def test_a_note_before_a_run_replaces_committed_figures(tmp_path, capsys):
    """In a checkout of the project, --out figures/ holding committed NAME.* is named before anything is computed;
    a file git does not track, or another folder, is not."""
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "symmetry-flat-minima"\n', encoding="utf-8")
    figures = tmp_path / "figures"
    figures.mkdir()
    for name in ("fig.json", "fig.png", "new.json"):
        (figures / name).write_text("{}", encoding="utf-8")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "pyproject.toml", "figures/fig.json", "figures/fig.png"], check=True)
    subprocess.run([*git, "commit", "-qm", "figures"], check=True)
    E.check_output_location(figures, ("fig", "new"))
    note = capsys.readouterr().err
    assert note.count("\n") == 1 and "figures/fig.*" in note and "new" not in note and "git checkout" in note
    E.check_output_location(tmp_path / "elsewhere", ("fig",))
    E.check_output_location(figures, ("new",))
    assert capsys.readouterr().err == ""


def test_reproduce_docstring_lists_the_figures_it_runs():
    sys.path.insert(0, str(ROOT))
    try:
        import reproduce
    finally:
        sys.path.remove(str(ROOT))
    doc = ast.get_docstring(ast.parse((ROOT / "reproduce.py").read_text(encoding="utf-8")))
    listed = doc.split("The figures, one job each", 1)[1].split("First a short check", 1)[0]
    names = re.findall(r"(\w+) \(", listed)
    assert names == list(reproduce.FIGURES), names


# A fresh interpreter per script, importing torch and what the script needs: the two that import the least run by
# default, every script under pytest -m slow.
FAST_SCRIPTS = {"reproduce.py", "teleportation.py"}


@pytest.mark.parametrize("script", [pytest.param(p, marks=() if p.name in FAST_SCRIPTS else pytest.mark.slow, id=p.name)
                                    for p in SCRIPTS])
def test_each_script_starts_under_odd_environments(script, tmp_path):
    run = _run([script, "--help"], tmp_path, ODD, optimize=True)
    assert run.returncode == 0 and "usage:" in run.stdout and not run.stderr, run.stderr[-2000:]


@pytest.mark.slow  # a second --quick run of Fig. 4/5 in a fresh interpreter (the one above runs by default): pytest -m slow
def test_a_figure_is_made_under_odd_environments(tmp_path):
    run = _run([ROOT / "Q_distribution.py", "--quick", "--out", tmp_path / "out"], tmp_path, ODD, optimize=True)
    assert run.returncode == 0 and (tmp_path / "out" / "Q_distribution.png").is_file(), run.stderr[-2000:]
    assert "wrote" in run.stdout and "\\xbd" in run.stdout  # ½ escaped on an ASCII terminal, not a crash
