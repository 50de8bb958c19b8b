"""The documentation builds with the README's command (mkdocs.yml sets strict: a warning fails the build), and the
check can fail: a copy of the docs with one broken link, or one broken cross-reference, exits non-zero and names it."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _build(config_dir: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=config_dir, env=env, capture_output=True, text=True, timeout=300)


def _warnings(run: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith(("WARNING", "ERROR"))]


@pytest.fixture(scope="module")
def docs_copy(tmp_path_factory):
    """mkdocs.yml and docs/ copied; the package and the figures linked (the hook and mkdocstrings read them)."""
    copy = tmp_path_factory.mktemp("docs_copy")
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", copy / "docs")
    for name in ("symmetry", "figures"):
        (copy / name).symlink_to(ROOT / name, target_is_directory=True)
    return copy


# what a reader must never see as text on a page (outside code): reST roles and literals, Markdown that did not
# render, the plain-text notation the hook turns into sub/superscripts
RAW = re.compile(r"``|\\ s\b|:param |:returns?:|\]\[|\]\(|\*\*\w|_\{|\^\{|::\s*$", re.M)
# a docstring outside this change writes R^{n_l×n_(l−1)}, whose underscores Markdown reads as emphasis
RAW_ALLOWED = {"api/laws/index.html": 1}


def _text_outside_code(page_html: str) -> str:
    import html

    page_html = re.sub(r"<(pre|code|script|style)\b.*?</\1>", " ", page_html, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", page_html))


def test_the_documentation_builds_strict_without_a_warning_or_raw_markup(tmp_path):
    site = tmp_path / "site"
    run = _build(ROOT, site)
    assert run.returncode == 0 and not _warnings(run), (run.returncode, _warnings(run) or run.stderr[-2000:])
    assert (site / "index.html").is_file() and (site / "figures" / "Q_dynamics_elementwise.png").is_file()
    raw = {}
    for page in sorted(site.rglob("index.html")):
        text = _text_outside_code(page.read_text(encoding="utf-8"))
        hits = [text[max(0, m.start() - 40):m.end() + 20].replace("\n", " ") for m in RAW.finditer(text)]
        if len(hits) > RAW_ALLOWED.get(page.relative_to(site).as_posix(), 0):
            raw[page.relative_to(site).as_posix()] = hits[:5]
    assert not raw, f"raw markup on the rendered pages: {raw}"
    monitor = (site / "api" / "monitor" / "index.html").read_text(encoding="utf-8")
    assert re.search(r"ConservationMonitor</span><span[^>]*>\(", monitor) or "ConservationMonitor(" in \
        _text_outside_code(monitor.replace("<code", "<span").replace("</code>", "</span>")), "no constructor shown"
    assert 'class="glightbox"' in (site / "figures" / "index.html").read_text(encoding="utf-8")


def test_the_notation_hook_leaves_code_alone():
    import importlib.util

    spec = importlib.util.spec_from_file_location("notation", ROOT / "docs" / "hooks" / "notation.py")
    notation = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(notation)
    assert notation.render_notation("<p>θ_{k+1} = 2θ_k − θ_{k−1}, R^{n_i×n_{i−1}}, ‖Y − F‖_F, η^p</p>") == (
        "<p>θ<sub>k+1</sub> = 2θ<sub>k</sub> − θ<sub>k−1</sub>, R<sup>n<sub>i</sub>×n<sub>i−1</sub></sup>, "
        "‖Y − F‖<sub>F</sub>, η<sup>p</sup></p>")
    untouched = '<p>module_symmetries, max_evaluations <code>W_{i}</code> <a href="a_b.md">x</a></p><pre>e^{x}</pre>'
    assert notation.render_notation(untouched) == untouched


@pytest.mark.slow  # two strict builds of the site each: pytest -m slow (the build itself is checked above)
@pytest.mark.parametrize("broken, named", [
    ("[a page that does not exist](no-such-page.md)", "no-such-page.md"),
    ("[`a function that does not exist`][symmetry.no_such_function]", "symmetry.no_such_function"),
    ("![a figure that does not exist](figures/no_such_figure.png)", "figures/no_such_figure.png"),
])
def test_a_broken_link_fails_the_build_and_is_named(docs_copy, tmp_path, broken, named):
    page = docs_copy / "docs" / "findings.md"
    original = page.read_text(encoding="utf-8")
    page.write_text(original + f"\n\nA deliberately broken link: {broken}\n", encoding="utf-8")
    try:
        run = _build(docs_copy, tmp_path / "site")
    finally:
        page.write_text(original, encoding="utf-8")
    assert run.returncode != 0, "a broken link did not fail the strict build"
    assert any(named in line for line in _warnings(run)), run.stderr[-2000:]
    assert _build(docs_copy, tmp_path / "site2").returncode == 0  # the copy itself is sound: the link failed it


def test_ci_builds_the_documentation_strict_with_its_warnings_shown():
    """CI's docs step: --strict, and no --quiet/-q, which hides the warnings that --strict counts (exit 0 with them)."""
    commands = [line for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
                if re.match(r"\s*mkdocs build", line)]
    assert commands, "CI does not build the documentation"
    for line in commands:
        command = line.split("#")[0].split()
        assert "--strict" in command and not {"--quiet", "-q"} & set(command), line


def test_every_committed_figure_is_on_a_page_and_the_readme_shows_one():
    pages = {p: p.read_text(encoding="utf-8") for p in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]}
    missing = [png.name for png in sorted((ROOT / "figures").glob("*.png"))
               if not any(f"figures/{png.name})" in text for text in pages.values())]
    assert not missing, f"committed figures that no page shows: {missing}"
    assert re.search(r"!\[[^\]]+\]\(figures/\w+\.png\)", pages[ROOT / "README.md"]), "the README shows no figure"
