"""repro.report and reproduce.py --report: the committed pages are what the command writes from the JSONs."""
import json
import shutil

import pytest

from conftest import ROOT, load_script
from repro import report

reproduce = load_script("reproduce")


def test_committed_pages_equal_what_the_report_writes():
    assert report.update_pages(ROOT, write=False) == [], "run `python reproduce.py --report` and commit the pages"


def test_claims_json_rows_equal_the_figures_own_claims():
    """figures/claims.json's rows are each committed figure JSON's claims(payload), not an older run's."""
    committed = json.loads((ROOT / "figures" / "claims.json").read_text(encoding="utf-8"))
    assert reproduce.report_claims(ROOT)["claims"] == committed["claims"]


def test_every_block_on_a_page_names_a_table_and_every_table_is_shown():
    shown = set()
    for page in report.PAGES:
        shown |= {m.group("name") for m in report.BLOCK.finditer((ROOT / page).read_text(encoding="utf-8"))}
    assert shown == set(report.TABLES)


def test_a_changed_json_makes_its_page_stale(tmp_path):
    """Control: the check can fail. A claim that flips in the JSON changes the claim count and the claim table."""
    for page in report.PAGES:
        (tmp_path / page).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / page, tmp_path / page)
    shutil.copytree(ROOT / "figures", tmp_path / "figures", ignore=shutil.ignore_patterns("*.pdf", "*.png", ".*"))
    shutil.copytree(ROOT / "benchmarks" / "results", tmp_path / "benchmarks" / "results")
    for name in report.SCRIPTS + report.NOTEBOOKS:
        for ext in ("py", "ipynb"):
            if (ROOT / f"{name}.{ext}").exists():
                shutil.copy(ROOT / f"{name}.{ext}", tmp_path / f"{name}.{ext}")
    assert report.update_pages(tmp_path, write=False) == []
    claims = json.loads((tmp_path / "figures" / "claims.json").read_text(encoding="utf-8"))
    claims["claims"][0]["holds"] = not claims["claims"][0]["holds"]
    (tmp_path / "figures" / "claims.json").write_text(json.dumps(claims), encoding="utf-8")
    assert set(report.update_pages(tmp_path, write=False)) == {"README.md", "docs/results.md"}
    assert set(report.update_pages(tmp_path)) == {"README.md", "docs/results.md"}
    assert report.update_pages(tmp_path, write=False) == []  # written: current again
    assert "**NO**" in (tmp_path / "docs" / "results.md").read_text(encoding="utf-8").split("\n| Q conserved")[1][:200]


def test_the_headline_counts_this_papers_claims_apart(tmp_path):
    """Issue 35: the README's count separates this paper's rows from the related papers' and the extensions'; a
    flipped teleportation row moves the extensions' count, never this paper's; a figure of no paper is refused."""
    data = json.loads((ROOT / "figures" / "claims.json").read_text(encoding="utf-8"))
    rows, owners = data["claims"], data["claim_figures"]
    (label, names, _), *_ = report.GROUPS
    ours = [r for r, o in zip(rows, owners) if o in names]
    text = report.claim_count(ROOT)
    assert text.startswith(f"**{label}: {report.tally(ours)}**") and f"In all, {report.tally(rows)}" in text
    assert "conservation_check" in owners and "teleportation" in owners
    (tmp_path / "figures").mkdir()
    i = owners.index("teleportation")
    rows[i]["holds"] = not rows[i]["holds"]
    (tmp_path / "figures" / "claims.json").write_text(json.dumps(data), encoding="utf-8")
    flipped = report.claim_count(tmp_path)
    assert flipped != text and flipped.split(";")[0] == text.split(";")[0]
    data["claim_figures"][i] = "nobody"
    (tmp_path / "figures" / "claims.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match="claim rows of nobody belong to no paper"):
        report.claim_count(tmp_path)


def test_an_unknown_table_is_refused_by_name():
    with pytest.raises(ValueError, match="report block 'nope': choose from figures"):
        report.render("nope", ROOT)


def test_a_row_not_measured_is_counted_apart():
    rows = [{"holds": True}, {"holds": False}, {"holds": None}, {"holds": True}]
    assert report.tally(rows) == "2 of 4 claims hold, 1 do not, 1 not measured"
    assert report.tally(rows[:2]) == "1 of 2 claims hold, 1 do not"
    committed = json.loads((ROOT / "figures" / "claims.json").read_text(encoding="utf-8"))["claims"]
    stalled = [r for r in committed if r["measured"].startswith("not measured")]
    assert stalled and all(r["holds"] is None for r in stalled)  # Gluch & Urbanke's ReLU balance under GF


def test_no_claim_is_decided_by_the_clock():
    """A verdict must not move with the machine's load (a wall-clock comparison of 0.1-0.4 s runs flipped between two
    runs of the main job): no row's criterion or claim compares times; a cost is counted in steps."""
    import re

    clock = re.compile(r"wall|seconds|\bms\b|\d\s*s\b|runtime|faster in time", re.I)
    rows = json.loads((ROOT / "figures" / "claims.json").read_text(encoding="utf-8"))["claims"]
    timed = [r["claim"] for r in rows if clock.search(r["criterion"]) or clock.search(r["claim"])]
    assert not timed, timed


def test_two_runs_are_compared_apart_from_the_clock(tmp_path):
    """benchmarks/compare_runs.py: a changed time is not a difference, a changed number or verdict is."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("compare_runs", ROOT / "benchmarks" / "compare_runs.py")
    compare_runs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare_runs)
    row = {"claim": "c", "criterion": "x < 1", "holds": True, "measured": "0.5"}
    for run, seconds, value, holds in (("a", 1.0, 0.5, True), ("b", 2.0, 0.5, True), ("c", 1.0, 0.7, False)):
        (tmp_path / run).mkdir()
        (tmp_path / run / "claims.json").write_text(json.dumps(
            {"claims": [{**row, "holds": holds, "measured": str(value)}], "conservation_check": [],
             "environment": {"git_commit": "abc"}}))
        (tmp_path / run / "fig.json").write_text(json.dumps({"wall_time_s": seconds, "runs": {"x": value, "seconds": seconds}}))
    same = compare_runs.compare(tmp_path / "a", tmp_path / "b")
    assert same["rows_differing"] == [] and same["figure_json_differences_apart_from_the_clock"] == {"fig": []}
    moved = compare_runs.compare(tmp_path / "a", tmp_path / "c")
    assert moved["verdicts_differing"] == 1 and moved["figure_json_differences_apart_from_the_clock"]["fig"] == [
        "/runs/x: 0.5 vs 0.7"]


def test_figure_table_has_one_kind_of_time_per_column_and_the_total(tmp_path):
    """Issue 37: a script's reproduce.py job time and its own run's time never share a column; the last row is the
    wall time of the reproduce.py run that wrote claims.json (— where it recorded none)."""
    shutil.copytree(ROOT / "figures", tmp_path / "figures", ignore=shutil.ignore_patterns("*.pdf", "*.png", ".*"))
    for name in report.SCRIPTS + report.NOTEBOOKS:
        for ext in ("py", "ipynb"):
            if (ROOT / f"{name}.{ext}").exists():
                shutil.copy(ROOT / f"{name}.{ext}", tmp_path / f"{name}.{ext}")
    path = tmp_path / "figures" / "claims.json"
    claims = json.loads(path.read_text(encoding="utf-8"))
    claims["figure_seconds"] = {"Q_distribution": {"seconds": 7.4, "parts": None},
                                "noether_dynamics": {"seconds": 91.0, "parts": {"a": 50.0, "b": 41.0}},
                                "teleportation": {"seconds": 12.0, "parts": None, "from": "elsewhere"}}
    claims.pop("wall_seconds", None)
    path.write_text(json.dumps(claims), encoding="utf-8")
    rows = {line.split(" | ")[0].strip("|` "): line.split(" | ")[2:] for line in report.figure_table(tmp_path).splitlines()[2:]}
    assert rows["Q_distribution.py"] == ["7", "— |"]
    assert rows["noether_dynamics.py"] == ["91 (2 parts)", "— |"]
    own = json.loads((tmp_path / "figures" / "teleportation.json").read_text(encoding="utf-8"))["wall_time_s"]
    assert rows["teleportation.py"] == ["—", f"{own:.0f} |"]  # timed elsewhere: its own run, not a job time
    assert rows["**`reproduce.py`, wall**"] == ["**—**", "— |"]
    claims["wall_seconds"] = 512.3
    path.write_text(json.dumps(claims), encoding="utf-8")
    assert report.figure_table(tmp_path).splitlines()[-1].split(" | ")[2] == "**512**"


def test_benchmark_table_shows_the_main_jobs_wall():
    """bench_reproduce's results of the main job: a row per figure's job, then the main job's and the paper's walls."""
    condition = {"figures_s": {"Q_distribution": 8.0, "teleportation": 40.0}, "wall_s": 300.0, "paper_wall_s": 100.0}
    busy = {"figures_s": {"Q_distribution": 12.0, "teleportation": 60.0}, "wall_s": 450.0, "paper_wall_s": 150.0}
    lines = report.benchmark_table({"quiet": condition, "busy": busy}).splitlines()
    assert lines[2] == "| `Q_distribution` | 8.0 | 12.0 | 1.50 |"
    assert lines[4] == "| **main job, reproduce.py wall** | **300.0** | **450.0** | **1.50** |"
    assert lines[5].startswith("| **paper figures (Figs. 3–9, G.1) alone, reproduce.py wall** | **100.0**")


def test_benchmark_table_marks_a_condition_left_out():
    """A run with --conditions quiet: the busy column reads "—" and a line names what was not measured."""
    condition = {"figures_s": {"Q_distribution": 8.0}, "wall_s": 300.0, "paper_wall_s": 100.0}
    lines = report.benchmark_table({"quiet": condition, "busy": None}).splitlines()
    assert lines[2] == "| `Q_distribution` | 8.0 | — | — |"
    assert lines[3] == "| **main job, reproduce.py wall** | **300.0** | **—** | **—** |"
    assert lines[-1] == "Not measured in this run: one core busy (`--conditions`)."
