"""symmetry.experiment: what a figure script's cache and output rest on (issue 38 cases; the earlier rounds' cases
are in test_robustness.py)."""
from symmetry import experiment as E


def test_issue38_case1_a_process_running_older_code_stores_no_cache_entry(tmp_path, monkeypatch, capsys):
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
