"""What a reader of the API pages and the scripts sees: docstrings cross-reference in the documentation
site's own syntax (mkdocstrings/autorefs), never in Sphinx roles that the site prints literally."""
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_FILES = sorted([*(ROOT / "symmetry").rglob("*.py"), *(ROOT / "repro").rglob("*.py")])

# Sphinx cross-reference roles (:func:`x`, :class:`x`, :py:meth:`x`, …). The docstring fields of
# `docstring_style: sphinx` (:param x:, :returns:, :raises E:, :type x:, :rtype:) are not roles: no backtick.
SPHINX_ROLE = re.compile(r":(?:py:)?(?:func|class|data|meth|attr|mod|obj|exc|const|any|ref|term|doc):`")
# [`text`][symmetry.path]: an explicit autorefs target (an empty [] resolves in the docstring's scope).
EXPLICIT_REF = re.compile(r"\]\[((?:symmetry|repro)(?:\.\w+)*)\]")

ROLES_ALLOWED_IN: set[str] = set()


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_no_sphinx_role_in_the_package_scripts_or_benchmarks():
    # the scripts' and benchmarks' docstrings are read in the source and in --help: no roles there either
    sources = [*PACKAGE_FILES, *ROOT.glob("*.py"), *(ROOT / "benchmarks").glob("*.py")]
    hits = [f"{_rel(p)}:{n}: {line.strip()}" for p in sources if _rel(p) not in ROLES_ALLOWED_IN
            for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1) if SPHINX_ROLE.search(line)]
    assert not hits, ("Sphinx roles print literally on the API pages; write [`name`][] (resolved in the "
                      "docstring's scope), [`name`][symmetry.full.path], or ``name`` for a target the site does not "
                      "document:\n" + "\n".join(hits))


def test_the_role_pattern_spares_the_sphinx_docstring_fields():
    assert SPHINX_ROLE.search("see :func:`run` and :py:class:`Snapshot`")
    for field in (":param lr: step size", ":returns: the loss", ":raises ValueError: on NaN", ":type lr: float",
                  ":rtype: Tensor"):
        assert not SPHINX_ROLE.search(field), field


def _resolve(path: str):
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(path)


@pytest.mark.parametrize("path", sorted({m.group(1) for p in PACKAGE_FILES
                                         for m in EXPLICIT_REF.finditer(p.read_text(encoding="utf-8"))}))
def test_each_explicit_cross_reference_names_an_object(path):
    # the strict docs build checks every link; this catches a renamed target without mkdocs installed
    try:
        _resolve(path)
    except (ImportError, AttributeError) as err:
        pytest.fail(f"cross-reference target {path} does not exist: {err}")


# --------------------------------------------------------------------- nothing a user reads points outside the clone
# The project's design notes (../shared/SPEC*.md) are not in a user's clone: cite the paper (section, equation),
# the related paper, or a page of the documentation site instead.
OUTSIDE = re.compile(r"\.\./shared|SPEC(?![A-Za-z])")
USER_FILES = sorted([*PACKAGE_FILES, *ROOT.glob("*.py"), *ROOT.glob("*.ipynb"),
                     *(p for p in (ROOT / "benchmarks").rglob("*") if p.suffix in (".py", ".json", ".md"))])
OUTSIDE_ALLOWED_IN: set[str] = set()


def test_nothing_a_user_reads_points_outside_the_repository():
    assert any(p.suffix == ".ipynb" for p in USER_FILES) and any(_rel(p).startswith("benchmarks/") for p in USER_FILES)
    hits = [f"{_rel(p)}:{n}: {line.strip()[:160]}" for p in USER_FILES if _rel(p) not in OUTSIDE_ALLOWED_IN
            for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1) if OUTSIDE.search(line)]
    assert not hits, "a user's clone has no ../shared or SPEC files; cite the paper or a docs page:\n" + "\n".join(hits)


def test_the_outside_pattern_finds_the_old_citations():
    for text in ("see ../shared/SPEC.md", "(SPEC-extensions A1.3(c))", "Notation (SPEC):", "SPEC §7"):
        assert OUTSIDE.search(text), text
    assert not OUTSIDE.search("SpectralModes, a spectral initialisation; shared/tied weights")


# --------------------------------------------------------------------- script docstrings state no runtime of their own
# The figure table (written from figures/claims.json) is the one source of a figure's time; a time in a docstring goes
# stale when the code or the machine changes (teleportation.py said "about 2 min" beside 49 s measured).
RUNTIME = re.compile(r"(?i)\bruntime\b|\b\d+(?:\.\d+)?[\s-]*(?:s|secs?|seconds?|mins?|minutes?|h|hours?)\b|"
                     r"\ban? (?:second|minute|hour)\b")
SCRIPTS = sorted(ROOT.glob("*.py"))
RUNTIME_ALLOWED_IN: set[str] = set()


def test_no_script_docstring_states_a_runtime():
    import ast
    assert len(SCRIPTS) >= 10  # the figure scripts and reproduce.py
    hits = [f"{p.name}: {line.strip()}" for p in SCRIPTS if p.name not in RUNTIME_ALLOWED_IN
            for line in (ast.get_docstring(ast.parse(p.read_text(encoding="utf-8")), clean=False) or "").splitlines()
            if RUNTIME.search(line)]
    assert not hits, "the figure table (from figures/claims.json) gives each figure's time:\n" + "\n".join(hits)


def test_the_runtime_pattern_finds_the_old_sentences():
    for text in ("Runtime: about 2 min on a 2-core CPU.", "(~12 s)", "takes 3 minutes", "First a 6-second check",
                 "(--quick: about a minute)", "2.6 min for the main paper's figures"):
        assert RUNTIME.search(text), text
    for text in ("η = 1e-3 for 400 000 steps", "from 5 seeds (inits and Y)", "m=10, n=5, h=50 (750 parameters)",
                 "13 values of s from 0.01 to 1", "(Prop. 13: O(η²) per step)"):
        assert not RUNTIME.search(text), text
