"""repro.experiment's files: the resume cache keyed by the code, the figure's files written as one unit,
read-only and empty output locations refused, the provenance of the checkout, the threads recorded, and
streams that cannot encode the scripts' text."""
from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from repro import experiment as E

from conftest import ROOT

def _probe_script(folder: Path, body: str) -> Path:
    script = folder / "probe_script.py"
    script.write_text("from repro import experiment as E\n" + body)
    return script


def test_the_cache_is_keyed_by_the_code_not_only_the_settings(tmp_path):
    import runpy

    body = "calls = []\nresult = E.cached(OUT, 'probe', {'seed': 0}, lambda: calls.append(1) or {'x': VALUE})\n"
    script = _probe_script(tmp_path, body)
    first = runpy.run_path(str(script), init_globals={"OUT": str(tmp_path), "VALUE": 1})
    again = runpy.run_path(str(script), init_globals={"OUT": str(tmp_path), "VALUE": 2})
    assert first["calls"] == [1] and again["calls"] == [] and again["result"] == {"x": 1}  # same code: resumed
    script.write_text(script.read_text() + "# a changed line of the code that computes the numbers\n")
    changed = runpy.run_path(str(script), init_globals={"OUT": str(tmp_path), "VALUE": 2})
    assert changed["calls"] == [1] and changed["result"] == {"x": 2}  # not the stale {'x': 1}


def test_an_unreadable_cache_entry_is_recomputed_with_one_line(tmp_path, capsys):
    E.cached(tmp_path, "probe", {"a": 1}, lambda: {"x": torch.ones(2)})
    (entry,) = (tmp_path / ".cache").glob("probe-*.pt")
    for garbage in (b"", b"not a torch file at all", entry.read_bytes()[:20]):
        entry.write_bytes(garbage)
        result = E.cached(tmp_path, "probe", {"a": 1}, lambda: {"x": torch.zeros(2)})
        assert torch.equal(result["x"], torch.zeros(2))
        err = capsys.readouterr().err
        assert str(entry) in err and err.count("\n") == 1 and "weights_only" not in err
        assert torch.equal(torch.load(entry, weights_only=True)["x"], torch.zeros(2))  # rewritten


class _Figure:
    """A stand-in for a matplotlib figure: writes a few bytes, or fails on one format."""

    def __init__(self, fail_on=None, error=None):
        self.fail_on, self.error = fail_on, error

    def savefig(self, path, format, **kwargs):
        Path(path).write_bytes(f"new {format}".encode())
        if format == self.fail_on:
            raise self.error


def _old_figure(folder: Path, name="probe"):
    for ext in ("pdf", "png", "json"):
        (folder / f"{name}.{ext}").write_text(f"old {ext}")


def test_the_figure_files_are_one_unit(tmp_path):
    import errno

    _old_figure(tmp_path)
    for error in (OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()):
        with pytest.raises(type(error)):
            E.finish(tmp_path, "probe", {"a": 1}, {}, 0.0, _Figure("png", error))
        assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {
            "probe.pdf": "old pdf", "probe.png": "old png", "probe.json": "old json"}  # all old, no temp files
    (tmp_path / ".probe.pdf.abc123.pdf").write_text("left by a SIGKILL")
    payload = E.finish(tmp_path, "probe", {"a": 1}, {}, 0.0, _Figure())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["probe.json", "probe.pdf", "probe.png"]
    on_disk = json.loads((tmp_path / "probe.json").read_text())
    assert on_disk["files"] == payload["files"]
    for ext in ("pdf", "png"):  # the JSON names the other two, with the hash of what is on disk
        assert on_disk["files"][ext]["name"] == f"probe.{ext}"
        assert on_disk["files"][ext]["sha256"] == E.file_sha256(tmp_path / f"probe.{ext}")


def test_read_only_figure_files_are_refused(tmp_path):
    _old_figure(tmp_path)
    (tmp_path / "probe.png").chmod(0o444)
    with pytest.raises(E.OutputLocationError, match=r"--out .*probe.png is read-only \(mode 444\)"):
        E.finish(tmp_path, "probe", {"a": 1}, {}, 0.0, _Figure())
    assert (tmp_path / "probe.pdf").read_text() == "old pdf"
    assert stat.S_IMODE((tmp_path / "probe.png").stat().st_mode) == 0o444
    assert (tmp_path / "probe.png").read_text() == "old png"


def _git(folder, *args):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=folder,
                          capture_output=True, text=True, check=True).stdout.strip()


def test_provenance_names_this_checkout_not_the_enclosing_repository(tmp_path):
    import runpy

    outer = tmp_path / "users_project"
    inner = outer / "vendor" / "symmetry-flat-minima"
    inner.mkdir(parents=True)
    _git(outer, "init", "-q")
    (outer / "notes.txt").write_text("the user's own project")
    _git(outer, "add", "-A")
    _git(outer, "commit", "-qm", "user's commit")
    outer_commit = _git(outer, "rev-parse", "HEAD")
    for f in ("pyproject.toml", "requirements.txt"):
        (inner / f).write_text((ROOT / f).read_text())
    script = _probe_script(inner, "payload = E.finish(OUT, 'probe', {'a': 1}, {}, 0.0)\n")

    def recorded():
        out = tmp_path / "out"
        runpy.run_path(str(script), init_globals={"OUT": str(out)})
        return json.loads((out / "probe.json").read_text())

    # an unpacked copy inside the user's repository: no commit rather than the user's
    env = recorded()["environment"]
    assert env["git_commit"] is None and env["git_commit"] != outer_commit
    # its own checkout: its own commit, clean, then dirty
    _git(inner, "init", "-q")
    _git(inner, "add", "-A")
    _git(inner, "commit", "-qm", "ours")
    payload = recorded()
    assert payload["environment"]["git_commit"] == _git(inner, "rev-parse", "HEAD") != outer_commit
    assert payload["environment"]["git_dirty"] is False
    assert payload["settings_hash"] == E.settings_hash({"a": 1})
    assert payload["environment"]["lock_file"] == {"file": "requirements.txt",
                                                   "sha256": E.file_sha256(inner / "requirements.txt")}
    script.write_text(script.read_text() + "# edited\n")
    assert recorded()["environment"]["git_dirty"] is True


def test_the_json_records_the_threads_of_the_computation():
    before = torch.get_num_threads()
    with E.torch_threads(3):
        with E.torch_threads(1):  # a library call's own context inside the script's
            pass
    assert torch.get_num_threads() == before  # restored after the context, where the JSON is written
    assert E.environment()["torch_threads"] == 3


def test_an_empty_out_is_refused():
    with pytest.raises(E.OutputLocationError, match="an empty path names no directory"):
        E.check_output_location("")
    with pytest.raises(E.OutputLocationError, match="^--out '  ': an empty path"):  # the value given, not ''
        E.check_output_location("  ")


def test_an_ascii_locale_prints_escapes_instead_of_failing(monkeypatch):
    """LC_ALL=C without Python's UTF-8 mode gives ASCII streams: the scripts' text (Δ, ≤, θ) is escaped."""
    import io

    raw = io.BytesIO()
    ascii_out = io.TextIOWrapper(raw, encoding="ascii")
    monkeypatch.setattr(sys, "stdout", ascii_out)
    with pytest.raises(UnicodeEncodeError):
        print("ΔQ ≤ 1e-6", flush=True)
    E.printable_streams()
    print("ΔQ ≤ 1e-6", flush=True)
    assert raw.getvalue().decode("ascii").endswith("\\u0394Q \\u2264 1e-6\n")
