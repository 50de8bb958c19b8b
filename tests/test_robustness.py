"""Bad input and interrupted runs: every library entry, script and data path names what is wrong in one line,
writes nothing half-done, and records where its results came from."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

import symmetry as S
from repro import data as D
from repro import experiment as E

from conftest import DTYPE, ROOT, load_script, randn, two_layer_problem


# ---------------------------------------------------------------- library inputs

def test_gradient_flow_refuses_nan_and_infinite_times():
    params, X, Y = two_layer_problem(3, 4, 4)
    net = S.TwoLayerNet("tanh")
    for times in ([0.0, float("nan")], [0.0, float("inf")]):
        with pytest.raises(ValueError, match="times"):
            S.gradient_flow(net, params, X, Y, times)


def test_learning_rates_and_counts_are_checked():
    params, X, Y = two_layer_problem(3, 4, 4)
    net = S.TwoLayerNet("tanh")
    for lr in (-0.1, 0.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="lr"):
            S.gradient_descent(net, params, X, Y, lr, 3)
        with pytest.raises(ValueError, match="lr"):
            S.gradient_flow(net, params, X, Y, [0.0, 1.0], lr=lr)
    for lr in ("0.1", None, True):
        with pytest.raises(TypeError, match="lr"):
            S.gradient_descent(net, params, X, Y, lr, 3)
    with pytest.raises(ValueError, match="lr"):
        S.gradient_descent(net, tuple(p.expand(2, *p.shape) for p in params), X, Y, torch.tensor([0.1, -0.1]), 3)
    with pytest.raises(TypeError, match="steps"):
        S.gradient_descent(net, params, X, Y, 0.1, True)
    with pytest.raises(TypeError, match="record_every"):
        S.gradient_descent(net, params, X, Y, 0.1, 3, record_every=True)


def test_gradient_flow_fails_fast_on_infinite_time_and_nan_lr():
    """The times and the rate are refused before any step: the model is never evaluated."""

    class Counted(S.TwoLayerNet):
        calls = 0

        def preactivation(self, params, X):
            Counted.calls += 1
            return super().preactivation(params, X)

    params, X, Y = two_layer_problem(3, 4, 4)
    with pytest.raises(ValueError, match="times"):
        S.gradient_flow(Counted("tanh"), params, X, Y, [0.0, math.inf])
    with pytest.raises(ValueError, match="lr"):
        S.gradient_flow(Counted("tanh"), params, X, Y, [0.0, 1.0], lr=math.nan)
    assert Counted.calls == 0
    S.gradient_flow(Counted("tanh"), params, X, Y, [0.0, 0.01])  # the control: a valid call does evaluate it
    assert Counted.calls > 0


def test_conserved_Q_names_mismatched_shapes_dtypes():
    U, V = randn(3, 4), randn(5, 4)
    with pytest.raises(ValueError, match="hidden width"):
        S.conserved_Q((U, randn(5, 3)), "tanh")
    with pytest.raises(ValueError, match="batch shape"):
        S.conserved_Q((U.expand(2, 3, 4), V), "tanh")
    with pytest.raises(TypeError, match=r"params\[1\] has dtype torch.float32"):
        S.conserved_Q((U, V.float()), "tanh")
    with pytest.raises(ValueError, match="must be"):
        S.conserved_Q((randn(4), V), "tanh")


def test_nonlinear_action_refuses_a_nan_group_element():
    params, _, _ = two_layer_problem(3, 4, 4)
    g = torch.eye(4, dtype=DTYPE)
    g[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"^g \(shape \(4, 4\)\) contains NaN"):
        S.nonlinear_action(g, params, None, "tanh")
    with pytest.raises(TypeError, match="g .*dtype"):
        S.nonlinear_action(torch.eye(4, dtype=torch.float32), params, None, "tanh")


def test_unbatched_divergence_names_the_run():
    params, X, Y = two_layer_problem(3, 4, 4, std=3.0)
    with pytest.raises(S.DivergenceError) as error:
        S.gradient_descent(S.TwoLayerNet("identity"), params, X, Y * 100, 50.0, 200)
    message = str(error.value)
    assert "()" not in message and "the run" in message and "lr" in message


# ---------------------------------------------------------------- the resume cache

def test_reproduce_has_no_resume_and_passes_it_on(tmp_path, monkeypatch):
    reproduce = load_script("reproduce")
    seen = []
    fake = type(sys)("fake_figure")
    fake.main = lambda argv: seen.append(argv) or {"figure": "Q_distribution"}
    monkeypatch.setitem(sys.modules, "Q_distribution", fake)
    monkeypatch.setattr(reproduce, "collect_claims", lambda name, payload: [])
    monkeypatch.setattr(reproduce, "run", lambda cfg: [{"activation": "tanh", "Q0": 0.0, "gf_drift": 0.0, "loss_start": 1.0,
                                                        "loss_end": 0.5, "gd_drift_lr0.1": 2e-3, "gd_drift_lr0.01": 1e-4}])
    assert reproduce.main(["--no-resume", "--jobs", "1", "--out", str(tmp_path), "--only", "Q_distribution"]) == 0
    assert seen and "--no-resume" in seen[0]


# ---------------------------------------------------------------- outputs

def test_quick_writes_to_its_own_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "figures").mkdir()
    load_script("Q_distribution").main(["--quick"])
    assert (tmp_path / "figures" / "quick" / "Q_distribution.json").exists()
    assert not (tmp_path / "figures" / "Q_distribution.json").exists()


def test_reproduce_quick_heading(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    reproduce = load_script("reproduce")
    monkeypatch.setattr(reproduce, "run", lambda cfg: [{"activation": "tanh", "Q0": 0.0, "gf_drift": 0.0, "loss_start": 1.0,
                                                        "loss_end": 0.5, "gd_drift_lr0.1": 2e-3, "gd_drift_lr0.01": 1e-4}])
    assert reproduce.main(["--quick", "--only", "Q_distribution"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "figures" / "quick" / "Q_distribution.json").exists()
    assert not (tmp_path / "figures" / "Q_distribution.json").exists()
    heading, table = out.index("QUICK MODE"), out.index("holds  measured")
    assert heading < table  # the claim table is headed as quick-mode numbers


# ---------------------------------------------------------------- output locations, before computing

SCRIPTS = ["Q_dynamics_elementwise", "Q_distribution", "Q_convergence_elementwise", "Q_convergence_radial",
           "Q_sharpness_1d", "Q_hessian_eigenvalues", "noether_dynamics", "conservation_laws", "conservation_modern"]


def _bad_locations(tmp_path: Path, name: str) -> dict[str, tuple[Path, str]]:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    (read_only / f"{name}.json").write_text("{}")
    (read_only / f"{name}.json").chmod(0o444)
    return {"existing file": (a_file, "is an existing file"), "below a file": (a_file / "sub", "is a file"),
            "unwritable dir": (locked, "not writable"), "read-only target": (read_only, "is read-only")}


@pytest.mark.parametrize("name", SCRIPTS + ["reproduce"])
def test_out_is_checked_before_any_computation(name, tmp_path, monkeypatch):
    module = load_script(name)
    started = []
    monkeypatch.setattr(E, "Stopwatch", lambda: started.append(1))  # every script's computation starts here
    if name == "reproduce":
        monkeypatch.setattr(module, "run", lambda cfg: started.append(1))
    target = "Q_distribution" if name == "reproduce" else name
    for case, (out, problem) in _bad_locations(tmp_path, target).items():
        extra = ["--only", "Q_distribution"] if name == "reproduce" else []
        with pytest.raises(E.OutputLocationError, match=rf"^--out {out}: .*{problem}"):
            module.main(["--quick", "--out", str(out), *extra])
        assert not started, case


def _run(args, cwd=ROOT):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_out_errors_are_one_line_with_exit_2(tmp_path):
    (tmp_path / "a_file").write_text("x")
    for script in ("Q_sharpness_1d.py", "reproduce.py"):
        done = _run([str(ROOT / script), "--out", str(tmp_path / "a_file")])
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().count("\n") == 0 and "--out" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("name", ["reproduce", "conservation_under_optimizers", "conservation_modern"])
def test_data_is_checked_before_any_computation(name, tmp_path, monkeypatch):
    module = load_script(name)
    started = []
    monkeypatch.setattr(E, "Stopwatch", lambda: started.append(1))  # every script's computation starts here
    if name == "reproduce":
        monkeypatch.setattr(module, "run", lambda cfg: started.append(1))
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "cycle_a").symlink_to(tmp_path / "cycle_b")
    (tmp_path / "cycle_b").symlink_to(tmp_path / "cycle_a")
    extra = ["--only", "conservation_under_optimizers"] if name == "reproduce" else []
    for data, problem in ((str(tmp_path / "missing"), "does not exist"), (str(tmp_path / "dangling"), "leads nowhere"),
                          (str(tmp_path / "cycle_a"), "a cycle"), ("", "an empty path")):
        shown = data or "''"
        with pytest.raises(E.DataLocationError, match=rf"^--data {re.escape(shown)}: .*{problem}.*ImageFolder.*"
                                                      r"\.tar\.gz.*cifar-10-batches-py"):
            module.main(["--quick", "--out", str(tmp_path / "out"), "--data", data, *extra])
        assert not started, data


def test_data_errors_are_one_line_with_exit_2_and_nothing_written(tmp_path):
    done = _run([str(ROOT / "reproduce.py"), "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "out")])
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: --data {tmp_path / 'missing'}: does not exist")
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()  # refused before --out was even created


# ---------------------------------------------------------------- one line, not a traceback

def test_overflowing_seed_is_an_argument_error():
    done = _run([str(ROOT / "Q_distribution.py"), "--seed", "99999999999999999999999"])
    assert done.returncode == 2 and "Traceback" not in done.stderr and "--seed" in done.stderr


@pytest.mark.parametrize("error, status, words", [
    (KeyboardInterrupt(), 130, "interrupted"),
    (S.DivergenceError("loss became nan at step 3 for configuration(s) tanh"), 1, "lower the learning rate"),
    (OSError(28, "No space left on device", "figures/x.png"), 1, "disk full"),
    (D.DatasetUnavailable("could not load 'kmnist' ... offline"), 1, "offline"),
])
def test_expected_failures_end_in_one_line(error, status, words, monkeypatch, capsys):
    def main():
        raise error

    monkeypatch.setattr(sys, "argv", ["reproduce.py"])
    with pytest.raises(SystemExit) as exit_:
        E.run_script(main)
    assert exit_.value.code == status
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and words in err
    monkeypatch.setattr(sys, "argv", ["reproduce.py", "--debug"])
    with pytest.raises(type(error)):
        E.run_script(main)


def test_reproduce_turns_a_divergence_into_one_line(tmp_path):
    script = tmp_path / "diverge.py"
    script.write_text("import sys; sys.path.insert(0, %r)\n" % str(ROOT)
                      + "import reproduce, symmetry as S\n"
                      + "def boom(cfg): raise S.DivergenceError('loss became nan at step 7 for configuration(s) relu')\n"
                      + "reproduce.run = boom\n"
                      + "sys.argv = ['reproduce.py', '--out', %r]\n" % str(tmp_path / "out")
                      + "reproduce.E.run_script(reproduce.main)\n")
    done = _run([str(script)])
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: loss became nan at step 7") and done.stderr.count("\n") == 1


# ---------------------------------------------------------------- data

def _image(path: Path, size=(32, 32), seed=0):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    array = torch.randint(0, 256, (size[1], size[0], 3), generator=torch.Generator().manual_seed(seed),
                          dtype=torch.uint8)
    Image.fromarray(array.numpy()).save(path)


def _tree(root: Path, train=("cat", "dog"), test=("cat", "dog"), per_class=2):
    for split, classes in (("train", train), ("test", test)):
        for c in classes:
            for i in range(per_class):
                _image(root / split / c / f"{i}.png", seed=hash((split, c, i)) % 1000)
    return root


def test_one_class_list_for_both_splits(tmp_path):
    root = _tree(tmp_path / "cifar", train=("bird", "cat", "dog"))
    (root / "test" / "bird").mkdir()  # an empty class folder in one split only (the test split: a class
    data = D.load_cifar10(root, cache=False)  # with no training images is refused, see test_data.py)
    assert data["classes"] == ["bird", "cat", "dog"]
    assert data["train_y"].tolist() == [0, 0, 1, 1, 2, 2] and data["test_y"].tolist() == [1, 1, 2, 2]
    assert data["train_classes"] == data["test_classes"] == data["classes"]


def test_cache_sees_a_new_image(tmp_path):
    root = _tree(tmp_path / "cifar", per_class=1)
    assert len(D.load_cifar10(root)["train_y"]) == 2
    _image(root / "train" / "cat" / "new.png", seed=9)
    assert len(D.load_cifar10(root)["train_y"]) == 3  # not a stale 2 from the cache
    assert len(list((root / ".cache").glob("cifar10-folder-*.pt"))) == 1  # the stale entry is replaced


def test_read_only_root_caches_in_the_user_cache_dir(tmp_path, monkeypatch, capsys):
    root = _tree(tmp_path / "cifar", per_class=1)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    root.chmod(0o555)
    try:
        data = D.load_cifar10(root)
        assert not (root / ".cache").exists()
        assert list((tmp_path / "user-cache" / "symmetry").rglob("cifar10-folder-*.pt"))
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "read-only" in err and str(tmp_path / "user-cache") in err
        assert torch.equal(D.load_cifar10(root)["train_x"], data["train_x"])
    finally:
        root.chmod(0o755)


def test_broken_archive_names_itself_and_leaves_nothing(tmp_path):
    archive = tmp_path / "cifar10-jpeg.tar.gz"
    archive.write_bytes(b"\x1f\x8b\x08\x00 certainly not a whole gzip stream")
    with pytest.raises(D.DataError, match=f"{archive}.*download it again"):
        D.load_cifar10(archive, extract_to=tmp_path / "work")
    assert list((tmp_path / "work").iterdir()) == []  # no .extract-* left behind


def test_a_bad_image_names_its_file(tmp_path):
    root = _tree(tmp_path / "cifar", per_class=1)
    _image(root / "test" / "dog" / "big.png", size=(40, 30))
    with pytest.raises(D.DataError, match=r"big\.png.*40x30.*32x32"):
        D.load_cifar10(root, cache=False)
    (root / "test" / "dog" / "big.png").unlink()
    (root / "train" / "cat" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(D.DataError, match=r"broken\.png"):
        D.load_cifar10(root, cache=False)


def test_data_defaults_to_data_inside_the_repository():
    import inspect

    assert D.default_data_root() == ROOT / "data"
    for function in (D.load_cifar10, D.load_image_dataset):
        default = inspect.signature(function).parameters["root"].default
        assert default is None  # resolved to default_data_root(), never a path outside the repository
    for notebook in ("ensemble_CIFAR.ipynb", "adversarial_CIFAR.ipynb"):
        source = json.loads((ROOT / notebook).read_text())
        text = "".join("".join(c["source"]) for c in source["cells"])
        assert "shared/data" not in text and 'DATA = "data/"' in text


def test_missing_default_data_is_downloaded_by_torchvision(tmp_path, monkeypatch):
    calls = []

    class FakeCIFAR10:
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            self.data = torch.zeros(3 if train else 2, 32, 32, 3, dtype=torch.uint8).numpy()
            self.targets = [0, 1, 0][: len(self.data)]
            self.classes = ["airplane", "automobile"]
            (Path(root) / "cifar-10-batches-py").mkdir(parents=True, exist_ok=True)

    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    monkeypatch.setattr(D, "default_data_root", lambda: tmp_path / "data")
    data = D.load_cifar10(cache=False)
    assert calls and all(download for _, _, download in calls) and calls[0][0] == str(tmp_path / "data")
    assert data["train_x"].shape == (3, 3, 32, 32)


def test_offline_missing_data_says_what_to_pass(tmp_path, monkeypatch):
    import urllib.error

    class Offline:
        def __init__(self, root, train, download):
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", Offline)
    monkeypatch.setattr(D, "default_data_root", lambda: tmp_path / "data")
    with pytest.raises(D.DatasetUnavailable) as error:
        D.load_cifar10()
    message = str(error.value)
    for words in ("ImageFolder", ".tar.gz", "cifar-10-batches-py", "load_cifar10(", "offline"):
        assert words in message, words


def test_notebooks_say_to_set_DATA():
    for notebook in ("ensemble_CIFAR.ipynb", "adversarial_CIFAR.ipynb"):
        cells = json.loads((ROOT / notebook).read_text())["cells"]
        loading = next("".join(c["source"]) for c in cells if "load_cifar10(DATA)" in "".join(c["source"]))
        assert "except" in loading and "set DATA in the first cell" in loading


# ---------------------------------------------------------------- property: invalid input → ValueError/TypeError

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

NOT_A_NUMBER = st.one_of(st.text(max_size=5), st.none(), st.booleans(), st.complex_numbers(allow_nan=False).filter(
    lambda z: z.imag != 0), st.lists(st.text(max_size=2), max_size=2), st.dictionaries(st.text(max_size=2), st.integers()))
BAD_RATE = st.one_of(NOT_A_NUMBER, st.floats(max_value=0.0), st.just(math.nan), st.just(math.inf),
                     st.integers(max_value=0))
BAD_COUNT = st.one_of(NOT_A_NUMBER.filter(lambda v: not isinstance(v, list)), st.integers(max_value=-1),
                      st.floats(allow_nan=True))
BAD_TIMES = st.one_of(
    st.just([]), st.text(min_size=1, max_size=3), st.none(),
    st.lists(st.floats(min_value=0, max_value=10), min_size=1, max_size=4).map(lambda t: t + [math.nan]),
    st.lists(st.floats(min_value=0, max_value=10), min_size=1, max_size=4).map(lambda t: t + [math.inf]),
    st.lists(st.floats(max_value=-1e-3, allow_nan=False, allow_infinity=False), min_size=1, max_size=4),
    st.floats(min_value=1e-3, max_value=10).map(lambda t: [t, t / 2]),
    st.lists(NOT_A_NUMBER.filter(lambda v: v is not None and not isinstance(v, (bool, list, dict))), min_size=1, max_size=3))
BAD_PARAMS = st.one_of(
    NOT_A_NUMBER, st.integers(0, 5).map(lambda k: tuple(torch.zeros(3, 4, dtype=DTYPE) for _ in range(k)) if k != 2 else 0),
    st.sampled_from([(randn(3, 4), randn(5, 3)), (randn(3, 4), randn(5, 4).float()), (randn(4), randn(5, 4)),
                     (randn(2, 3, 4), randn(5, 4)), (randn(3, 4), randn(5, 4).int()),
                     (randn(3, 4) * math.nan, randn(5, 4)), [randn(3, 4).numpy(), randn(5, 4)]]))
INVALID = (ValueError, TypeError)
PROBLEM = two_layer_problem(3, 4, 4)


def _raises_only_value_or_type_error(call):
    try:
        call()
    except INVALID:
        return
    except Exception as error:  # anything else is a raw error leaking out of the library
        pytest.fail(f"{type(error).__name__}: {error}")
    pytest.fail("an invalid argument was accepted")


PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(lr=BAD_RATE)
def test_property_bad_learning_rates(lr):
    (params, X, Y), net = PROBLEM, S.TwoLayerNet("tanh")
    _raises_only_value_or_type_error(lambda: S.gradient_descent(net, params, X, Y, lr, 2))
    _raises_only_value_or_type_error(lambda: S.gradient_flow(net, params, X, Y, [0.0, 0.1], lr=lr))


@PROPERTY
@given(count=BAD_COUNT, which=st.sampled_from(["steps", "record_every"]))
def test_property_bad_counts(count, which):
    (params, X, Y), net = PROBLEM, S.TwoLayerNet("tanh")
    kwargs = {"steps": 2, "record_every": 1, which: count}
    _raises_only_value_or_type_error(lambda: S.gradient_descent(net, params, X, Y, 0.1, kwargs["steps"],
                                                                record_every=kwargs["record_every"]))


@PROPERTY
@given(times=BAD_TIMES)
def test_property_bad_times(times):
    (params, X, Y), net = PROBLEM, S.TwoLayerNet("tanh")
    _raises_only_value_or_type_error(lambda: S.gradient_flow(net, params, X, Y, times))


@PROPERTY
@given(params=BAD_PARAMS, activation=st.one_of(st.sampled_from(["tanh", "relu"]), st.text(max_size=4).filter(
    lambda a: a not in S.ACTIVATIONS)))
def test_property_bad_parameters_and_names(params, activation):
    _raises_only_value_or_type_error(lambda: S.conserved_Q(params, activation))
    _raises_only_value_or_type_error(lambda: S.imbalance_matrix(params))
    _raises_only_value_or_type_error(lambda: S.gradient_descent(S.TwoLayerNet("tanh"), params, None,
                                                                PROBLEM[2], 0.1, 1))


@PROPERTY
@given(g=st.one_of(NOT_A_NUMBER, st.sampled_from([torch.full((4, 4), math.nan, dtype=DTYPE), torch.eye(3, dtype=DTYPE),
                                                   torch.eye(4), torch.ones(4, 4, dtype=torch.int64),
                                                   torch.eye(4, dtype=DTYPE) * math.inf, torch.ones(4, dtype=DTYPE)])))
def test_property_bad_group_elements(g):
    params = PROBLEM[0]
    _raises_only_value_or_type_error(lambda: S.nonlinear_action(g, params, None, "tanh"))
    _raises_only_value_or_type_error(lambda: S.linear_action(g, params))


@PROPERTY
@given(source=st.text(max_size=6).filter(lambda s: s not in D.SOURCES), name=st.text(max_size=6).filter(
    lambda s: s not in D.IMAGE_DATASETS))
def test_property_bad_names_in_data(source, name, tmp_path_factory):
    _raises_only_value_or_type_error(lambda: D.load_cifar10(tmp_path_factory.getbasetemp(), source=source))
    _raises_only_value_or_type_error(lambda: D.load_image_dataset(name))


def test_sigint_during_a_run_is_one_line(tmp_path):
    import signal
    import time

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = tmp_path / "out"
    # Ctrl-C's default disposition in the child: a shell's background job (`pytest &`) ignores SIGINT, its
    # children inherit that, and Python then keeps ignoring it (the run went on to its end: rc 0)
    process = subprocess.Popen([sys.executable, str(ROOT / "Q_convergence_radial.py"), "--out", str(out)],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while not out.exists() and time.monotonic() < deadline:  # created once --out is checked: the run starts
        time.sleep(0.1)
    time.sleep(1.5)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    lines = [line for line in err.splitlines() if line.startswith("error")]
    said = "\n".join(line for line in err.splitlines() if "it/s" not in line)  # all but the progress bars
    assert process.returncode == 130 and "Traceback" not in err, said[-3000:]
    assert len(lines) == 1 and "interrupted" in lines[0] and "rerun" in lines[0]
    assert sorted(p.name for p in out.iterdir() if p.name != ".lock") in ([], [".cache"])  # nothing half-written


# ---------------------------------------------------------------- data and parameters of the wrong kind

def test_hessian_top_k_leaves_batchnorm_statistics_as_found():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.ReLU(),
                                torch.nn.Linear(4, 1)).double()
    X, Y = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 1, dtype=torch.float64)
    before = {n: b.clone() for n, b in model.named_buffers()}
    pairs = S.hessian_top_k(model, torch.nn.functional.mse_loss, (X, Y), k=2)
    assert pairs.values.numel() == 2 and model.training
    for n, b in model.named_buffers():
        assert torch.equal(b, before[n]), n
    with torch.no_grad():  # the control: one plain forward in training mode does move them
        model(X)
    assert not torch.equal(model[1].running_mean, before["1.running_mean"])


def test_empty_or_non_finite_data_is_named_before_any_step():
    params, X, Y = two_layer_problem(5, 3, 2, k=4)  # X (n, k): samples are columns
    net = S.TwoLayerNet("relu")
    bad_Y = Y.clone()
    bad_Y[0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"Y \(shape .*\) contains infinity: a problem of the data"):
        S.gradient_descent(net, params, X, bad_Y, 0.1, 3)
    with pytest.raises(ValueError, match="X holds no samples"):
        S.gradient_descent(net, params, X[:, :0], Y[:, :0], 0.1, 3)
    with pytest.raises(ValueError, match="a problem of the data"):
        S.gradient_flow(net, params, X, bad_Y, [0.0, 1.0])


def test_integer_dtypes_and_zero_width_layers_get_one_named_error():
    from symmetry import laws as L

    with pytest.raises(TypeError, match="dtype must be a floating-point torch.dtype"):
        S.gaussian_init(2, 3, 4, dtype=torch.int64)
    with pytest.raises(TypeError, match="dtype must be a floating-point torch.dtype"):
        S.xavier_init(2, 3, 4, dtype=torch.int64)
    with pytest.warns(UserWarning, match="zero-element"):  # torch's own, at construction
        zero = torch.nn.Sequential(torch.nn.Linear(3, 0), torch.nn.ReLU(), torch.nn.Linear(0, 2))
    with pytest.raises(S.NotSupportedError, match=r"layer 0 .*zero-width layer"):
        L.count_conservation_laws(zero)
    with pytest.raises(ValueError, match="has no entries"):
        S.module_symmetries(zero)


def test_float32_data_with_float64_parameters_is_promoted_the_reverse_refused():
    params, X, Y = two_layer_problem(5, 3, 2, k=4)  # float64
    net = S.TwoLayerNet("tanh")
    exact = S.gradient_descent(net, params, X, Y, 0.1, 3)
    promoted = S.gradient_descent(net, params, X.float().double(), Y.float(), 0.1, 3)  # Y float32 → float64
    assert promoted.loss.dtype == torch.float64 and torch.isfinite(promoted.loss).all()
    assert exact.loss.shape == promoted.loss.shape
    # X float32 too : the two-layer stepper steps on its own copy of the data, promoted
    both = S.gradient_descent(net, params, X.float(), Y.float(), 0.1, 3)
    assert torch.equal(both.loss, S.gradient_descent(net, params, X.float().double(), Y.float().double(), 0.1, 3).loss)
    with pytest.raises(TypeError, match="X has dtype torch.int64 but the parameters are torch.float64"):
        S.gradient_descent(net, params, X.long(), Y, 0.1, 3)  # integer data: named, not torch's matmul error
    low = tuple(p.float() for p in params)
    with pytest.raises(TypeError, match="X has dtype torch.float64 but params have torch.float32"):
        S.gradient_descent(net, low, X, Y.float(), 0.1, 3)


def test_sigterm_stops_the_workers_and_says_so_in_one_line(tmp_path):
    import signal
    import time

    out = tmp_path / "out"
    command = [sys.executable, str(ROOT / "reproduce.py"), "--quick", "--jobs", "2", "--out", str(out),
               "--only", "Q_distribution", "Q_sharpness_1d", "--no-resume"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and not list((out / ".logs").glob("*.log")):
        time.sleep(0.2)  # the workers have started once their logs exist
    assert list((out / ".logs").glob("*.log")), "no worker started"
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("error: interrupted by SIGTERM; workers stopped"), err[-500:]
    assert "Traceback" not in err
    deadline = time.time() + 20
    while time.time() < deadline:  # nothing of the run is left: no worker, no resource tracker
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("processes of the run are still alive after it exited")
    assert not list(out.glob("*.json")) or all(p.stat().st_size > 0 for p in out.glob("*.json"))


def _hold_in_another_process(out):
    """A process that holds OUT's lock (a first run), started and waited for until it holds it."""
    code = ("import sys, time; from repro import experiment as E; E.hold_output(sys.argv[1]); "
            "print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_run_on_the_same_out_is_refused_and_cleanup_spares_live_writers(tmp_path):
    reproduce, script = load_script("reproduce"), load_script("Q_sharpness_1d")
    holder = _hold_in_another_process(tmp_path)
    try:
        for run in (lambda: reproduce.main(["--quick", "--out", str(tmp_path), "--only", "Q_sharpness_1d", "--jobs", "1"]),
                    lambda: script.main(["--quick", "--out", str(tmp_path)])):  # a figure script run alone too
            with pytest.raises(E.OutputLocationError, match=rf"another run \(pid {holder.pid}\) is writing there"):
                run()
    finally:
        holder.kill()
        holder.wait()
    with E.OutputLock(tmp_path):  # released when the first run ends
        pass
    live = tmp_path / f".Q_sharpness_1d.json.{os.getpid()}-abc.json"  # a running writer's temporary file
    dead = tmp_path / ".Q_sharpness_1d.json.999999999-abc.json"  # a killed one's
    legacy = tmp_path / ".Q_sharpness_1d.json.xyz.json"
    for p in (live, dead, legacy):
        p.write_text("{}")
    E.write_figure(tmp_path, "Q_sharpness_1d", {"figure": "Q_sharpness_1d"})
    assert live.exists() and not dead.exists() and not legacy.exists()


def test_a_figure_script_run_alone_holds_its_out_for_its_lifetime(tmp_path):
    """A script's own run takes OUT's lock (reentrant in its process), so a second process on that --out is refused;
    reproduce.py's workers run under their parent's lock (test_reproduce runs --jobs 2)."""
    load_script("Q_distribution").main(["--quick", "--out", str(tmp_path)])
    load_script("Q_distribution").main(["--quick", "--out", str(tmp_path)])  # the same process again: reentrant
    code = "import sys; from repro import experiment as E; E.hold_output(sys.argv[1])"
    second = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert second.returncode != 0 and f"another run (pid {os.getpid()}) is writing there" in second.stderr


def test_quick_never_replaces_another_checkouts_committed_figures(tmp_path, capsys):
    other = tmp_path / "other_clone"
    (other / "figures").mkdir(parents=True)
    (other / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    committed = other / "figures" / "Q_sharpness_1d.json"
    committed.write_text('{"figure": "Q_sharpness_1d", "settings": {"quick": false}}')
    script = load_script("Q_sharpness_1d")
    script.main(["--quick", "--out", str(other / "figures")])
    assert committed.read_text() == '{"figure": "Q_sharpness_1d", "settings": {"quick": false}}'
    assert json.loads((other / "figures" / "quick" / "Q_sharpness_1d.json").read_text())["settings"]["quick"]
    assert "holds a checkout's committed figures" in capsys.readouterr().err
    plain = tmp_path / "figures"  # a folder named figures outside any checkout is taken as given
    script.main(["--quick", "--out", str(plain)])
    assert (plain / "Q_sharpness_1d.json").exists()


def test_numba_without_a_writable_cache_compiles_without_one(monkeypatch, capsys):
    import types

    from symmetry import kernels as K

    calls = []

    def njit(cache, nogil):
        def decorate(fn):
            calls.append(cache)
            if cache:
                raise RuntimeError(f"cannot cache function {fn.__name__!r}: no locator available for file 'x.py'")
            return fn
        return decorate

    monkeypatch.setitem(sys.modules, "numba", types.SimpleNamespace(njit=njit))

    def kernel(x):
        return x + 1

    compiled = K._njit(kernel)
    assert compiled(1) == 2 and calls == [True, False]
    assert "numba has no writable cache directory" in capsys.readouterr().err


def test_a_module_symmetry_after_double_and_an_ensemble_of_another_width():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))  # GL(4), found in float32
    x = torch.randn(5, 3)
    sym = S.module_symmetries(model, x)
    element = sym.random_element(0.3, torch.Generator().manual_seed(1))
    model.double()
    before = model(x.double())
    sym.act(model, element)  # a float32 element on float64 weights: promoted, exactly
    assert torch.allclose(model(x.double()), before, rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match=r"element\['0'\] has dtype torch.float64 but the parameters"):
        sym.act(model.float(), {k: v.double() for k, v in element.items()})
    from symmetry.ensemble import GroupActionEnsemble

    ensemble = GroupActionEnsemble("relu", mode="random", num_g=3).fit(torch.randn(3, 4, 4))
    with pytest.raises(ValueError, match=r"z must be \(B, h = 4\) pre-activations"):
        ensemble(torch.randn(2, 5))


def test_teleport_refuses_integer_parameters_by_name():
    params, X, Y = two_layer_problem(3, 4, 2, k=5)
    net = S.TwoLayerNet("identity")
    integer = (params[0].round().long(), params[1])
    with pytest.raises(TypeError, match=r"params\[0\] must be a floating-point tensor, got dtype torch.int64"):
        S.teleport_to(net, integer, (X, Y), "gl")


# ---------------------------------------------------------------- seeds, threads and wrong inputs of the module tools

@pytest.mark.parametrize("name", ["Q_dynamics_elementwise", "Q_distribution", "Q_convergence_elementwise",
                                  "Q_convergence_radial", "Q_sharpness_1d", "Q_hessian_eigenvalues", "noether_dynamics",
                                  "conservation_laws", "conservation_under_optimizers", "teleportation",
                                  "conservation_modern"])
def test_quick_keeps_the_seed_the_json_records(name):
    import dataclasses

    script = load_script(name)
    if not hasattr(script, "quick"):
        pytest.skip(f"{name} has no quick(cfg)")
    cfg = dataclasses.replace(script.Settings(), seed=5)
    # before: Q_sharpness_1d --quick --seed 1 recorded seed 0 in its JSON (quick() dropped the seed)
    assert script.quick(cfg).seed == 5


def test_wrong_inputs_of_module_symmetries_and_the_ensemble_are_named():
    from symmetry.ensemble import GroupActionEnsemble

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    # before: torch's "mat1 and mat2 shapes cannot be multiplied" under torch.fx's notes (tlparse, graph nodes)
    with pytest.raises(ValueError, match=r"^Sequential cannot run on example_input \(5, 7\): mat1 and mat2 shapes "
                                         r"cannot be multiplied \(5x7 and 3x4\); pass one batch the model takes$"):
        S.module_symmetries(model, torch.randn(5, 7))
    sym = S.module_symmetries(model, torch.randn(5, 3))
    wider = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
    with pytest.raises(ValueError, match=r"model\['0.weight'\] has shape \(6, 3\) but is \(4, 3\) in the Sequential"):
        sym.quantities(wider)  # before: torch's setStorage error from a strided read of another model's weights
    ensemble = GroupActionEnsemble("tanh", num_g=3).fit(torch.randn(3, 6, 6))  # float32
    z = torch.randn(5, 6, dtype=torch.float64)
    g, pi = ensemble.g.double(), ensemble.pi.double()  # float64 input: computed in float64 (exact promotion)
    assert torch.equal(ensemble(z), torch.tanh(z.unsqueeze(0) @ g.mT) @ pi.mT)
    with pytest.raises(TypeError, match="z must be floating-point"):
        ensemble(torch.ones(5, 6, dtype=torch.int64))


def test_hessian_top_k_names_empty_or_non_finite_data():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    X, Y = torch.randn(16, 3), torch.randn(16, 1)
    mse = torch.nn.functional.mse_loss
    with pytest.raises(ValueError, match="X holds no samples"):  # before: eigenvalues [0, 0] of a NaN loss
        S.hessian_top_k(model, mse, (X[:0], Y[:0]), k=2)
    bad = X.clone()
    bad[0, 0] = math.nan
    with pytest.raises(ValueError, match=r"X \(shape \(16, 3\)\) contains NaN"):  # before: linalg.eigh failed
        S.hessian_top_k(model, mse, (bad, Y), k=2)
    with pytest.raises(ValueError, match="contains NaN"):  # one bad batch among several
        S.hessian_top_k(model, mse, [(X, Y), (bad, Y)], k=2)
    assert S.hessian_top_k(model, mse, [(X[:8], Y[:8]), (X[8:], Y[8:])], k=2).values.numel() == 2


def test_a_cifar_script_run_alone_says_data_as_its_command_line_takes_it(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError) as error:
        D.load_cifar10(tmp_path, download=False)
    monkeypatch.setattr(sys, "argv", ["conservation_under_optimizers.py", "--quick", "--data", str(tmp_path)])
    status, line = E.explain(error.value)
    # before: load_cifar10's Python advice (load_cifar10('path/to/cifar10'), "or pass download=True") on a command line
    assert status == 1 and "\n" not in line
    assert "Give conservation_under_optimizers.py the data with --data PATH" in line
    assert "load_cifar10(" not in line and "download=True" not in line
    assert line.endswith(f"or put one of them in {tmp_path}")


def test_teleportation_computes_with_the_threads_its_json_records(tmp_path, monkeypatch):
    script = load_script("teleportation")
    seen = []

    def probe(cfg):
        seen.append(torch.get_num_threads())
        raise KeyboardInterrupt  # stop before any computation

    monkeypatch.setattr(script, "mnist_problem", probe)
    with pytest.raises(KeyboardInterrupt):
        script.main(["--quick", "--threads", "3", "--out", str(tmp_path)])
    # before: run() forced one thread inside, while the JSON recorded --threads 3
    assert seen == [3] and E.computation_threads() == 3
