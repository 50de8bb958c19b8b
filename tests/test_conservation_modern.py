"""conservation_modern.py --quick on a tiny generated CIFAR-10 ImageFolder: files, claim rows, and checks that do
not rest on the script's own bookkeeping (the η² identity, the translation laws, the controls' first order)."""
import json
import math

import pytest

from conftest import load_script, write_tree


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("modern")
    write_tree(tmp / "cifar", per_class=(4, 1))
    script = load_script("conservation_modern")
    payload = script.main(["--quick", "--out", str(tmp), "--data", str(tmp / "cifar"), "--threads", "1"])
    return script, payload, tmp


@pytest.mark.slow  # reads the --quick figure run (four models trained; quick_run): pytest -m slow
def test_quick_run_writes_its_files_and_claim_rows(quick_run):
    script, payload, tmp = quick_run
    for ext in ("pdf", "png", "json"):
        assert (tmp / f"conservation_modern.{ext}").stat().st_size > 0
    on_disk = json.loads((tmp / "conservation_modern.json").read_text())
    assert on_disk["settings"]["quick"] is True and on_disk["claims"] == payload["claims"]
    assert set(payload["summary"]) == {"resnet", "resnet_bn", "vit", "gpt"}
    rows = script.claims(payload)
    # per model: exponent, laws/controls, skip, the exact per-step identity; translations; Adam, decay; BatchNorm
    assert len(rows) == 4 * 4 + 2 + 2 * 2 + 1
    for row in rows:
        assert set(row) == {"claim", "criterion", "holds", "measured"} and isinstance(row["holds"], bool)
    for name, sizes in ((n, payload["runs"][n]["sizes"]) for n in payload["runs"]):
        assert sizes["steps"] and sizes["seeds"] == 1, name  # what was scaled down is in the JSON
    assert payload["runs"]["gpt"]["corpus"]["characters"] == 5000 and len(payload["runs"]["gpt"]["corpus"]["sha256"]) == 64


@pytest.mark.slow  # reads the --quick figure run (four models trained; quick_run): pytest -m slow
def test_every_model_tracks_the_papers_laws_and_controls(quick_run):
    _, payload, _ = quick_run
    fams = {n: set(r["families"]) for n, r in payload["runs"].items()}
    assert fams["resnet"] == {"conv–ReLU–conv rescaling (Marcotte Thm 3.6)"}
    assert {"BN sphere ‖conv1_j‖² (Kunin et al.)", "BN (γ, β)–conv2 rescaling (derived)"} <= fams["resnet_bn"]
    assert {"Q–K per head (Marcotte Cor. 3.10)", "V–O per head (Marcotte Cor. 3.10)", "SwiGLU up–down (Tran Thm 4.2)", "softmax head translation (Marcotte Prop. 3.11)"} <= fams["vit"]
    assert {"RoPE Q–K pairs (Tran Thm 4.4)", "V–O per head (Marcotte Cor. 3.10)", "SwiGLU up–down (Tran Thm 4.2)"} <= fams["gpt"]
    controls = set(payload["summary"]["gpt"]["control_final_by_lr"])
    assert {"SiLU gate ReLU-style balance (Thm 4.1)", "mixed RoPE pair (Thm 4.4)",
            "balance across the skip (Thm 4.7)"} == controls


@pytest.mark.slow  # reads the --quick figure run (four models trained; quick_run): pytest -m slow
def test_the_measurements_are_second_and_first_order_as_the_theory_says(quick_run):
    """Independent of the claim rows: plain SGD leaves a translation law unchanged to round-off, changes a quadratic
    law (never exactly zero), and moves the controls by far more than the laws at the smallest lr."""
    _, payload, _ = quick_run
    for name in ("vit", "gpt"):
        s = payload["summary"][name]
        assert s["translation_max_under_sgd"] < 1e-12
        for fam, values in s["law_final_by_lr"].items():
            if "translation" not in fam:
                assert all(v > 0 for v in values) and values[-1] > values[0], fam  # grows with the lr
        smallest_law = max(v[0] for f, v in s["law_final_by_lr"].items() if "translation" not in f)
        assert max(v[0] for v in s["control_final_by_lr"].values()) > smallest_law
        for fam, d in s["decay"].items():  # weight decay moves every law; the prediction beats no decay at all
            assert d["change"] > 0 and d["prediction_error"] < d["change"], fam
    exponent = payload["summary"]["resnet"]["law_exponent"]["conv–ReLU–conv rescaling (Marcotte Thm 3.6)"]
    assert math.isfinite(exponent)
    for name, s in payload["summary"].items():  # ΔQ = η²B(g, g) per SGD step, on every batch (float64 round-off)
        for fam, err in s["identity_error"].items():
            if "sphere" not in fam:
                assert err < 1e-12, (name, fam, err)
    check = payload["summary"]["resnet_bn"]["eps_check"]  # BatchNorm's sphere law without its ε: exact
    assert check["eps"] == 1e-300 and check["bn_identity_error"] < 1e-10


def test_full_and_quick_together_are_refused(tmp_path):
    script = load_script("conservation_modern")
    with pytest.raises(SystemExit):
        script.main(["--quick", "--full", "--out", str(tmp_path)])


@pytest.mark.slow  # reads the --quick figure run (four models trained; quick_run): pytest -m slow
def test_its_jobs_are_the_models_and_seeds_and_main_reads_them_back(quick_run, tmp_path):
    """reproduce.py's workers run one job per model and seed (and BatchNorm's ε check); main then computes nothing
    again: the same runs, from the cached jobs."""
    script, payload, tmp = quick_run
    argv = ["--quick", "--out", str(tmp), "--data", str(tmp / "cifar"), "--threads", "1"]
    assert script.parts(argv) == ("resnet-seed0", "resnet_bn-seed0", "vit-seed0", "gpt-seed0", "resnet_bn-eps")
    assert len(script.parts(["--models", "gpt", "vit"])) == 2 * script.Settings().seeds
    cached = sorted((tmp / ".cache").iterdir())
    assert len(cached) == len(script.parts(argv))
    script.run_part("gpt-seed0", argv)  # a worker's job, already done: read back, nothing new written
    again = script.main(argv)
    assert sorted((tmp / ".cache").iterdir()) == cached
    assert again["runs"] == payload["runs"]  # the timings too: each record is the cached one
    with pytest.raises(ValueError, match="part"):
        script.run_part("gpt-seed9", argv)


def test_its_jobs_are_keyed_by_the_datas_content_not_its_path(tmp_path, monkeypatch):
    """The small data set at --data DIR, then the full one put at the same DIR: a new cache key (before: the key held
    the path, and the rerun resumed the small set's numbers); the figure's JSON records the content's hash."""
    import shutil

    from repro import experiment as E

    script = load_script("conservation_modern")
    keys = []
    monkeypatch.setattr(E, "cached", lambda out, name, key, compute, resume=True: keys.append(key) or {})
    cfg = script.Settings(data=str(tmp_path / "cifar"))
    write_tree(tmp_path / "cifar", per_class=(1, 1))
    script._job("resnet-seed0", cfg, str(tmp_path), True)
    shutil.rmtree(tmp_path / "cifar")
    write_tree(tmp_path / "cifar", per_class=(3, 1), seed=1)
    script._job("resnet-seed0", cfg, str(tmp_path), True)
    assert keys[0]["cfg"] == keys[1]["cfg"] and keys[0]["data_sha256"] != keys[1]["data_sha256"]
    script._job("gpt-seed0", cfg, str(tmp_path), True)  # the GPT reads no CIFAR-10
    assert keys[2]["data_sha256"] is None


@pytest.mark.slow  # reads the --quick figure run (four models trained; quick_run): pytest -m slow
def test_the_json_records_the_datas_content_hash(quick_run):
    from repro.data import load_cifar10

    script, payload, tmp = quick_run
    sha = load_cifar10(tmp / "cifar")["sha256"]
    assert all(payload["runs"][m]["data_sha256"] == sha for m in ("resnet", "resnet_bn", "vit"))
    assert "data_sha256" not in payload["runs"]["gpt"]
