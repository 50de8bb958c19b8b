"""repro.jobs: a figure job in a worker (a stop mid-write unwinds it and leaves no temporary file; jobs
of one process run one at a time, each with its own log) and the Dask executor's one-thread rule."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT

_PROBE = '''
import os, signal
from pathlib import Path
from repro import experiment as E

def main(argv):
    out = Path(argv[0])
    def write(tmp):  # the parent's terminate() arrives while the figure is being written
        Path(tmp).write_text("half a figure")
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the job")
    E._write_unit([(out / "probe.pdf", write), (out / "probe.json", lambda tmp: Path(tmp).write_text("{}"))])
'''


def test_a_worker_stopped_mid_write_unwinds_and_leaves_no_temporary_file(tmp_path):
    (tmp_path / "sigterm_probe.py").write_text(_PROBE, encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    # a local worker's job, in its main thread: the stop unwinds it (KeyboardInterrupt out of the job)
    code = ("import sys, signal; sys.path[:0] = sys.argv[1:3]; from repro import jobs\n"
            "try:\n    jobs.figure_job('sigterm_probe', None, [sys.argv[3]], 1, sys.argv[4])\n"
            "except KeyboardInterrupt as stop:\n    open(sys.argv[5], 'w').write(repr(stop.args))\n"
            "assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the worker's own handler back\n")
    reply = tmp_path / "reply.txt"
    worker = subprocess.run([sys.executable, "-c", code, str(ROOT), str(tmp_path), str(out), str(tmp_path / "job.log"),
                             str(reply)], env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert worker.returncode == 0  # not killed by the signal (-15) with its temporary file left in OUT
    assert reply.read_text() == "('SIGTERM', 15)"
    assert sorted(p.name for p in out.iterdir()) == []  # no temporary file, and no half-written target


def test_workers_with_two_threads_are_refused_with_one_line(tmp_path):
    distributed = pytest.importorskip("distributed")
    from repro import jobs as J

    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        with pytest.raises(J.SchedulerError, match=r"runs 2 threads.*--nthreads 1"):
            J.dask_executor(cluster.scheduler_address)


FIGURE_TALKS = '''
import sys, time

def main(argv):
    for i in range(5):
        print(f"{argv[0]} line {i}", flush=True)
        time.sleep(0.05)
    return {"who": argv[0]}
'''


def test_jobs_in_one_process_run_one_at_a_time(tmp_path, monkeypatch):
    """Two threads of one worker process given a figure job each: each log holds its own figure's lines only
    (two redirections of stdout would mix them, and one would write to a closed file)."""
    import threading

    from repro import jobs as J

    (tmp_path / "figure_talks.py").write_text(FIGURE_TALKS)
    monkeypatch.syspath_prepend(str(tmp_path))
    results = {}

    def job(who):
        results[who] = J.figure_job("figure_talks", None, [who], 1, str(tmp_path / f"{who}.log"))

    threads = [threading.Thread(target=job, args=(who,)) for who in ("first", "second")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for who in ("first", "second"):
        assert results[who][0] == "ok", results[who]
        lines = (tmp_path / f"{who}.log").read_text().splitlines()
        assert lines == [f"{who} line {i}" for i in range(5)]
