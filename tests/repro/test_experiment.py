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


def test_a_process_running_older_code_stores_no_cache_entry(tmp_path, monkeypatch, capsys):
    """A long-lived process (a notebook, a Dask worker) that imported the package before its source changed: its
    result is not stored under the new code's key (before: it was, and a later run resumed it)."""
    calls = []

    def compute():
        calls.append(1)
        return {"lambda_max": 8.2121}

    monkeypatch.setattr(E, "CODE_AT_IMPORT", "the package as it was imported", raising=False)
    assert E.cached(tmp_path, "probe", {"n": 1}, compute) == {"lambda_max": 8.2121}
    assert not list(tmp_path.rglob("probe-*.pt"))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("not cached: this process imported the package before")
    monkeypatch.setattr(E, "CODE_AT_IMPORT", E.code_hash())  # the code on disk: stored, then read back
    E.cached(tmp_path, "probe", {"n": 1}, compute)
    E.cached(tmp_path, "probe", {"n": 1}, compute)
    assert len(calls) == 2 and len(list(tmp_path.rglob("probe-*.pt"))) == 1
