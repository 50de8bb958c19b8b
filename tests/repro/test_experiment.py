"""repro.experiment: what the figure scripts share (the CLI, outputs and caching are also exercised through the
scripts in test_robustness.py)."""
import shutil

import symmetry as S
from repro import experiment as E


def test_the_code_hash_covers_the_library_as_well_as_the_machinery(tmp_path, monkeypatch):
    # a cached result must be recomputed when the library that computed it changes, not only the machinery
    library = tmp_path / "symmetry"
    shutil.copytree(S.__path__[0], library, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(S, "__file__", str(library / "__init__.py"))
    before = E.code_hash()
    assert E.code_hash() == before  # a pure function of the sources
    with open(library / "conserved.py", "a", encoding="utf-8") as source:
        source.write("\n# an edit\n")
    assert E.code_hash() != before


def test_the_code_hash_covers_the_calling_script(tmp_path):
    script = tmp_path / "figure.py"
    script.write_text("x = 1\n")
    before = E.code_hash(script)
    assert before != E.code_hash()
    script.write_text("x = 2\n")
    assert E.code_hash(script) != before
