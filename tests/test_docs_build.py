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


def test_the_documentation_builds_strict_without_a_warning(tmp_path):
    run = _build(ROOT, tmp_path / "site")
    assert run.returncode == 0 and not _warnings(run), (run.returncode, _warnings(run) or run.stderr[-2000:])
    assert (tmp_path / "site" / "index.html").is_file() and (tmp_path / "site" / "figures" / "Q_dynamics_elementwise.png").is_file()


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
